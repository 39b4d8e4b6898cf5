//! Rows of the rank operators in Arrow's row format: partition keys, sort keys (whose byte
//! order is the ORDER BY) and whole input rows, and the batches built back from them.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int8Array, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, RowParser, Rows, SortField};
use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};

use super::window_aggregate::{cast_if_needed, evaluate_all};
use crate::changelog::{ChangeKind, schema_with_change};
use crate::error::Result;

/// The name of the row-number column when the plan gives none.
const RANK_FIELD: &str = "rn";

/// Converts a rank's input rows to and from the row format.
pub(crate) struct RankRows {
    input: SchemaRef,
    partition: Vec<Arc<dyn PhysicalExpr>>,
    order: Vec<PhysicalSortExpr>,
    keys: RowConverter,
    sorts: RowConverter,
    rows: RowConverter,
    parser: RowParser,
    output: SchemaRef,
    updating: bool,
}

/// One batch's rows in the row format.
pub(crate) struct EncodedRows {
    pub(crate) keys: Rows,
    pub(crate) sorts: Rows,
    pub(crate) rows: Rows,
}

impl RankRows {
    /// For rows of `input` ranked by `order` within `partition`; the output is the input's
    /// columns, the row number (`rank_field`, as `UInt64`) and, when `updating`, the change
    /// column.
    pub(crate) fn new(
        input: &Schema,
        partition: &[Arc<dyn PhysicalExpr>],
        order: &[PhysicalSortExpr],
        rank_field: Option<&Field>,
        updating: bool,
    ) -> Result<Self> {
        let sorts = order
            .iter()
            .map(|o| {
                Ok(SortField::new_with_options(
                    o.expr.data_type(input)?,
                    o.options,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let keys = partition
            .iter()
            .map(|e| Ok(SortField::new(e.data_type(input)?)))
            .collect::<Result<Vec<_>>>()?;
        let rows = RowConverter::new(
            input
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        let mut fields: Vec<Arc<Field>> = input.fields().iter().cloned().collect();
        let rank = rank_field
            .cloned()
            .unwrap_or_else(|| Field::new(RANK_FIELD, DataType::UInt64, false));
        fields.push(Arc::new(rank.with_data_type(DataType::UInt64)));
        let with_rank = Schema::new(fields);
        Ok(RankRows {
            input: Arc::new(input.clone()),
            partition: partition.to_vec(),
            order: order.to_vec(),
            keys: RowConverter::new(keys)?,
            sorts: RowConverter::new(sorts)?,
            parser: rows.parser(),
            rows,
            output: if updating {
                schema_with_change(&with_rank)
            } else {
                Arc::new(with_rank)
            },
            updating,
        })
    }

    /// The schema of the rows ranked.
    pub(crate) fn input(&self) -> SchemaRef {
        self.input.clone()
    }

    /// The schema of the batches [`Self::batch`] builds.
    pub(crate) fn output(&self) -> SchemaRef {
        self.output.clone()
    }

    /// `batch`'s partition keys, sort keys and rows.
    pub(crate) fn encode(&self, batch: &RecordBatch) -> Result<EncodedRows> {
        let n = batch.num_rows();
        let order: Vec<ArrayRef> = self
            .order
            .iter()
            .map(|o| o.expr.evaluate(batch).and_then(|v| v.into_array(n)))
            .collect::<datafusion::error::Result<_>>()?;
        Ok(EncodedRows {
            keys: self
                .keys
                .convert_columns(&evaluate_all(&self.partition, batch)?)?,
            sorts: self.sorts.convert_columns(&order)?,
            rows: self.rows.convert_columns(batch.columns())?,
        })
    }

    /// The input columns of encoded `rows`.
    pub(crate) fn decode(&self, rows: &[&[u8]]) -> Result<Vec<ArrayRef>> {
        let parsed: Vec<_> = rows.iter().map(|r| self.parser.parse(r)).collect();
        Ok(self.rows.convert_rows(parsed)?)
    }

    /// A batch of encoded `rows` with their row numbers and (updating form) change kinds.
    pub(crate) fn batch(&self, rows: &[(&[u8], u64, ChangeKind)]) -> Result<RecordBatch> {
        let encoded: Vec<&[u8]> = rows.iter().map(|(r, _, _)| *r).collect();
        let mut columns = self.decode(&encoded)?;
        columns.push(Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|(_, r, _)| *r),
        )));
        if self.updating {
            columns.push(Arc::new(Int8Array::from_iter_values(
                rows.iter().map(|(_, _, k)| k.code()),
            )));
        }
        let columns = columns
            .into_iter()
            .zip(self.output.fields())
            .map(|(c, f)| cast_if_needed(c, f.data_type()))
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.output.clone(), columns)?)
    }
}
