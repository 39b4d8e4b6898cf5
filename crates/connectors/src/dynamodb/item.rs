//! Arrow values as DynamoDB attribute values.
//!
//! | Arrow | DynamoDB |
//! |---|---|
//! | integers, floats, decimals | `N` (NaN and infinities are errors) |
//! | strings | `S` |
//! | booleans | `BOOL` |
//! | binary | `B` |
//! | lists | `L` |
//! | structs, maps | `M` (map keys as text) |
//! | timestamps, dates | `S` ISO-8601 text, or `N` epoch milliseconds / seconds by option |
//! | null | `NULL` |
//! | anything else (times, intervals, durations) | `S`, Arrow's text form |

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, SecondsFormat};
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit, i256};
use datafusion::arrow::record_batch::RecordBatch;
use laketide_engine::time::nanos_per_unit;

use super::config::TimeEncoding;

/// An item: attribute name to value.
pub type Item = HashMap<String, AttributeValue>;

/// DynamoDB's largest item, in bytes.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// Why a value cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// The row.
    pub row: usize,
    /// What is wrong.
    pub reason: String,
}

/// Converts a whole column; a value that cannot be stored gives its row and the reason.
pub fn column_values(
    array: &ArrayRef,
    encoding: TimeEncoding,
) -> Result<Vec<AttributeValue>, ValueError> {
    let n = array.len();
    let mut out = Vec::with_capacity(n);
    macro_rules! numbers {
        ($t:ty) => {{
            let a = array.as_primitive::<$t>();
            for i in 0..n {
                out.push(if a.is_null(i) {
                    AttributeValue::Null(true)
                } else {
                    AttributeValue::N(a.value(i).to_string())
                });
            }
        }};
    }
    macro_rules! floats {
        ($t:ty) => {{
            let a = array.as_primitive::<$t>();
            for i in 0..n {
                if a.is_null(i) {
                    out.push(AttributeValue::Null(true));
                    continue;
                }
                let v = a.value(i) as f64;
                if !v.is_finite() {
                    return Err(ValueError {
                        row: i,
                        reason: format!("{v} is not a number DynamoDB can store"),
                    });
                }
                out.push(AttributeValue::N(v.to_string()));
            }
        }};
    }
    use datafusion::arrow::datatypes as t;
    match array.data_type() {
        DataType::Int8 => numbers!(t::Int8Type),
        DataType::Int16 => numbers!(t::Int16Type),
        DataType::Int32 => numbers!(t::Int32Type),
        DataType::Int64 => numbers!(t::Int64Type),
        DataType::UInt8 => numbers!(t::UInt8Type),
        DataType::UInt16 => numbers!(t::UInt16Type),
        DataType::UInt32 => numbers!(t::UInt32Type),
        DataType::UInt64 => numbers!(t::UInt64Type),
        DataType::Float32 => floats!(t::Float32Type),
        DataType::Float64 => floats!(t::Float64Type),
        DataType::Decimal128(_, scale) => {
            let a = array.as_primitive::<t::Decimal128Type>();
            for i in 0..n {
                out.push(if a.is_null(i) {
                    AttributeValue::Null(true)
                } else {
                    AttributeValue::N(decimal_text(a.value(i), *scale))
                });
            }
        }
        DataType::Decimal256(_, scale) => {
            let a = array.as_primitive::<t::Decimal256Type>();
            for i in 0..n {
                out.push(if a.is_null(i) {
                    AttributeValue::Null(true)
                } else {
                    AttributeValue::N(decimal256_text(a.value(i), *scale))
                });
            }
        }
        DataType::Boolean => {
            let a = array.as_boolean();
            for i in 0..n {
                out.push(if a.is_null(i) {
                    AttributeValue::Null(true)
                } else {
                    AttributeValue::Bool(a.value(i))
                });
            }
        }
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => {
            let a = cast(array, &DataType::LargeBinary).map_err(|e| ValueError {
                row: 0,
                reason: e.to_string(),
            })?;
            let a = a.as_binary::<i64>();
            for i in 0..n {
                out.push(if a.is_null(i) {
                    AttributeValue::Null(true)
                } else {
                    AttributeValue::B(Blob::new(a.value(i)))
                });
            }
        }
        DataType::Timestamp(unit, _) => {
            let a = cast(array, &DataType::Int64).map_err(|e| ValueError {
                row: 0,
                reason: e.to_string(),
            })?;
            let a = a.as_primitive::<t::Int64Type>();
            let per_unit = nanos_per_unit(*unit) as i128;
            for i in 0..n {
                out.push(if a.is_null(i) {
                    AttributeValue::Null(true)
                } else {
                    time_value(a.value(i) as i128 * per_unit, encoding)
                });
            }
        }
        DataType::Date32 | DataType::Date64 => {
            let a = cast(array, &DataType::Timestamp(TimeUnit::Millisecond, None))
                .and_then(|a| cast(&a, &DataType::Int64))
                .map_err(|e| ValueError {
                    row: 0,
                    reason: e.to_string(),
                })?;
            let a = a.as_primitive::<t::Int64Type>();
            for i in 0..n {
                out.push(if a.is_null(i) {
                    AttributeValue::Null(true)
                } else {
                    match encoding {
                        TimeEncoding::Iso8601 => AttributeValue::S(
                            DateTime::from_timestamp_millis(a.value(i))
                                .unwrap_or_default()
                                .format("%Y-%m-%d")
                                .to_string(),
                        ),
                        other => time_value(a.value(i) as i128 * 1_000_000, other),
                    }
                });
            }
        }
        DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(_, _) => {
            let a =
                cast(array, &DataType::LargeList(list_field(array))).map_err(|e| ValueError {
                    row: 0,
                    reason: e.to_string(),
                })?;
            let a = a.as_list::<i64>();
            for i in 0..n {
                if a.is_null(i) {
                    out.push(AttributeValue::Null(true));
                    continue;
                }
                let values = column_values(&a.value(i), encoding).map_err(|e| ValueError {
                    row: i,
                    reason: format!("element {}: {}", e.row, e.reason),
                })?;
                out.push(AttributeValue::L(values));
            }
        }
        DataType::Struct(fields) => {
            let a = array.as_struct();
            let children: Vec<Vec<AttributeValue>> = a
                .columns()
                .iter()
                .map(|c| column_values(c, encoding))
                .collect::<Result<_, _>>()?;
            for i in 0..n {
                if a.is_null(i) {
                    out.push(AttributeValue::Null(true));
                    continue;
                }
                let map = fields
                    .iter()
                    .zip(&children)
                    .map(|(f, values)| (f.name().clone(), values[i].clone()))
                    .collect();
                out.push(AttributeValue::M(map));
            }
        }
        DataType::Map(_, _) => {
            let a = array.as_map();
            let keys = cast(a.keys(), &DataType::Utf8).map_err(|e| ValueError {
                row: 0,
                reason: format!("map keys must be text: {e}"),
            })?;
            let keys = keys.as_string::<i32>();
            let values = column_values(a.values(), encoding)?;
            let offsets = a.value_offsets();
            for i in 0..n {
                if a.is_null(i) {
                    out.push(AttributeValue::Null(true));
                    continue;
                }
                let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
                let map = (start..end)
                    .map(|j| (keys.value(j).to_string(), values[j].clone()))
                    .collect();
                out.push(AttributeValue::M(map));
            }
        }
        _ => {
            let text = cast(array, &DataType::Utf8).map_err(|e| ValueError {
                row: 0,
                reason: format!("{} has no DynamoDB form: {e}", array.data_type()),
            })?;
            let text = text.as_string::<i32>();
            for i in 0..n {
                out.push(if text.is_null(i) {
                    AttributeValue::Null(true)
                } else {
                    AttributeValue::S(text.value(i).to_string())
                });
            }
        }
    }
    Ok(out)
}

fn list_field(array: &ArrayRef) -> Arc<datafusion::arrow::datatypes::Field> {
    match array.data_type() {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => f.clone(),
        _ => unreachable!("called for lists only"),
    }
}

fn time_value(nanos: i128, encoding: TimeEncoding) -> AttributeValue {
    match encoding {
        TimeEncoding::EpochMillis => AttributeValue::N((nanos.div_euclid(1_000_000)).to_string()),
        TimeEncoding::EpochSeconds => {
            AttributeValue::N((nanos.div_euclid(1_000_000_000)).to_string())
        }
        TimeEncoding::Iso8601 => {
            let t = DateTime::from_timestamp(
                nanos.div_euclid(1_000_000_000) as i64,
                nanos.rem_euclid(1_000_000_000) as u32,
            )
            .unwrap_or_default();
            AttributeValue::S(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        }
    }
}

fn decimal_text(value: i128, scale: i8) -> String {
    decimal_digits(value.unsigned_abs().to_string(), value < 0, scale)
}

fn decimal256_text(value: i256, scale: i8) -> String {
    let text = value.to_string();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d.to_string()),
        None => (false, text),
    };
    decimal_digits(digits, negative, scale)
}

fn decimal_digits(digits: String, negative: bool, scale: i8) -> String {
    let sign = if negative { "-" } else { "" };
    if scale <= 0 {
        return format!("{sign}{digits}{}", "0".repeat((-scale) as usize));
    }
    let scale = scale as usize;
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{sign}{int}.{frac}")
}

/// The size DynamoDB counts for an attribute value, in bytes (close to the service's rule:
/// strings and binary by length, numbers by significant digits, containers with overhead).
pub fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.trim_start_matches('-').len().div_ceil(2) + 1,
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::L(items) => 3 + items.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(k, v)| 1 + k.len() + value_size(v))
                .sum::<usize>()
        }
        _ => 1,
    }
}

/// The size of an item.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// Turns a batch into one item per row, with the columns' names as attribute names. Returns,
/// for rows that cannot be stored, the row and the reason.
pub fn batch_items(
    batch: &RecordBatch,
    encoding: TimeEncoding,
) -> (Vec<Option<Item>>, Vec<ValueError>) {
    let rows = batch.num_rows();
    let mut items: Vec<Option<Item>> = (0..rows)
        .map(|_| Some(HashMap::with_capacity(batch.num_columns())))
        .collect();
    let mut errors = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        match column_values(column, encoding) {
            Ok(values) => {
                for (item, value) in items.iter_mut().zip(values) {
                    if let Some(item) = item {
                        item.insert(field.name().clone(), value);
                    }
                }
            }
            Err(_) => {
                // Some row cannot be stored: convert this column row by row to find them all.
                for (row, item) in items.iter_mut().enumerate() {
                    match column_values(&column.slice(row, 1), encoding) {
                        Ok(mut value) => {
                            if let (Some(item), Some(value)) = (item.as_mut(), value.pop()) {
                                item.insert(field.name().clone(), value);
                            }
                        }
                        Err(e) => {
                            *item = None;
                            errors.push(ValueError {
                                row,
                                reason: format!("column `{}`: {}", field.name(), e.reason),
                            });
                        }
                    }
                }
            }
        }
    }
    (items, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array,
        Int64Array, ListArray, MapBuilder, StringArray, StringBuilder, StructArray,
        TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::{Field, Int32Type, Schema};

    fn one(array: ArrayRef, encoding: TimeEncoding) -> Vec<AttributeValue> {
        column_values(&array, encoding).unwrap()
    }

    #[test]
    fn scalars() {
        use AttributeValue as V;
        assert_eq!(
            one(
                Arc::new(Int64Array::from(vec![Some(-7), None])),
                TimeEncoding::Iso8601
            ),
            vec![V::N("-7".into()), V::Null(true)]
        );
        assert_eq!(
            one(
                Arc::new(Float64Array::from(vec![2.5])),
                TimeEncoding::Iso8601
            ),
            vec![V::N("2.5".into())]
        );
        let dec = Decimal128Array::from(vec![-1234, 5])
            .with_precision_and_scale(10, 3)
            .unwrap();
        assert_eq!(
            one(Arc::new(dec), TimeEncoding::Iso8601),
            vec![V::N("-1.234".into()), V::N("0.005".into())]
        );
        assert_eq!(
            one(
                Arc::new(BooleanArray::from(vec![true])),
                TimeEncoding::Iso8601
            ),
            vec![V::Bool(true)]
        );
        assert_eq!(
            one(
                Arc::new(BinaryArray::from(vec![&b"ab"[..]])),
                TimeEncoding::Iso8601
            ),
            vec![V::B(Blob::new(b"ab".to_vec()))]
        );
        let ts: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![1_714_564_800_000_000]));
        assert_eq!(
            one(ts.clone(), TimeEncoding::Iso8601),
            vec![V::S("2024-05-01T12:00:00Z".into())]
        );
        assert_eq!(
            one(ts.clone(), TimeEncoding::EpochMillis),
            vec![V::N("1714564800000".into())]
        );
        assert_eq!(
            one(ts, TimeEncoding::EpochSeconds),
            vec![V::N("1714564800".into())]
        );
        let date: ArrayRef = Arc::new(Date32Array::from(vec![19_844]));
        assert_eq!(
            one(date, TimeEncoding::Iso8601),
            vec![V::S("2024-05-01".into())]
        );
        let e = column_values(
            &(Arc::new(Float64Array::from(vec![1.0, f64::NAN])) as ArrayRef),
            TimeEncoding::Iso8601,
        )
        .unwrap_err();
        assert_eq!(e.row, 1);
    }

    #[test]
    fn lists_structs_and_maps() {
        use AttributeValue as V;
        let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
        ]);
        assert_eq!(
            one(Arc::new(list), TimeEncoding::Iso8601),
            vec![V::L(vec![V::N("1".into()), V::Null(true)]), V::Null(true)]
        );
        let s = StructArray::from(vec![
            (
                Arc::new(Field::new("a", DataType::Utf8, true)),
                Arc::new(StringArray::from(vec!["x"])) as ArrayRef,
            ),
            (
                Arc::new(Field::new("b", DataType::Int32, true)),
                Arc::new(Int32Array::from(vec![3])) as ArrayRef,
            ),
        ]);
        assert_eq!(
            one(Arc::new(s), TimeEncoding::Iso8601),
            vec![V::M(HashMap::from([
                ("a".to_string(), V::S("x".into())),
                ("b".to_string(), V::N("3".into())),
            ]))]
        );
        let mut m = MapBuilder::new(
            None,
            StringBuilder::new(),
            datafusion::arrow::array::Int64Builder::new(),
        );
        m.keys().append_value("k");
        m.values().append_value(9);
        m.append(true).unwrap();
        assert_eq!(
            one(Arc::new(m.finish()), TimeEncoding::Iso8601),
            vec![V::M(HashMap::from([("k".to_string(), V::N("9".into()))]))]
        );
    }

    #[test]
    fn rows_with_unstorable_values_are_reported_and_left_out() {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, true),
                Field::new("x", DataType::Float64, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3])),
                Arc::new(Float64Array::from(vec![1.0, f64::INFINITY, 3.0])),
            ],
        )
        .unwrap();
        let (items, errors) = batch_items(&batch, TimeEncoding::Iso8601);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].row, 1);
        assert!(errors[0].reason.contains("column `x`"), "{:?}", errors[0]);
        assert!(items[1].is_none());
        assert_eq!(
            items[2].as_ref().unwrap()["x"],
            AttributeValue::N("3".into())
        );
        assert!(item_size(items[0].as_ref().unwrap()) > 0);
    }
}
