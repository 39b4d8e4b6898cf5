use std::collections::BTreeMap;

use super::*;
use crate::changelog::{change_kinds, kind_at, schema_with_change};
use crate::message::Message;
use crate::operators::test_rng::XorShift;
use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
use datafusion::arrow::datatypes::Int64Type;
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::Column;

fn input_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, true),
        Field::new("value", DataType::Int64, false),
    ]))
}

fn rows(data: &[(Option<&str>, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        input_schema(),
        vec![
            Arc::new(StringArray::from_iter(data.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(data.iter().map(|r| r.1))),
        ],
    )
    .unwrap()
}

/// `sum(value)`, `count(value)` and `count(DISTINCT value)`, per key or overall.
fn aggregate(by_key: bool, interval: Duration) -> UpdatingAggregate {
    let schema = input_schema();
    let value: Arc<dyn PhysicalExpr> = Arc::new(Column::new("value", 1));
    let spec = |f, alias: &str, distinct: bool| {
        let mut builder = AggregateExprBuilder::new(f, vec![value.clone()])
            .schema(schema.clone())
            .alias(alias);
        if distinct {
            builder = builder.distinct();
        }
        AggregateSpec {
            function: Arc::new(builder.build().unwrap()),
            filter: None,
        }
    };
    let mut fields = Vec::new();
    let mut groups: Vec<Arc<dyn PhysicalExpr>> = Vec::new();
    if by_key {
        fields.push(Field::new("key", DataType::Utf8, true));
        groups.push(Arc::new(Column::new("key", 0)));
    }
    fields.extend([
        Field::new("total", DataType::Int64, true),
        Field::new("n", DataType::Int64, true),
        Field::new("distinct_values", DataType::Int64, true),
    ]);
    let output = schema_with_change(&Schema::new(fields));
    UpdatingAggregate::new(
        &schema,
        groups,
        vec![
            spec(sum_udaf(), "total", false),
            spec(count_udaf(), "n", false),
            spec(count_udaf(), "distinct_values", true),
        ],
        output,
        interval,
    )
    .unwrap()
}

/// A result row: key (for keyed aggregates), total, n, distinct values.
type Row = (Option<String>, i64, i64, i64);

/// Every change in `out`, in order.
fn changes(out: &mut Output, by_key: bool) -> Vec<(ChangeKind, Row)> {
    let mut found = Vec::new();
    for m in out.drain() {
        let Message::Batch(b) = m else { continue };
        let kinds = change_kinds(&b).unwrap();
        let first = usize::from(by_key);
        let int = |c: usize| b.column(c).as_primitive::<Int64Type>().clone();
        let (total, n, distinct) = (int(first), int(first + 1), int(first + 2));
        for i in 0..b.num_rows() {
            let key = by_key
                .then(|| b.column(0).as_string::<i32>())
                .and_then(|k| k.is_valid(i).then(|| k.value(i).to_string()));
            found.push((
                kind_at(kinds, i).unwrap(),
                (key, total.value(i), n.value(i), distinct.value(i)),
            ));
        }
    }
    found
}

/// Applies a changelog to a table keyed by the row's key: checks that every `-U` retracts
/// the current row and is followed by its key's `+U`, and that `+I` is only for new keys.
fn apply(table: &mut BTreeMap<Option<String>, Row>, log: &[(ChangeKind, Row)]) {
    let mut i = 0;
    while i < log.len() {
        let (kind, row) = &log[i];
        match kind {
            ChangeKind::Insert => {
                assert!(
                    table.insert(row.0.clone(), row.clone()).is_none(),
                    "+I of a known key {row:?}"
                );
            }
            ChangeKind::UpdateBefore => {
                assert_eq!(table.get(&row.0), Some(row), "-U retracts the current row");
                let (next_kind, next) = &log[i + 1];
                assert_eq!(*next_kind, ChangeKind::UpdateAfter);
                assert_eq!(next.0, row.0);
                assert_ne!(next, row, "an unchanged result is not emitted");
                table.insert(next.0.clone(), next.clone());
                i += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
        i += 1;
    }
}

#[test]
fn new_keys_insert_changed_keys_update_and_unchanged_keys_are_silent() {
    let mut op = aggregate(true, Duration::from_secs(3600));
    let mut out = Output::default();
    op.process_batch(
        0,
        rows(&[(Some("a"), 1), (Some("b"), 2), (None, 5)]),
        &mut out,
    )
    .unwrap();
    assert!(out.drain().next().is_none(), "nothing before the interval");
    op.emit_changes(&mut out).unwrap();
    let first = changes(&mut out, true);
    assert_eq!(
        first,
        vec![
            (ChangeKind::Insert, (Some("a".into()), 1, 1, 1)),
            (ChangeKind::Insert, (Some("b".into()), 2, 1, 1)),
            (ChangeKind::Insert, (None, 5, 1, 1)),
        ]
    );
    // `b` gets 0: its sum stays, but its counts change; `a` sees a value it had.
    op.process_batch(0, rows(&[(Some("b"), 0), (Some("a"), 1)]), &mut out)
        .unwrap();
    op.emit_changes(&mut out).unwrap();
    assert_eq!(
        changes(&mut out, true),
        vec![
            (ChangeKind::UpdateBefore, (Some("b".into()), 2, 1, 1)),
            (ChangeKind::UpdateAfter, (Some("b".into()), 2, 2, 2)),
            (ChangeKind::UpdateBefore, (Some("a".into()), 1, 1, 1)),
            (ChangeKind::UpdateAfter, (Some("a".into()), 2, 2, 1)),
        ]
    );
    assert_eq!(op.keys(), 3);
    op.emit_changes(&mut out).unwrap();
    assert!(changes(&mut out, true).is_empty(), "no input, no change");
}

#[test]
fn a_result_that_does_not_change_emits_nothing() {
    // count(DISTINCT) alone would not change; sum of 0 would not either, but count does: use
    // a global aggregate seeing a duplicate value and check only the counts move.
    let mut op = aggregate(false, Duration::ZERO);
    let mut out = Output::default();
    op.process_batch(0, rows(&[(Some("a"), 3)]), &mut out)
        .unwrap();
    op.process_batch(0, rows(&[]), &mut out).unwrap();
    op.process_batch(0, rows(&[(Some("a"), 3)]), &mut out)
        .unwrap();
    let log = changes(&mut out, false);
    assert_eq!(
        log,
        vec![
            (ChangeKind::Insert, (None, 3, 1, 1)),
            (ChangeKind::UpdateBefore, (None, 3, 1, 1)),
            (ChangeKind::UpdateAfter, (None, 6, 2, 1)),
        ]
    );
    assert_eq!(
        op.output_mode(&[StreamMode::AppendOnly]),
        Ok(StreamMode::Updating { key: vec![] })
    );
    assert!(
        op.output_mode(&[StreamMode::Updating { key: vec![0] }])
            .is_err()
    );
}

/// The oracle: the results computed directly from every row.
fn oracle(all: &[(Option<String>, i64)]) -> BTreeMap<Option<String>, Row> {
    let mut values: BTreeMap<Option<String>, Vec<i64>> = BTreeMap::new();
    for (k, v) in all {
        values.entry(k.clone()).or_default().push(*v);
    }
    values
        .into_iter()
        .map(|(k, mut v)| {
            let total = v.iter().sum();
            let n = v.len() as i64;
            v.sort();
            v.dedup();
            (k.clone(), (k, total, n, v.len() as i64))
        })
        .collect()
}

#[test]
fn random_batches_emissions_and_restores_agree_with_the_oracle() {
    for seed in 0..20u64 {
        let mut rng = XorShift::new(seed);
        let keys = [1u64, 3, 50, 2000][seed as usize % 4];
        let mut op = aggregate(true, Duration::from_secs(3600));
        let mut table = BTreeMap::new();
        let mut all = Vec::new();
        let mut out = Output::default();
        for _ in 0..60 {
            let n = rng.below(200);
            let data: Vec<(Option<String>, i64)> = (0..n)
                .map(|_| {
                    let k = rng.below(keys + 1);
                    let key = (k != keys).then(|| format!("k{k}"));
                    (key, rng.below(5) as i64)
                })
                .collect();
            let refs: Vec<(Option<&str>, i64)> =
                data.iter().map(|(k, v)| (k.as_deref(), *v)).collect();
            op.process_batch(0, rows(&refs), &mut out).unwrap();
            all.extend(data);
            match rng.below(4) {
                0 => op.emit_changes(&mut out).unwrap(),
                1 => {
                    let state = op.snapshot().unwrap();
                    let mut restored = aggregate(true, Duration::from_secs(3600));
                    restored.restore(state).unwrap();
                    op = restored;
                }
                _ => {}
            }
            apply(&mut table, &changes(&mut out, true));
        }
        op.finish(&mut out).unwrap();
        apply(&mut table, &changes(&mut out, true));
        assert_eq!(table, oracle(&all), "seed {seed}");
        assert_eq!(op.keys(), table.len());
    }
}

#[test]
fn several_key_columns_survive_snapshots_between_emissions() {
    // Two key columns use DataFusion's multi-column group values, which must not be reused
    // after `emit(All)`: a snapshot takes the keys out and interns them anew.
    let schema = input_schema();
    let count = AggregateSpec {
        function: Arc::new(
            AggregateExprBuilder::new(count_udaf(), vec![Arc::new(Column::new("value", 1))])
                .schema(schema.clone())
                .alias("n")
                .build()
                .unwrap(),
        ),
        filter: None,
    };
    let output = schema_with_change(&Schema::new(vec![
        Field::new("a", DataType::Utf8, true),
        Field::new("b", DataType::Int64, false),
        Field::new("n", DataType::Int64, true),
    ]));
    let make = || {
        UpdatingAggregate::new(
            &schema,
            vec![
                Arc::new(Column::new("key", 0)),
                Arc::new(Column::new("value", 1)),
            ],
            vec![count.clone()],
            output.clone(),
            Duration::from_secs(3600),
        )
        .unwrap()
    };
    let mut op = make();
    let mut out = Output::default();
    let mut rows_in = 0;
    for round in 0..4 {
        op.process_batch(
            0,
            rows(&[(Some("x"), 1), (Some("y"), round), (None, 1)]),
            &mut out,
        )
        .unwrap();
        rows_in += 3;
        op.emit_changes(&mut out).unwrap();
        op.process_batch(0, rows(&[(Some("x"), 1)]), &mut out)
            .unwrap();
        rows_in += 1;
        let state = op.snapshot().unwrap();
        op.process_batch(0, rows(&[(Some("x"), 1)]), &mut out)
            .unwrap();
        let mut restored = make();
        restored.restore(state).unwrap();
        restored
            .process_batch(0, rows(&[(Some("x"), 1)]), &mut out)
            .unwrap();
        rows_in += 1;
        op = restored;
    }
    out.drain();
    op.finish(&mut out).unwrap();
    assert_eq!(op.keys(), 6, "x/1, null/1 and y/0..3");
    let mut total = 0;
    let mut again = make();
    let state = op.snapshot().unwrap();
    again.restore(state).unwrap();
    let (ids, stored) = again.results.all().unwrap();
    assert_eq!(ids.len(), 6);
    let n = stored.last().unwrap().as_primitive::<Int64Type>();
    for i in 0..n.len() {
        total += n.value(i);
    }
    assert_eq!(total, rows_in, "every row counted once");
}

#[test]
fn keys_idle_past_the_state_ttl_are_dropped_and_start_afresh() {
    let ttl = Some(Duration::from_millis(3000));
    let mut op = aggregate(true, Duration::from_secs(3600)).with_state_ttl(ttl);
    let mut out = Output::default();
    op.process_batch(0, rows(&[(Some("a"), 1), (Some("b"), 1)]), &mut out)
        .unwrap();
    op.emit_changes_at(1000, &mut out).unwrap();
    op.process_batch(0, rows(&[(Some("a"), 2)]), &mut out)
        .unwrap();
    op.emit_changes_at(2000, &mut out).unwrap();
    changes(&mut out, true);
    assert_eq!(
        op.expire_idle_keys(4000).unwrap(),
        0,
        "idle exactly the TTL"
    );
    assert_eq!(op.expire_idle_keys(4001).unwrap(), 1, "b: idle since 1000");
    assert_eq!(op.keys(), 1);
    // b starts from nothing: an insert, not an update of its old result.
    op.process_batch(0, rows(&[(Some("b"), 5)]), &mut out)
        .unwrap();
    op.emit_changes_at(4500, &mut out).unwrap();
    assert_eq!(
        changes(&mut out, true),
        vec![(ChangeKind::Insert, (Some("b".into()), 5, 1, 1))]
    );
    // The times are in checkpoints: a restored operator drops `a` when the original would.
    let mut restored = aggregate(true, Duration::from_secs(3600)).with_state_ttl(ttl);
    restored.restore(op.snapshot().unwrap()).unwrap();
    assert_eq!(
        restored.expire_idle_keys(5001).unwrap(),
        1,
        "a: idle since 2000"
    );
    assert_eq!(restored.keys(), 1);
    // Pending rows keep their key: nothing is dropped until they are emitted.
    restored
        .process_batch(0, rows(&[(Some("b"), 1)]), &mut out)
        .unwrap();
    assert_eq!(restored.expire_idle_keys(99_999).unwrap(), 0);
}

#[test]
fn many_expired_keys_are_interned_anew_and_the_rest_go_on() {
    let ttl = Some(Duration::from_millis(10));
    let mut op = aggregate(true, Duration::from_secs(3600)).with_state_ttl(ttl);
    let mut out = Output::default();
    let names: Vec<String> = (0..3000).map(|i| format!("k{i}")).collect();
    let batch: Vec<(Option<&str>, i64)> = names.iter().map(|n| (Some(n.as_str()), 1)).collect();
    op.process_batch(0, rows(&batch), &mut out).unwrap();
    op.emit_changes_at(100, &mut out).unwrap();
    op.process_batch(0, rows(&[(Some("k7"), 1)]), &mut out)
        .unwrap();
    op.emit_changes_at(200, &mut out).unwrap();
    changes(&mut out, true);
    assert_eq!(op.expire_idle_keys(205).unwrap(), 2999);
    assert_eq!(op.keys(), 1);
    assert_eq!(op.expired, 0, "the key table was rebuilt");
    op.process_batch(0, rows(&[(Some("k7"), 1), (Some("k1"), 1)]), &mut out)
        .unwrap();
    op.finish(&mut out).unwrap();
    assert_eq!(
        changes(&mut out, true),
        vec![
            (ChangeKind::UpdateBefore, (Some("k7".into()), 2, 2, 1)),
            (ChangeKind::UpdateAfter, (Some("k7".into()), 3, 3, 1)),
            (ChangeKind::Insert, (Some("k1".into()), 1, 1, 1)),
        ]
    );
}

/// The stored rows of every key, in key order, for comparing two operators' state.
fn sorted_results(op: &UpdatingAggregate) -> Option<RecordBatch> {
    let rows = op.full_results().unwrap()?;
    let order = datafusion::arrow::compute::sort_to_indices(rows.column(0), None, None).unwrap();
    Some(datafusion::arrow::compute::take_record_batch(&rows, &order).unwrap())
}

#[tokio::test]
async fn incremental_checkpoints_restore_what_a_full_one_would() {
    let ttl = Some(Duration::from_millis(300));
    let (mut deltas, mut removals) = (0, 0);
    for seed in 0..8u64 {
        let mut harness = crate::operators::test_checkpoints::StoreHarness::new("aggregate");
        let mut rng = XorShift::new(seed);
        let mut op = aggregate(true, Duration::from_secs(3600)).with_state_ttl(ttl);
        let mut out = Output::default();
        let mut now = 1000u64;
        for step in 1..=60u64 {
            let n = rng.below(60);
            let names: Vec<String> = (0..n).map(|_| format!("k{}", rng.below(3000))).collect();
            let data: Vec<(Option<&str>, i64)> = names
                .iter()
                .map(|k| (Some(k.as_str()), rng.below(5) as i64))
                .collect();
            op.process_batch(0, rows(&data), &mut out).unwrap();
            now += rng.below(20);
            op.emit_changes_at(now, &mut out).unwrap();
            op.expire_idle_keys(now).unwrap();
            out.drain();
            if step % 3 != 0 {
                continue;
            }
            let state = op.snapshot_at(&harness.barrier(step)).unwrap();
            // One checkpoint in five is not stored: the next one's base is older.
            let stored = rng.below(5) != 0;
            let Some(loaded) = harness.store(step, state, RESULTS_TABLE, stored).await else {
                continue;
            };
            let mut restored = aggregate(true, Duration::from_secs(3600)).with_state_ttl(ttl);
            restored.restore(loaded).unwrap();
            assert_eq!(
                sorted_results(&restored),
                sorted_results(&op),
                "seed {seed}, checkpoint {step}"
            );
            if rng.below(2) == 0 {
                op = restored;
            }
        }
        deltas += harness.deltas;
        removals += harness.removals;
    }
    assert!(deltas > 20, "{deltas} deltas");
    assert!(removals > 0, "no delta removed keys");
}
