use std::collections::BTreeMap;

use super::*;
use crate::changelog::{change_array, schema_with_change};
use crate::message::Message;
use crate::operators::retractable::RetractableFunction;
use crate::operators::test_rng::XorShift;
use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema};
use datafusion::physical_expr::expressions::Column;

/// The input: an updating stream of rows (g, v).
fn input() -> Schema {
    Schema::new(vec![
        Field::new("g", DataType::Utf8, false),
        Field::new("v", DataType::Int64, true),
    ])
}

fn changes(rows: &[(&str, Option<i64>, ChangeKind)]) -> RecordBatch {
    RecordBatch::try_new(
        schema_with_change(&input()),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))),
            Arc::new(change_array(rows.iter().map(|r| r.2))),
        ],
    )
    .unwrap()
}

/// count(*), sum(v), avg(v), min(v), max(v), count(DISTINCT v) per g.
fn aggregate() -> RetractingAggregate {
    let v = || Some(Arc::new(Column::new("v", 1)) as Arc<dyn PhysicalExpr>);
    let spec = |function, arg| RetractableSpec {
        function,
        arg,
        filter: None,
    };
    use RetractableFunction::*;
    let output = schema_with_change(&Schema::new(vec![
        Field::new("g", DataType::Utf8, false),
        Field::new("n", DataType::Int64, true),
        Field::new("total", DataType::Int64, true),
        Field::new("mean", DataType::Float64, true),
        Field::new("low", DataType::Int64, true),
        Field::new("high", DataType::Int64, true),
        Field::new("distinct", DataType::Int64, true),
    ]));
    RetractingAggregate::new(
        &input(),
        vec![Arc::new(Column::new("g", 0))],
        vec![
            spec(Count, None),
            spec(Sum, v()),
            spec(Avg, v()),
            spec(Min, v()),
            spec(Max, v()),
            spec(CountDistinct, v()),
        ],
        output,
        Duration::from_secs(3600),
    )
    .unwrap()
}

type Row = (
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    i64,
);

/// The table the output changelog leaves, by g.
fn apply(out: &mut Output, table: &mut BTreeMap<String, Row>) {
    for m in out.drain() {
        let Message::Batch(b) = m else { continue };
        let kinds = change_kinds(&b).unwrap();
        let g = b.column(0).as_string::<i32>();
        let int = |c: usize, i: usize| {
            let a = b.column(c).as_primitive::<Int64Type>();
            a.is_valid(i).then(|| a.value(i))
        };
        let mean = b.column(3).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            let row: Row = (
                int(1, i).unwrap(),
                int(2, i),
                mean.is_valid(i).then(|| format!("{:.6}", mean.value(i))),
                int(4, i),
                int(5, i),
                int(6, i).unwrap(),
            );
            let key = g.value(i).to_string();
            match kind_at(kinds, i).unwrap() {
                ChangeKind::UpdateBefore | ChangeKind::Delete => {
                    assert_eq!(
                        table.remove(&key),
                        Some(row),
                        "a retraction takes out the current row"
                    );
                }
                _ => assert!(table.insert(key, row).is_none()),
            }
        }
    }
}

#[test]
fn retractions_take_rows_out_and_an_empty_group_is_deleted() {
    use ChangeKind::*;
    let mut op = aggregate();
    let mut out = Output::default();
    op.process_batch(
        0,
        changes(&[
            ("a", Some(5), Insert),
            ("a", Some(7), Insert),
            ("b", None, Insert),
        ]),
        &mut out,
    )
    .unwrap();
    op.emit_changes(&mut out).unwrap();
    let mut table = BTreeMap::new();
    apply(&mut out, &mut table);
    assert_eq!(
        table["a"],
        (2, Some(12), Some("6.000000".into()), Some(5), Some(7), 2)
    );
    assert_eq!(
        table["b"],
        (1, None, None, None, None, 0),
        "NULLs count in count(*) only"
    );
    // 7 becomes 5: max falls back, distinct shrinks; b's only row goes: b is deleted.
    op.process_batch(
        0,
        changes(&[
            ("a", Some(7), UpdateBefore),
            ("a", Some(5), UpdateAfter),
            ("b", None, Delete),
        ]),
        &mut out,
    )
    .unwrap();
    op.emit_changes(&mut out).unwrap();
    apply(&mut out, &mut table);
    assert_eq!(
        table["a"],
        (2, Some(10), Some("5.000000".into()), Some(5), Some(5), 1)
    );
    assert!(!table.contains_key("b"));
    assert_eq!(op.open_state(), 1);
}

#[test]
fn random_changelogs_with_restores_leave_the_aggregate_of_the_final_table() {
    for seed in 1..=15u64 {
        let mut rng = XorShift::new(seed);
        let mut op = aggregate();
        let mut out = Output::default();
        let mut table = BTreeMap::new();
        // The upstream table: id -> (g, v), changed by inserts, updates and deletes.
        let mut upstream: BTreeMap<u64, (String, Option<i64>)> = BTreeMap::new();
        for _ in 0..60 {
            let mut batch: Vec<(String, Option<i64>, ChangeKind)> = Vec::new();
            for _ in 0..rng.below(12) {
                let id = rng.below(25);
                let new = (
                    format!("g{}", rng.below(4)),
                    (rng.below(6) > 0).then(|| rng.below(9) as i64),
                );
                match (upstream.get(&id).cloned(), rng.below(3)) {
                    (None, _) => {
                        batch.push((new.0.clone(), new.1, ChangeKind::Insert));
                        upstream.insert(id, new);
                    }
                    (Some(old), 0) => {
                        batch.push((old.0, old.1, ChangeKind::Delete));
                        upstream.remove(&id);
                    }
                    (Some(old), _) => {
                        batch.push((old.0, old.1, ChangeKind::UpdateBefore));
                        batch.push((new.0.clone(), new.1, ChangeKind::UpdateAfter));
                        upstream.insert(id, new);
                    }
                }
            }
            let refs: Vec<(&str, Option<i64>, ChangeKind)> =
                batch.iter().map(|(g, v, k)| (g.as_str(), *v, *k)).collect();
            op.process_batch(0, changes(&refs), &mut out).unwrap();
            match rng.below(4) {
                0 => op.emit_changes(&mut out).unwrap(),
                1 => {
                    let mut restored = aggregate();
                    restored.restore(op.snapshot().unwrap()).unwrap();
                    op = restored;
                }
                _ => {}
            }
            apply(&mut out, &mut table);
        }
        op.finish(&mut out).unwrap();
        apply(&mut out, &mut table);
        let mut expected: BTreeMap<String, Vec<Option<i64>>> = BTreeMap::new();
        for (g, v) in upstream.values() {
            expected.entry(g.clone()).or_default().push(*v);
        }
        let expected: BTreeMap<String, Row> = expected
            .into_iter()
            .map(|(g, vs)| {
                let values: Vec<i64> = vs.iter().flatten().copied().collect();
                let sum = (!values.is_empty()).then(|| values.iter().sum::<i64>());
                let mean = sum.map(|s| format!("{:.6}", s as f64 / values.len() as f64));
                let mut distinct = values.clone();
                distinct.sort();
                distinct.dedup();
                (
                    g,
                    (
                        vs.len() as i64,
                        sum,
                        mean,
                        values.iter().min().copied(),
                        values.iter().max().copied(),
                        distinct.len() as i64,
                    ),
                )
            })
            .collect();
        assert_eq!(table, expected, "seed {seed}");
    }
}

#[test]
fn an_append_only_input_is_all_inserts() {
    let mut op = aggregate();
    let mut out = Output::default();
    let plain = RecordBatch::try_new(
        Arc::new(input()),
        vec![
            Arc::new(StringArray::from(vec!["a", "a", "b"])),
            Arc::new(Int64Array::from(vec![Some(2), Some(4), None])),
        ],
    )
    .unwrap();
    op.process_batch(0, plain, &mut out).unwrap();
    op.finish(&mut out).unwrap();
    let mut table = BTreeMap::new();
    apply(&mut out, &mut table);
    assert_eq!(
        table["a"],
        (2, Some(6), Some("3.000000".into()), Some(2), Some(4), 2)
    );
    assert_eq!(
        op.output_mode(&[StreamMode::AppendOnly]),
        Ok(StreamMode::Updating { key: vec![0] })
    );
}

/// Every group as saved, in key order, for comparing two operators' state (read back, so
/// that the values of `count(DISTINCT …)`, kept unordered, compare as sets).
fn saved(op: &RetractingAggregate) -> Vec<crate::operators::retracting_state::SavedGroup> {
    let mut keys: Vec<&Box<[u8]>> = op.groups.keys().collect();
    keys.sort();
    match op.groups_batch(&keys).unwrap() {
        Some(batch) => {
            crate::operators::retracting_state::read_groups(&batch, &op.aggregates).unwrap()
        }
        None => Vec::new(),
    }
}

#[tokio::test]
async fn incremental_checkpoints_restore_what_a_full_one_would() {
    use ChangeKind::*;
    let (mut deltas, mut removals) = (0, 0);
    for seed in 0..6u64 {
        let mut harness = crate::operators::test_checkpoints::StoreHarness::new("aggregate");
        let mut rng = XorShift::new(seed);
        let mut op = aggregate();
        let mut out = Output::default();
        // The rows inserted so far, which later changes retract.
        let mut live: Vec<(String, Option<i64>)> = Vec::new();
        for step in 1..=45u64 {
            let mut rows: Vec<(String, Option<i64>, ChangeKind)> = Vec::new();
            for _ in 0..rng.below(30) {
                if !live.is_empty() && rng.below(3) == 0 {
                    let (g, v) = live.swap_remove(rng.below(live.len() as u64) as usize);
                    rows.push((g, v, Delete));
                } else {
                    let g = format!("g{}", rng.below(600));
                    let v = (rng.below(4) > 0).then(|| rng.below(50) as i64);
                    live.push((g.clone(), v));
                    rows.push((g, v, Insert));
                }
            }
            let refs: Vec<(&str, Option<i64>, ChangeKind)> =
                rows.iter().map(|(g, v, k)| (g.as_str(), *v, *k)).collect();
            op.process_batch(0, changes(&refs), &mut out).unwrap();
            if rng.below(2) == 0 {
                op.emit_changes(&mut out).unwrap();
            }
            out.drain();
            if step % 3 != 0 {
                continue;
            }
            let state = op.snapshot_at(&harness.barrier(step)).unwrap();
            // One checkpoint in five is not stored: the next one's base is older.
            let stored = rng.below(5) != 0;
            let Some(loaded) = harness.store(step, state, GROUPS_TABLE, stored).await else {
                continue;
            };
            let mut restored = aggregate();
            restored.restore(loaded).unwrap();
            assert_eq!(
                saved(&restored),
                saved(&op),
                "seed {seed}, checkpoint {step}"
            );
            if rng.below(2) == 0 {
                op = restored;
            }
        }
        deltas += harness.deltas;
        removals += harness.removals;
    }
    assert!(deltas > 15, "{deltas} deltas");
    assert!(removals > 0, "no delta deleted a group");
}

#[test]
fn a_checkpoint_with_groups_as_json_is_still_restored() {
    use datafusion::arrow::row::{RowConverter, SortField};
    let row = |t: DataType, a: ArrayRef| {
        let c = RowConverter::new(vec![SortField::new(t)]).unwrap();
        c.convert_columns(&[a]).unwrap().row(0).data().to_vec()
    };
    let key = row(DataType::Utf8, Arc::new(StringArray::from(vec!["a"])));
    let five = row(DataType::Int64, Arc::new(Int64Array::from(vec![5])));
    // Group `a` with one row, v = 5, as laketide saved it before groups were Arrow.
    let group = serde_json::json!({
        "key": key, "rows": 1,
        "states": [
            {"Count": 1},
            {"Sum": {"int": "5", "float": 0.0, "n": 1}},
            {"Sum": {"int": "5", "float": 0.0, "n": 1}},
            {"Values": [[five, 1]]},
            {"Values": [[five, 1]]},
            {"Distinct": [[five, 1]]}
        ],
        "emitted": ["1", "5", "5", "5", "5", "1"]
    });
    let state = NodeState::json(&vec![(group, false)]).unwrap();
    let mut op = aggregate();
    op.restore(state).unwrap();
    let mut out = Output::default();
    op.process_batch(0, changes(&[("a", Some(9), ChangeKind::Insert)]), &mut out)
        .unwrap();
    op.emit_changes(&mut out).unwrap();
    let mut table = BTreeMap::new();
    table.insert(
        "a".to_string(),
        (1, Some(5), Some("5.000000".into()), Some(5), Some(5), 1),
    );
    apply(&mut out, &mut table);
    assert_eq!(
        table["a"],
        (2, Some(14), Some("7.000000".into()), Some(5), Some(9), 2)
    );
}
