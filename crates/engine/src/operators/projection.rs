use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;

use crate::changelog::{CHANGE_COLUMN, StreamMode};
use crate::error::{EngineError, Result};
use crate::operator::{Operator, Output};

/// Evaluates one expression per output column (SELECT list), batch at a time. Over an updating
/// input, the last expression must pass the change column through; the output's key is the
/// input's key where every key column is passed through unchanged, else unknown.
#[derive(Debug)]
pub struct ProjectionOperator {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

impl ProjectionOperator {
    /// `exprs[i]` computes column `i` of `schema`.
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Self {
        ProjectionOperator { exprs, schema }
    }
}

impl Operator for ProjectionOperator {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn output_mode(&self, inputs: &[StreamMode]) -> std::result::Result<StreamMode, String> {
        let Some(StreamMode::Updating { key }) = inputs.first() else {
            return Ok(StreamMode::AppendOnly);
        };
        let column_of = |e: &Arc<dyn PhysicalExpr>| e.downcast_ref::<Column>().map(|c| c.index());
        let passes_change = self
            .exprs
            .last()
            .and_then(|e| e.downcast_ref::<Column>())
            .is_some_and(|c| c.name() == CHANGE_COLUMN);
        if !passes_change {
            return Err(
                "a projection of an updating result must pass its change column last".into(),
            );
        }
        let columns: Vec<Option<usize>> = self.exprs.iter().map(column_of).collect();
        let mapped: Option<Vec<usize>> = key
            .iter()
            .map(|k| columns.iter().position(|c| *c == Some(*k)))
            .collect();
        Ok(StreamMode::Updating {
            key: mapped.unwrap_or_default(),
        })
    }

    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let rows = batch.num_rows();
        let columns = self
            .exprs
            .iter()
            .map(|e| e.evaluate(&batch).and_then(|v| v.into_array(rows)))
            .collect::<datafusion::error::Result<Vec<_>>>()
            .map_err(|e| EngineError::compute("evaluating the SELECT list", e))?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        out.batch(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?);
        Ok(())
    }
}
