use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::changelog::StreamMode;
use crate::error::Result;
use crate::operator::{Operator, Output};

/// Merges its inputs (UNION ALL); the runner combines their watermarks as a minimum. Its inputs
/// are all append-only or all updating (then the key is kept only when every input has it).
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

    fn output_mode(&self, inputs: &[StreamMode]) -> std::result::Result<StreamMode, String> {
        let updating = inputs.iter().filter(|m| m.is_updating()).count();
        if updating == 0 {
            return Ok(StreamMode::AppendOnly);
        }
        if updating < inputs.len() {
            return Err("UNION ALL of an updating result and an append-only one is not supported: make both updating (GROUP BY) or both final (windows)".into());
        }
        let first = inputs[0].key();
        let key = if inputs.iter().all(|m| m.key() == first) {
            first.to_vec()
        } else {
            Vec::new()
        };
        Ok(StreamMode::Updating { key })
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
