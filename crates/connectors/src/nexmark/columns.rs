//! Nexmark events as Arrow columns: every field of a kind, then the declared columns.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMillisecondArray};
use datafusion::arrow::compute::{can_cast_types, cast};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use nexmark::event::Event;

use super::config::NexmarkTable;
use crate::error::{ConnectorError, Result};

fn int(name: &str) -> Field {
    Field::new(name, DataType::Int64, false)
}

fn text(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}

fn time(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Millisecond, None),
        false,
    )
}

/// Every field of a kind's events, in Nexmark's order.
pub fn fields(table: NexmarkTable) -> Vec<Field> {
    match table {
        NexmarkTable::Person => vec![
            int("id"),
            text("name"),
            text("email_address"),
            text("credit_card"),
            text("city"),
            text("state"),
            time("date_time"),
            text("extra"),
        ],
        NexmarkTable::Auction => vec![
            int("id"),
            text("item_name"),
            text("description"),
            int("initial_bid"),
            int("reserve"),
            time("date_time"),
            time("expires"),
            int("seller"),
            int("category"),
            text("extra"),
        ],
        NexmarkTable::Bid => vec![
            int("auction"),
            int("bidder"),
            int("price"),
            text("channel"),
            text("url"),
            time("date_time"),
            text("extra"),
        ],
    }
}

/// Where each declared column comes from: the index of its field. Fails on a column that is
/// not a field of the kind, or a type it cannot be cast to.
pub fn projection(table: NexmarkTable, declared: &Schema) -> Result<Vec<usize>> {
    let all = fields(table);
    declared
        .fields()
        .iter()
        .map(|f| {
            let Some(i) = all
                .iter()
                .position(|a| a.name().eq_ignore_ascii_case(f.name()))
            else {
                return Err(ConnectorError::InvalidOption(format!(
                    "column `{}` is not a field of Nexmark's {} events; they are: {}",
                    f.name(),
                    table.name(),
                    all.iter()
                        .map(|a| a.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            if !can_cast_types(all[i].data_type(), f.data_type()) {
                return Err(ConnectorError::InvalidOption(format!(
                    "column `{}` is {} in Nexmark's {} events and cannot be read as {}",
                    f.name(),
                    all[i].data_type(),
                    table.name(),
                    f.data_type()
                )));
            }
            Ok(i)
        })
        .collect()
}

fn ints(values: impl Iterator<Item = usize>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(values.map(|v| v as i64)))
}

fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn times(values: impl Iterator<Item = u64>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from_iter_values(
        values.map(|v| v as i64),
    ))
}

/// Every field of `events` (all of kind `table`) as columns.
fn all_columns(table: NexmarkTable, events: &[Event]) -> Vec<ArrayRef> {
    macro_rules! of {
        ($kind:ident) => {
            events.iter().filter_map(|e| match e {
                Event::$kind(x) => Some(x),
                _ => None,
            })
        };
    }
    match table {
        NexmarkTable::Bid => vec![
            ints(of!(Bid).map(|b| b.auction)),
            ints(of!(Bid).map(|b| b.bidder)),
            ints(of!(Bid).map(|b| b.price)),
            strings(of!(Bid).map(|b| b.channel.as_str())),
            strings(of!(Bid).map(|b| b.url.as_str())),
            times(of!(Bid).map(|b| b.date_time)),
            strings(of!(Bid).map(|b| b.extra.as_str())),
        ],
        NexmarkTable::Auction => vec![
            ints(of!(Auction).map(|a| a.id)),
            strings(of!(Auction).map(|a| a.item_name.as_str())),
            strings(of!(Auction).map(|a| a.description.as_str())),
            ints(of!(Auction).map(|a| a.initial_bid)),
            ints(of!(Auction).map(|a| a.reserve)),
            times(of!(Auction).map(|a| a.date_time)),
            times(of!(Auction).map(|a| a.expires)),
            ints(of!(Auction).map(|a| a.seller)),
            ints(of!(Auction).map(|a| a.category)),
            strings(of!(Auction).map(|a| a.extra.as_str())),
        ],
        NexmarkTable::Person => vec![
            ints(of!(Person).map(|p| p.id)),
            strings(of!(Person).map(|p| p.name.as_str())),
            strings(of!(Person).map(|p| p.email_address.as_str())),
            strings(of!(Person).map(|p| p.credit_card.as_str())),
            strings(of!(Person).map(|p| p.city.as_str())),
            strings(of!(Person).map(|p| p.state.as_str())),
            times(of!(Person).map(|p| p.date_time)),
            strings(of!(Person).map(|p| p.extra.as_str())),
        ],
    }
}

/// `events` as a batch of `schema`, whose columns are the fields at `projection`.
pub fn batch(
    table: NexmarkTable,
    events: &[Event],
    schema: &SchemaRef,
    projection: &[usize],
) -> laketide_engine::Result<RecordBatch> {
    let all = all_columns(table, events);
    let columns = projection
        .iter()
        .zip(schema.fields())
        .map(|(i, f)| {
            let c = &all[*i];
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else {
                cast(c, f.data_type())
            }
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}
