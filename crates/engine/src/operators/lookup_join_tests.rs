//! Unit tests of the lookup join, against a nested-loop join of each batch with the table.
use super::lookup_join::*;
use crate::lookup::{LookupTable, MemoryLookupTable};
use crate::message::Message;
use crate::operator::{Operator, Output};
use crate::operators::test_rng::XorShift;
use datafusion::arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::logical_expr::Operator as BinaryOp;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::scalar::ScalarValue;
use std::sync::Arc;

/// The stream: (s_key, s_n).
fn stream_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("s_key", DataType::Utf8, true),
        Field::new("s_n", DataType::Int64, false),
    ]))
}

/// The table: (t_id, t_key, t_grp), keyed by t_key.
fn table_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("t_id", DataType::Int64, false),
        Field::new("t_key", DataType::Utf8, true),
        Field::new("t_grp", DataType::Int64, false),
    ]))
}

fn output(left_outer: bool) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("s_key", DataType::Utf8, true),
        Field::new("s_n", DataType::Int64, false),
        Field::new("t_id", DataType::Int64, left_outer),
        Field::new("t_grp", DataType::Int64, left_outer),
    ]))
}

fn key(rng: &mut XorShift) -> Option<String> {
    match rng.below(9) {
        0 => None,
        k => Some(format!("k{k}")),
    }
}

fn table_rows(rng: &mut XorShift, n: usize) -> RecordBatch {
    let keys: Vec<Option<String>> = (0..n).map(|_| key(rng)).collect();
    let grps: Vec<i64> = (0..n).map(|_| rng.below(3) as i64).collect();
    RecordBatch::try_new(
        table_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(0..n as i64)),
            Arc::new(StringArray::from(keys)),
            Arc::new(Int64Array::from(grps)),
        ],
    )
    .unwrap()
}

fn stream_batch(rng: &mut XorShift, first: i64, n: usize) -> RecordBatch {
    let keys: Vec<Option<String>> = (0..n).map(|_| key(rng)).collect();
    RecordBatch::try_new(
        stream_schema(),
        vec![
            Arc::new(StringArray::from(keys)),
            Arc::new(Int64Array::from_iter_values(first..first + n as i64)),
        ],
    )
    .unwrap()
}

fn literal(v: i64) -> Arc<dyn PhysicalExpr> {
    Arc::new(Literal::new(ScalarValue::Int64(Some(v))))
}

/// With `filters`: table rows with `t_grp = 2` are left out, and a pair passes only when
/// `s_n + t_id` is odd.
fn join(table: Arc<MemoryLookupTable>, left_outer: bool, filters: bool) -> LookupJoin {
    let table_filter: Option<Arc<dyn PhysicalExpr>> = filters.then(|| {
        Arc::new(BinaryExpr::new(
            Arc::new(Column::new("t_grp", 2)),
            BinaryOp::NotEq,
            literal(2),
        )) as Arc<dyn PhysicalExpr>
    });
    let filter: Option<Arc<dyn PhysicalExpr>> = filters.then(|| {
        let sum = Arc::new(BinaryExpr::new(
            Arc::new(Column::new("s_n", 1)),
            BinaryOp::Plus,
            Arc::new(Column::new("t_id", 2)),
        ));
        let modulo = Arc::new(BinaryExpr::new(sum, BinaryOp::Modulo, literal(2)));
        Arc::new(BinaryExpr::new(modulo, BinaryOp::Eq, literal(1))) as Arc<dyn PhysicalExpr>
    });
    LookupJoin::new(LookupJoinSpec {
        input: stream_schema(),
        keys: vec![Arc::new(Column::new("s_key", 0))],
        table,
        table_filter,
        table_projection: vec![0, 2],
        filter,
        left_outer,
        output: output(left_outer),
    })
    .unwrap()
}

/// What the join must emit for `batch` against `table`, as sorted text rows.
fn oracle(
    batch: &RecordBatch,
    table: &RecordBatch,
    left_outer: bool,
    filters: bool,
) -> Vec<String> {
    let s_keys = batch.column(0).as_string::<i32>();
    let s_ns = batch.column(1).as_primitive::<Int64Type>();
    let t_ids = table.column(0).as_primitive::<Int64Type>();
    let t_keys = table.column(1).as_string::<i32>();
    let t_grps = table.column(2).as_primitive::<Int64Type>();
    let mut rows = Vec::new();
    for i in 0..batch.num_rows() {
        let mut matched = false;
        for j in 0..table.num_rows() {
            let same =
                s_keys.is_valid(i) && t_keys.is_valid(j) && s_keys.value(i) == t_keys.value(j);
            let kept = !filters || t_grps.value(j) != 2;
            let passes = !filters || (s_ns.value(i) + t_ids.value(j)) % 2 == 1;
            if same && kept && passes {
                matched = true;
                rows.push(format!(
                    "{:?} {} {} {}",
                    s_keys.is_valid(i).then(|| s_keys.value(i)),
                    s_ns.value(i),
                    t_ids.value(j),
                    t_grps.value(j)
                ));
            }
        }
        if left_outer && !matched {
            rows.push(format!(
                "{:?} {} NULL NULL",
                s_keys.is_valid(i).then(|| s_keys.value(i)),
                s_ns.value(i)
            ));
        }
    }
    rows.sort();
    rows
}

fn text_rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut rows = Vec::new();
    for b in batches {
        let keys = b.column(0).as_string::<i32>();
        let ns = b.column(1).as_primitive::<Int64Type>();
        let ids = b.column(2).as_primitive::<Int64Type>();
        let grps = b.column(3).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let opt = |a: &datafusion::arrow::array::Int64Array| {
                if a.is_valid(i) {
                    a.value(i).to_string()
                } else {
                    "NULL".into()
                }
            };
            rows.push(format!(
                "{:?} {} {} {}",
                keys.is_valid(i).then(|| keys.value(i)),
                ns.value(i),
                opt(ids),
                opt(grps)
            ));
        }
    }
    rows.sort();
    rows
}

/// Runs one batch through the operator as the runner does: fetch, then process.
fn run_batch(op: &mut LookupJoin, batch: RecordBatch) -> Vec<RecordBatch> {
    let fetch = op.fetch(0, &batch).expect("a lookup join fetches");
    let fetched = futures::executor::block_on(fetch).unwrap();
    let mut out = Output::default();
    op.process_fetched(0, batch, fetched, &mut out).unwrap();
    out.drain()
        .filter_map(|m| match m {
            Message::Batch(b) => Some(b),
            _ => None,
        })
        .collect()
}

#[test]
fn matches_a_nested_loop_join_for_inner_and_left_with_filters() {
    for seed in 0..12u64 {
        let mut rng = XorShift::new(seed);
        let left_outer = seed % 2 == 0;
        let filters = seed % 4 >= 2;
        let table = Arc::new(MemoryLookupTable::new("t", table_schema(), vec![1]).unwrap());
        let mut op = join(table.clone(), left_outer, filters);
        let mut first = 0;
        for round in 0..6 {
            // The table changes between batches: each batch sees the rows of its moment.
            let rows = table_rows(&mut rng, 5 + round * 3);
            table.replace(rows.clone()).unwrap();
            let n = rng.below(40) as usize;
            let batch = stream_batch(&mut rng, first, n);
            first += n as i64;
            let got = text_rows(&run_batch(&mut op, batch.clone()));
            let want = oracle(&batch, &rows, left_outer, filters);
            assert_eq!(got, want, "seed {seed} round {round}");
        }
    }
}

#[test]
fn an_empty_batch_and_a_batch_of_null_keys_need_no_lookup_rows() {
    let table = Arc::new(MemoryLookupTable::new("t", table_schema(), vec![1]).unwrap());
    table
        .replace(table_rows(&mut XorShift::new(3), 20))
        .unwrap();
    let mut op = join(table, true, false);
    assert!(run_batch(&mut op, RecordBatch::new_empty(stream_schema())).is_empty());
    let nulls = RecordBatch::try_new(
        stream_schema(),
        vec![
            Arc::new(StringArray::from(vec![None::<&str>, None])),
            Arc::new(Int64Array::from(vec![1, 2])),
        ],
    )
    .unwrap();
    let got = text_rows(&run_batch(&mut op, nulls));
    assert_eq!(got, vec!["None 1 NULL NULL", "None 2 NULL NULL"]);
}

#[test]
fn a_memory_table_returns_every_row_of_a_key_and_none_for_null_keys() {
    let table = MemoryLookupTable::new("t", table_schema(), vec![1]).unwrap();
    let rows = RecordBatch::try_new(
        table_schema(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
            Arc::new(StringArray::from(vec![
                Some("a"),
                None,
                Some("a"),
                Some("b"),
            ])),
            Arc::new(Int64Array::from(vec![0, 0, 0, 0])),
        ],
    )
    .unwrap();
    table.replace(rows).unwrap();
    let found = table
        .get(&[Arc::new(StringArray::from(vec!["a", "c"]))])
        .unwrap();
    let ids: Vec<i64> = found
        .column(0)
        .as_primitive::<Int64Type>()
        .values()
        .to_vec();
    assert_eq!(ids, vec![1, 3]);
    assert_eq!(LookupTable::schema(&table), table_schema());
    assert_eq!(table.len(), 4);
}
