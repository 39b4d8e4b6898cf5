//! Tables read by key while a stream is processed: the other side of a lookup join
//! (`JOIN t FOR SYSTEM_TIME AS OF s.proc_time AS d ON s.k = d.k`).

use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::HashMap;

use crate::error::Result;
use crate::metrics::ServiceStatus;

/// A table a lookup join reads by key, at processing time: a DynamoDB table behind a cache,
/// or a file or Delta table held in memory.
///
/// Contract:
/// - The table is built for fixed key columns ([`LookupTable::key_columns`], positions in
///   [`LookupTable::schema`]); every lookup gives one array per key column, in that order, of
///   that column's type.
/// - `lookup` returns the current rows whose key columns equal one of the given keys, in any
///   order, with every column of `schema` (several rows per key where the table has them, none
///   for a key it lacks). The keys are distinct and have no NULL; a call may have any number
///   of them (the implementation splits them into requests as its service needs).
/// - Calls come from one task, one at a time; an implementation may still be shared.
/// - Errors: transient service failures (throttling, timeouts) are retried inside `lookup`
///   for as long as the table's retry policy allows; an error returned stops the pipeline
///   and names the table and what failed.
/// - Cancellation: the future is dropped when the pipeline stops; a dropped lookup leaves the
///   table usable and any cache consistent (entries are only added for answers received).
#[async_trait]
pub trait LookupTable: Send + Sync + Debug + 'static {
    /// The columns of the rows `lookup` returns.
    fn schema(&self) -> SchemaRef;

    /// The key columns lookups are by (positions in `schema`).
    fn key_columns(&self) -> &[usize];

    /// What `explain` shows of the table (connector, name, cache).
    fn describe(&self) -> String;

    /// The live gauges of the service behind the table (throttles, retries, bytes read), if
    /// it calls one.
    fn status(&self) -> Option<Arc<ServiceStatus>> {
        None
    }

    /// The rows whose key equals one of `keys`.
    async fn lookup(&self, keys: Vec<ArrayRef>) -> Result<RecordBatch>;
}

/// A table held in memory, indexed by its key columns: a file or Delta table loaded whole
/// (and replaced when it changes), or a test's table.
#[derive(Debug)]
pub struct MemoryLookupTable {
    name: String,
    schema: SchemaRef,
    key_columns: Vec<usize>,
    converter: RowConverter,
    current: RwLock<Arc<Indexed>>,
}

/// The rows of a [`MemoryLookupTable`] and, per key, the positions of its rows.
#[derive(Debug, Default)]
struct Indexed {
    rows: Option<RecordBatch>,
    by_key: HashMap<Box<[u8]>, Vec<u32>>,
}

impl MemoryLookupTable {
    /// An empty table `name` of `schema`, looked up by `key_columns`.
    pub fn new(name: &str, schema: SchemaRef, key_columns: Vec<usize>) -> Result<Self> {
        let fields = (key_columns.iter())
            .map(|c| SortField::new(schema.field(*c).data_type().clone()))
            .collect();
        Ok(MemoryLookupTable {
            name: name.to_string(),
            converter: RowConverter::new(fields)?,
            schema,
            key_columns,
            current: RwLock::new(Arc::new(Indexed::default())),
        })
    }

    /// Replaces every row by `rows` (of the table's schema); rows with a NULL key are kept
    /// out (they match nothing). Lookups see either the old rows or the new ones.
    pub fn replace(&self, rows: RecordBatch) -> Result<()> {
        let keys: Vec<ArrayRef> = (self.key_columns.iter())
            .map(|c| rows.column(*c).clone())
            .collect();
        let converted = self.converter.convert_columns(&keys)?;
        let mut by_key: HashMap<Box<[u8]>, Vec<u32>> = HashMap::default();
        for i in 0..rows.num_rows() {
            if keys.iter().all(|k| k.is_valid(i)) {
                let key = converted.row(i).data();
                match by_key.get_mut(key) {
                    Some(list) => list.push(i as u32),
                    None => {
                        by_key.insert(Box::from(key), vec![i as u32]);
                    }
                }
            }
        }
        let indexed = Arc::new(Indexed {
            rows: Some(rows),
            by_key,
        });
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = indexed;
        Ok(())
    }

    /// The key columns (positions in the schema).
    pub fn key_columns(&self) -> &[usize] {
        &self.key_columns
    }

    /// How many rows the table holds.
    pub fn len(&self) -> usize {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current.rows.as_ref().map_or(0, |r| r.num_rows())
    }

    /// Whether the table holds no row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows of `keys`, synchronously.
    pub fn get(&self, keys: &[ArrayRef]) -> Result<RecordBatch> {
        let current = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(rows) = &current.rows else {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        };
        let wanted = self.converter.convert_columns(keys)?;
        let n = keys.first().map_or(0, |k| k.len());
        let indices: Vec<u32> = (0..n)
            .filter_map(|i| current.by_key.get(wanted.row(i).data()))
            .flatten()
            .copied()
            .collect();
        let indices = UInt32Array::from(indices);
        let columns = (rows.columns().iter())
            .map(|c| take(c.as_ref(), &indices, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(indices.len()));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?)
    }
}

#[async_trait]
impl LookupTable for MemoryLookupTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn key_columns(&self) -> &[usize] {
        MemoryLookupTable::key_columns(self)
    }

    fn describe(&self) -> String {
        format!("{} ({} rows in memory)", self.name, self.len())
    }

    async fn lookup(&self, keys: Vec<ArrayRef>) -> Result<RecordBatch> {
        self.get(&keys)
    }
}
