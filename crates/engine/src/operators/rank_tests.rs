use std::collections::BTreeMap;

use super::*;
use crate::changelog::{change_kinds, kind_at};
use crate::message::Message;
use crate::operators::test_rng::XorShift;
use crate::state::TableChanges;
use datafusion::arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{DataType, Int64Type, Schema, TimeUnit};
use datafusion::physical_expr::expressions::Column;

fn input() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("v", DataType::Int64, false),
        Field::new(
            "end",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
    ]))
}

fn rows(data: &[(&str, i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        input(),
        vec![
            Arc::new(StringArray::from_iter_values(data.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(data.iter().map(|r| r.1))),
            Arc::new(TimestampMillisecondArray::from_iter_values(
                data.iter().map(|r| r.2),
            )),
        ],
    )
    .unwrap()
}

/// Top `limit` by `v` descending per `k` (and per window end when `windowed`).
fn rank(limit: usize, windowed: bool) -> RankOperator {
    let mut partition: Vec<Arc<dyn PhysicalExpr>> = vec![Arc::new(Column::new("k", 0))];
    if windowed {
        partition.push(Arc::new(Column::new("end", 2)));
    }
    let spec = RankSpec {
        partition,
        order: vec![PhysicalSortExpr {
            expr: Arc::new(Column::new("v", 1)),
            options: SortOptions {
                descending: true,
                nulls_first: false,
            },
        }],
        limit,
        window_end: windowed.then_some(2),
    };
    RankOperator::new(input(), spec, None).unwrap()
}

/// (kind, k, v, end, rn) of every row in `out`.
fn emitted(out: &mut Output) -> Vec<(Option<ChangeKind>, String, i64, i64, u64)> {
    let mut found = Vec::new();
    for m in out.drain() {
        let Message::Batch(b) = m else { continue };
        let kinds = crate::changelog::has_change_column(b.schema_ref())
            .then(|| change_kinds(&b).unwrap().clone());
        let k = b.column(0).as_string::<i32>();
        let v = b.column(1).as_primitive::<Int64Type>();
        let e = timestamp_values(b.column(2)).unwrap();
        let r = b.column(3).as_primitive::<UInt64Type>();
        for i in 0..b.num_rows() {
            found.push((
                kinds.as_ref().map(|c| kind_at(c, i).unwrap()),
                k.value(i).to_string(),
                v.value(i),
                e.value(i),
                r.value(i),
            ));
        }
    }
    found
}

#[test]
fn the_top_rows_change_position_by_position_with_ties_to_the_earlier_row() {
    let mut op = rank(2, false);
    let mut out = Output::default();
    op.process_batch(0, rows(&[("a", 5, 0), ("a", 7, 1), ("b", 1, 2)]), &mut out)
        .unwrap();
    use ChangeKind::*;
    assert_eq!(
        emitted(&mut out),
        vec![
            (Some(Insert), "a".into(), 7, 1, 1),
            (Some(Insert), "a".into(), 5, 0, 2),
            (Some(Insert), "b".into(), 1, 2, 1),
        ]
    );
    // 6 takes rank 2 from 5; a tie with 7 ranks after it; 1 is not in the top 2.
    op.process_batch(0, rows(&[("a", 6, 3), ("a", 1, 4)]), &mut out)
        .unwrap();
    op.process_batch(0, rows(&[("a", 7, 5)]), &mut out).unwrap();
    assert_eq!(
        emitted(&mut out),
        vec![
            (Some(UpdateBefore), "a".into(), 5, 0, 2),
            (Some(UpdateAfter), "a".into(), 6, 3, 2),
            (Some(UpdateBefore), "a".into(), 6, 3, 2),
            (Some(UpdateAfter), "a".into(), 7, 5, 2),
        ]
    );
    assert_eq!(
        op.output_mode(&[StreamMode::AppendOnly]),
        Ok(StreamMode::Updating { key: vec![0, 3] })
    );
    assert_eq!(
        rank(1, false).output_mode(&[StreamMode::AppendOnly]),
        Ok(StreamMode::Updating { key: vec![0] }),
        "one row per partition: the partition is the key"
    );
}

/// The top `limit` (v, end) per key of `all`, earlier rows first among equal values.
fn oracle(all: &[(String, i64, i64)], limit: usize) -> BTreeMap<(String, u64), (i64, i64)> {
    let mut by_key: BTreeMap<String, Vec<(i64, usize, i64)>> = BTreeMap::new();
    for (i, (k, v, e)) in all.iter().enumerate() {
        by_key.entry(k.clone()).or_default().push((-*v, i, *e));
    }
    let mut table = BTreeMap::new();
    for (k, mut list) in by_key {
        list.sort();
        for (r, (v, _, e)) in list.into_iter().take(limit).enumerate() {
            table.insert((k.clone(), r as u64 + 1), (-v, e));
        }
    }
    table
}

#[test]
fn random_streams_with_restores_leave_the_batch_top_n() {
    for seed in 1..=12u64 {
        let mut rng = XorShift::new(seed);
        let limit = [1usize, 3, 10][seed as usize % 3];
        let mut op = rank(limit, false);
        let mut out = Output::default();
        let mut table: BTreeMap<(String, u64), (i64, i64)> = BTreeMap::new();
        let mut all = Vec::new();
        for step in 0..40 {
            let data: Vec<(String, i64, i64)> = (0..rng.below(60))
                .map(|j| {
                    (
                        format!("k{}", rng.below(7)),
                        rng.below(30) as i64,
                        step * 100 + j as i64,
                    )
                })
                .collect();
            let refs: Vec<(&str, i64, i64)> =
                data.iter().map(|(k, v, e)| (k.as_str(), *v, *e)).collect();
            op.process_batch(0, rows(&refs), &mut out).unwrap();
            all.extend(data);
            if rng.below(5) == 0 {
                let mut restored = rank(limit, false);
                restored.restore(op.snapshot().unwrap()).unwrap();
                op = restored;
            }
            for (kind, k, v, e, r) in emitted(&mut out) {
                match kind.unwrap() {
                    ChangeKind::UpdateBefore => {
                        assert_eq!(
                            table.remove(&(k, r)),
                            Some((v, e)),
                            "-U retracts the current row"
                        );
                    }
                    _ => assert!(table.insert((k, r), (v, e)).is_none()),
                }
            }
        }
        assert_eq!(table, oracle(&all, limit), "seed {seed}");
    }
}

#[test]
fn per_window_ranks_are_final_rows_emitted_when_the_window_closes() {
    let mut op = rank(2, true);
    let mut out = Output::default();
    op.process_batch(
        0,
        rows(&[("a", 1, 10), ("a", 3, 10), ("a", 2, 10), ("a", 9, 20)]),
        &mut out,
    )
    .unwrap();
    assert!(
        emitted(&mut out).is_empty(),
        "nothing before the window closes"
    );
    op.process_watermark(Watermark::EventTime(10_000_000), &mut out)
        .unwrap();
    assert_eq!(
        emitted(&mut out),
        vec![(None, "a".into(), 3, 10, 1), (None, "a".into(), 2, 10, 2)]
    );
    assert_eq!(op.partitions(), 1);
    let mut restored = rank(2, true);
    restored.restore(op.snapshot().unwrap()).unwrap();
    restored
        .process_batch(0, rows(&[("a", 5, 10), ("a", 4, 20)]), &mut out)
        .unwrap();
    assert_eq!(out.take_counters().0, 1, "a row of a closed window is late");
    restored.finish(&mut out).unwrap();
    assert_eq!(
        emitted(&mut out),
        vec![(None, "a".into(), 9, 20, 1), (None, "a".into(), 4, 20, 2)]
    );
    assert_eq!(
        restored.output_mode(&[StreamMode::AppendOnly]),
        Ok(StreamMode::AppendOnly)
    );
}

/// Every kept row of `op` in arrival order, for comparing two operators' state.
fn kept(op: &RankOperator) -> Option<RecordBatch> {
    let all: Vec<&Partition> = op.top.values().collect();
    op.kept_batch(&all).unwrap()
}

#[tokio::test]
async fn incremental_checkpoints_restore_what_a_full_one_would() {
    let mut deltas = 0;
    for seed in 0..8u64 {
        let mut harness = crate::operators::test_checkpoints::StoreHarness::new("rank");
        let mut rng = XorShift::new(seed);
        let limit = [1, 3][seed as usize % 2];
        let mut op = rank(limit, false);
        let mut out = Output::default();
        for step in 1..=60u64 {
            let names: Vec<String> = (0..rng.below(40))
                .map(|_| format!("k{}", rng.below(2000)))
                .collect();
            let data: Vec<(&str, i64, i64)> = names
                .iter()
                .map(|k| (k.as_str(), rng.below(100) as i64, 0))
                .collect();
            op.process_batch(0, rows(&data), &mut out).unwrap();
            out.drain();
            if step % 3 != 0 {
                continue;
            }
            let state = op.snapshot_at(&harness.barrier(step)).unwrap();
            // One checkpoint in five is not stored: the next one's base is older.
            let stored = rng.below(5) != 0;
            let Some(loaded) = harness.store(step, state, KEPT_TABLE, stored).await else {
                continue;
            };
            let mut restored = rank(limit, false);
            restored.restore(loaded).unwrap();
            assert_eq!(kept(&restored), kept(&op), "seed {seed}, checkpoint {step}");
            assert_eq!(restored.kept_rows, op.kept_rows);
            if rng.below(2) == 0 {
                op = restored;
            }
        }
        deltas += harness.deltas;
    }
    assert!(deltas > 20, "{deltas} deltas");
}

#[test]
fn with_a_state_ttl_idle_partitions_are_dropped_also_in_incremental_checkpoints() {
    let ttl = Some(std::time::Duration::from_secs(2));
    let mut op = rank(2, false).with_state_ttl(ttl);
    let mut out = Output::default();
    op.process_batch(0, rows(&[("a", 5, 0), ("b", 7, 0), ("c", 1, 0)]), &mut out)
        .unwrap();
    out.drain();
    // `a` last changed at 1 s, the others at 5 s; a sweep at 6.5 s drops `a` only.
    for p in op.top.values_mut() {
        p.touched_ms = 5_000;
    }
    let a_key = {
        let EncodedRows { keys, .. } = op.codec.encode(&rows(&[("a", 5, 0)])).unwrap();
        Box::<[u8]>::from(keys.row(0).data())
    };
    op.top.get_mut(&a_key).unwrap().touched_ms = 1_000;
    let first = CheckpointBarrier {
        id: 1,
        started_at_ms: 0,
        base: None,
    };
    let full = op.snapshot_at(&first).unwrap();
    let Some(KeyedTable::Full(full_rows)) = full.keyed_table(KEPT_TABLE).cloned() else {
        panic!("the first snapshot is full");
    };
    assert_eq!(op.expire_idle_partitions(6_500).unwrap(), 1);
    assert_eq!((op.partitions(), op.kept_rows), (2, 2));
    // The delta on checkpoint 1 removes `a`; restoring full + delta gives the same rows.
    let second = CheckpointBarrier {
        id: 2,
        started_at_ms: 0,
        base: Some(1),
    };
    let delta = op.snapshot_at(&second).unwrap();
    let Some(KeyedTable::Delta { changes, .. }) = delta.keyed_table(KEPT_TABLE).cloned() else {
        panic!("a delta");
    };
    assert_eq!(changes.removed.as_ref().map(|r| r.num_rows()), Some(1));
    let chain = KeyedTable::Restored {
        checkpoint: 2,
        parts: vec![
            TableChanges {
                rows: full_rows,
                removed: None,
            },
            changes,
        ],
    };
    let mut restored = rank(2, false).with_state_ttl(ttl);
    restored
        .restore(delta.with_keyed_table(KEPT_TABLE, chain))
        .unwrap();
    assert_eq!(kept(&restored), kept(&op));
    let mut touched: Vec<u64> = restored.top.values().map(|p| p.touched_ms).collect();
    touched.sort();
    assert_eq!(
        touched,
        vec![5_000, 5_000],
        "last-change times are restored"
    );
    // A later row of the dropped partition starts it afresh.
    restored
        .process_batch(0, rows(&[("a", 2, 0)]), &mut out)
        .unwrap();
    assert_eq!(
        emitted(&mut out),
        vec![(Some(ChangeKind::Insert), "a".into(), 2, 0, 1)]
    );
    // The windowed form closes its windows and takes no TTL.
    assert!(rank(1, true).with_state_ttl(ttl).ttl.is_none());
}
