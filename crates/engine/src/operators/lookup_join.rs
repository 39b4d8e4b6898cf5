//! The lookup join: each row of a stream joined, when it arrives, with the rows of a table
//! that have its key at that moment (`JOIN t FOR SYSTEM_TIME AS OF s.proc_time AS d ON …`).
//! The table is read through [`LookupTable`] (a DynamoDB table behind a cache, a file held
//! in memory); the operator keeps no state, so a later change of the table does not change
//! rows already joined (processing-time semantics, as in Flink).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, UInt32Array, new_null_array};
use datafusion::arrow::compute::{cast, filter_record_batch, take};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::{HashMap, HashSet};
use datafusion::physical_expr::PhysicalExpr;

use super::interval_join::passing_rows;
use crate::error::{EngineError, Result};
use crate::lookup::LookupTable;
use crate::operator::{Fetch, Operator, Output};

/// What a lookup join computes.
#[derive(Debug, Clone)]
pub struct LookupJoinSpec {
    /// The stream's rows.
    pub input: SchemaRef,
    /// One expression over `input` per key column of the table, in the table's key order
    /// (cast to the key column's type).
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The table looked up.
    pub table: Arc<dyn LookupTable>,
    /// A condition on the table's rows alone (over its schema): rows failing it are not there
    /// for the join.
    pub table_filter: Option<Arc<dyn PhysicalExpr>>,
    /// The table's columns in the output, in order (positions in its schema).
    pub table_projection: Vec<usize>,
    /// Other conditions on a joined row (over the output schema).
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    /// LEFT JOIN: a stream row without a matching table row is emitted with NULL table
    /// columns; otherwise (INNER) it is dropped.
    pub left_outer: bool,
    /// The stream's columns, then the projected table columns.
    pub output: SchemaRef,
}

/// Joins each batch of a stream with the table rows of its keys; see the module docs.
pub struct LookupJoin {
    spec: LookupJoinSpec,
    key_types: Vec<DataType>,
    keys: RowConverter,
    /// The batch being fetched for: its key rows and which rows have a key (no NULL part).
    pending: Option<(Rows, Vec<bool>)>,
}

impl std::fmt::Debug for LookupJoin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupJoin")
            .field("table", &self.spec.table)
            .field("left_outer", &self.spec.left_outer)
            .finish()
    }
}

impl LookupJoin {
    /// Checks the spec against the table and builds the operator.
    pub fn new(spec: LookupJoinSpec) -> Result<Self> {
        let table_schema = spec.table.schema();
        let key_columns = spec.table.key_columns();
        if spec.keys.len() != key_columns.len() || key_columns.is_empty() {
            return Err(EngineError::Internal(format!(
                "a lookup join has {} key expressions for {} key columns",
                spec.keys.len(),
                key_columns.len()
            )));
        }
        let width = spec.input.fields().len() + spec.table_projection.len();
        if spec.output.fields().len() != width {
            return Err(EngineError::Internal(format!(
                "a lookup join's output has {} columns, not {width}",
                spec.output.fields().len()
            )));
        }
        let key_types: Vec<DataType> = (key_columns.iter())
            .map(|c| table_schema.field(*c).data_type().clone())
            .collect();
        let fields = key_types
            .iter()
            .map(|t| SortField::new(t.clone()))
            .collect();
        Ok(LookupJoin {
            keys: RowConverter::new(fields)?,
            key_types,
            spec,
            pending: None,
        })
    }

    /// The key of every row of `batch`, in the table's key types.
    fn key_arrays(&self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        (self.spec.keys.iter().zip(&self.key_types))
            .map(|(expr, key_type)| {
                let array = expr.evaluate(batch)?.into_array(batch.num_rows())?;
                Ok(cast(&array, key_type)?)
            })
            .collect()
    }

    /// The distinct keys of `batch` (to look up), remembering every row's key for
    /// `process_fetched`.
    fn distinct_keys(&mut self, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let keys = self.key_arrays(batch)?;
        let rows = self.keys.convert_columns(&keys)?;
        let valid: Vec<bool> = (0..batch.num_rows())
            .map(|i| keys.iter().all(|k| k.is_valid(i)))
            .collect();
        let firsts: Vec<u32> = {
            let mut seen: HashSet<&[u8]> = HashSet::default();
            (0..batch.num_rows())
                .filter(|i| valid[*i] && seen.insert(rows.row(*i).data()))
                .map(|i| i as u32)
                .collect()
        };
        let firsts = UInt32Array::from(firsts);
        let distinct = (keys.iter())
            .map(|k| take(k.as_ref(), &firsts, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        self.pending = Some((rows, valid));
        Ok(distinct)
    }

    /// The table's rows that pass the table filter.
    fn filtered(&self, fetched: RecordBatch) -> Result<RecordBatch> {
        match &self.spec.table_filter {
            None => Ok(fetched),
            Some(filter) => {
                let mask = filter.evaluate(&fetched)?.into_array(fetched.num_rows())?;
                let mask = mask.as_boolean_opt().ok_or_else(|| {
                    EngineError::Internal("a lookup table's filter is not a boolean".into())
                })?;
                Ok(filter_record_batch(&fetched, mask)?)
            }
        }
    }

    /// Rows `left` of `batch` beside rows `right` of the table (NULLs where `right` is None).
    fn joined(
        &self,
        batch: &RecordBatch,
        table: &RecordBatch,
        left: Vec<u32>,
        right: Option<Vec<u32>>,
    ) -> Result<RecordBatch> {
        let n = left.len();
        let left = UInt32Array::from(left);
        let right = right.map(UInt32Array::from);
        let mut columns = (batch.columns().iter())
            .map(|c| take(c.as_ref(), &left, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for &c in &self.spec.table_projection {
            columns.push(match &right {
                Some(right) => take(table.column(c).as_ref(), right, None)?,
                None => new_null_array(table.schema().field(c).data_type(), n),
            });
        }
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        Ok(RecordBatch::try_new_with_options(
            self.spec.output.clone(),
            columns,
            &options,
        )?)
    }

    /// Which joined rows pass the join's other conditions.
    fn passes_filter(&self, joined: &RecordBatch) -> Result<Vec<bool>> {
        passing_rows(self.spec.filter.as_ref(), joined)
    }
}

impl Operator for LookupJoin {
    fn output_schema(&self) -> SchemaRef {
        self.spec.output.clone()
    }

    fn process_batch(&mut self, _: usize, _: RecordBatch, _: &mut Output) -> Result<()> {
        Err(EngineError::Internal(
            "a lookup join's batch reached it without its lookup".into(),
        ))
    }

    fn status(&self) -> Option<Arc<crate::metrics::ServiceStatus>> {
        self.spec.table.status()
    }

    fn fetch(&mut self, _input: usize, batch: &RecordBatch) -> Option<Fetch> {
        let table = self.spec.table.clone();
        let keys = self.distinct_keys(batch);
        Some(Box::pin(async move {
            let keys = keys?;
            if keys.first().is_none_or(|k| k.is_empty()) {
                return Ok(RecordBatch::new_empty(table.schema()));
            }
            table.lookup(keys).await
        }))
    }

    fn process_fetched(
        &mut self,
        _input: usize,
        batch: RecordBatch,
        fetched: RecordBatch,
        out: &mut Output,
    ) -> Result<()> {
        let (rows, valid) = self.pending.take().ok_or_else(|| {
            EngineError::Internal("a lookup join got rows it did not ask for".into())
        })?;
        let table = self.filtered(fetched)?;
        let found_keys: Vec<ArrayRef> = (self.spec.table.key_columns().iter())
            .map(|c| table.column(*c).clone())
            .collect();
        let found = self.keys.convert_columns(&found_keys)?;
        let mut by_key: HashMap<&[u8], Vec<u32>> = HashMap::default();
        for j in 0..table.num_rows() {
            by_key
                .entry(found.row(j).data())
                .or_default()
                .push(j as u32);
        }
        let (mut left, mut right) = (Vec::new(), Vec::new());
        for (i, _) in valid.iter().enumerate().filter(|(_, v)| **v) {
            for &j in by_key.get(rows.row(i).data()).into_iter().flatten() {
                left.push(i as u32);
                right.push(j);
            }
        }
        let joined = self.joined(&batch, &table, left.clone(), Some(right))?;
        let passes = self.passes_filter(&joined)?;
        let mut matched = vec![false; batch.num_rows()];
        for (i, _) in left.iter().zip(&passes).filter(|(_, p)| **p) {
            matched[*i as usize] = true;
        }
        out.batch(filter_record_batch(
            &joined,
            &datafusion::arrow::array::BooleanArray::from(passes),
        )?);
        if self.spec.left_outer {
            let unmatched: Vec<u32> = (0..batch.num_rows() as u32)
                .filter(|i| !matched[*i as usize])
                .collect();
            if !unmatched.is_empty() {
                out.batch(self.joined(&batch, &table, unmatched, None)?);
            }
        }
        Ok(())
    }
}
