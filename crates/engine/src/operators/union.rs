use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::error::Result;
use crate::operator::{Operator, Output};

/// Merges its inputs (UNION ALL); the runner combines their watermarks as a minimum.
#[derive(Debug)]
pub struct UnionOperator {
    schema: SchemaRef,
}

impl UnionOperator {
    /// A union whose inputs all produce columns of `schema`'s types, in order.
    pub fn new(schema: SchemaRef) -> Self {
        UnionOperator { schema }
    }
}

impl Operator for UnionOperator {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn process_batch(&mut self, _input: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        out.batch(RecordBatch::try_new_with_options(
            self.schema.clone(),
            batch.columns().to_vec(),
            &options,
        )?);
        Ok(())
    }
}
