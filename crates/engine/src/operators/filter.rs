use std::sync::Arc;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_expr::PhysicalExpr;

use crate::changelog::StreamMode;
use crate::error::{EngineError, Result};
use crate::operator::{Operator, Output};

/// Keeps the rows for which a predicate is true (WHERE, HAVING); NULL counts as false. Over an
/// updating input each change is kept or dropped by its row's values, so a key whose new
/// value fails the predicate is seen downstream as retracted (its `-U` passes, its `+U` not).
#[derive(Debug)]
pub struct FilterOperator {
    predicate: Arc<dyn PhysicalExpr>,
    schema: SchemaRef,
}

impl FilterOperator {
    /// A filter over batches of `schema`.
    pub fn new(predicate: Arc<dyn PhysicalExpr>, schema: SchemaRef) -> Self {
        FilterOperator { predicate, schema }
    }
}

impl Operator for FilterOperator {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn output_mode(&self, inputs: &[StreamMode]) -> std::result::Result<StreamMode, String> {
        Ok(inputs.first().cloned().unwrap_or_default())
    }

    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let mask = self
            .predicate
            .evaluate(&batch)
            .and_then(|v| v.into_array(batch.num_rows()))
            .map_err(|e| EngineError::compute("evaluating WHERE", e))?;
        let mask = mask.as_boolean_opt().ok_or_else(|| {
            EngineError::Internal(format!("filter predicate returned {}", mask.data_type()))
        })?;
        out.batch(filter_record_batch(&batch, mask)?);
        Ok(())
    }
}
