//! The `blackhole` connector: a sink that discards rows (for benchmarks, as in Flink and
//! RisingWave), keeping only their count and a fingerprint of the result they make.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};

use laketide_engine::{
    EngineError, Result, Sink, SinkSummary, StreamMode, change_kinds, has_change_column, kind_at,
};

use crate::error::Result as ConnectorResult;
use crate::options::Options;

/// The option keys of the blackhole sink (none).
pub const BLACKHOLE_SINK_OPTIONS: &[&str] = &[];

/// An order-independent summary of a table: its row count and the wrapping sum of its rows'
/// hashes. Adding and retracting rows keeps it equal to the fingerprint of the current rows,
/// so an updating result's fingerprint is that of the table its changelog leaves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fingerprint {
    /// Rows in the table.
    pub rows: i64,
    /// Sum of the rows' hashes.
    pub hash: u64,
}

impl Fingerprint {
    /// The fingerprint of `batch` (an append-only batch, or an updating one whose change
    /// column adds and retracts rows) added to this one. Rows are hashed in Arrow's row
    /// format, so two tables agree only with the same column types.
    pub fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let updating = has_change_column(batch.schema_ref());
        let data = if updating {
            batch.num_columns() - 1
        } else {
            batch.num_columns()
        };
        let columns = &batch.columns()[..data];
        let converter = RowConverter::new(
            columns
                .iter()
                .map(|c| SortField::new(c.data_type().clone()))
                .collect(),
        )?;
        let rows = converter.convert_columns(columns)?;
        let kinds = updating.then(|| change_kinds(batch)).transpose()?;
        for (i, row) in rows.iter().enumerate() {
            let mut hasher = std::hash::DefaultHasher::new();
            row.data().hash(&mut hasher);
            let h = hasher.finish();
            let retract = match kinds {
                Some(k) => kind_at(k, i)?.is_retraction(),
                None => false,
            };
            if retract {
                self.rows -= 1;
                self.hash = self.hash.wrapping_sub(h);
            } else {
                self.rows += 1;
                self.hash = self.hash.wrapping_add(h);
            }
        }
        Ok(())
    }
}

/// Discards every row it receives; accepts append-only and updating results.
#[derive(Debug, Default)]
pub struct BlackholeSink {
    fingerprint: Arc<Mutex<Fingerprint>>,
    summary: SinkSummary,
}

impl BlackholeSink {
    /// Validates the (empty) options.
    pub fn from_options(options: Options) -> ConnectorResult<Self> {
        options.finish("blackhole", BLACKHOLE_SINK_OPTIONS)?;
        Ok(Self::default())
    }

    /// A sink that also keeps the fingerprint of what it received, readable through the
    /// returned handle (for benchmarks that check their result).
    pub fn fingerprinting() -> (Self, Arc<Mutex<Fingerprint>>) {
        let sink = Self::default();
        let handle = sink.fingerprint.clone();
        (sink, handle)
    }
}

#[async_trait]
impl Sink for BlackholeSink {
    fn accepts(&self, _schema: &Schema, _mode: &StreamMode) -> std::result::Result<(), String> {
        Ok(())
    }

    async fn open(&mut self, _schema: SchemaRef) -> Result<()> {
        Ok(())
    }

    async fn write_batch(&mut self, batch: RecordBatch) -> Result<()> {
        self.summary.rows_written += batch.num_rows() as u64;
        if Arc::strong_count(&self.fingerprint) > 1 {
            self.fingerprint
                .lock()
                .map_err(|_| EngineError::Internal("blackhole lock poisoned".into()))?
                .add(&batch)?;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<SinkSummary> {
        Ok(self.summary.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field};
    use laketide_engine::{ChangeKind, change_array, schema_with_change};

    #[test]
    fn a_changelog_fingerprints_as_the_table_it_leaves() {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let plain = |v: Vec<i64>| {
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(v))]).unwrap()
        };
        let changes = RecordBatch::try_new(
            schema_with_change(&schema),
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 1, 3, 2])),
                Arc::new(change_array([
                    ChangeKind::Insert,
                    ChangeKind::Insert,
                    ChangeKind::UpdateBefore,
                    ChangeKind::UpdateAfter,
                    ChangeKind::Delete,
                ])),
            ],
        )
        .unwrap();
        let mut streamed = Fingerprint::default();
        streamed.add(&changes).unwrap();
        let mut table = Fingerprint::default();
        table.add(&plain(vec![3])).unwrap();
        assert_eq!(streamed, table);
        let mut other = Fingerprint::default();
        other.add(&plain(vec![4])).unwrap();
        assert_ne!(streamed, other);
    }
}
