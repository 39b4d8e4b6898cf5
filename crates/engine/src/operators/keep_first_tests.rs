use super::*;
use crate::message::Message;
use crate::operators::test_rng::XorShift;
use datafusion::arrow::array::{AsArray, Int64Array, StringArray, TimestampMillisecondArray};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{DataType, Int64Type, Schema};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;

const MS: i64 = 1_000_000;

fn input() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("id", DataType::Int64, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
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

fn keep_first() -> KeepFirstOperator {
    let spec = RankSpec {
        partition: vec![Arc::new(Column::new("k", 0)) as Arc<dyn PhysicalExpr>],
        order: vec![PhysicalSortExpr {
            expr: Arc::new(Column::new("ts", 2)),
            options: SortOptions::default(),
        }],
        limit: 1,
        window_end: None,
    };
    KeepFirstOperator::new(input(), &spec, 2, None).unwrap()
}

/// (k, id) of every emitted row.
fn emitted(out: &mut Output) -> Vec<(String, i64)> {
    let mut found = Vec::new();
    for m in out.drain() {
        let Message::Batch(b) = m else { continue };
        assert_eq!(b.num_columns(), 4, "no change column: append-only");
        let k = b.column(0).as_string::<i32>();
        let id = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            found.push((k.value(i).to_string(), id.value(i)));
        }
    }
    found
}

#[test]
fn a_key_is_emitted_once_when_the_watermark_passes_its_earliest_row() {
    let mut op = keep_first();
    let mut out = Output::default();
    op.process_batch(
        0,
        rows(&[("a", 1, 50), ("b", 2, 60), ("a", 3, 40), ("a", 4, 40)]),
        &mut out,
    )
    .unwrap();
    op.process_watermark(Watermark::EventTime(45 * MS), &mut out)
        .unwrap();
    assert_eq!(
        emitted(&mut out),
        vec![("a".into(), 3)],
        "the earliest; ties to the first"
    );
    op.process_batch(0, rows(&[("a", 5, 10), ("b", 6, 55)]), &mut out)
        .unwrap();
    let state = op.snapshot().unwrap();
    let mut restored = keep_first();
    restored.restore(state).unwrap();
    restored
        .process_batch(0, rows(&[("a", 7, 1)]), &mut out)
        .unwrap();
    restored.finish(&mut out).unwrap();
    assert_eq!(
        emitted(&mut out),
        vec![("b".into(), 6)],
        "a was final; b's earlier row won"
    );
    assert_eq!(
        restored.output_mode(&[StreamMode::AppendOnly]),
        Ok(StreamMode::AppendOnly)
    );
    // A row without a time is not dropped silently: it is counted as late.
    let untimed = RecordBatch::try_new(
        input(),
        vec![
            Arc::new(StringArray::from(vec!["z"])),
            Arc::new(Int64Array::from(vec![9])),
            Arc::new(TimestampMillisecondArray::from(vec![None])),
        ],
    )
    .unwrap();
    restored.process_batch(0, untimed, &mut out).unwrap();
    assert_eq!(out.take_counters().0, 1);
}

#[test]
fn with_in_time_watermarks_the_result_is_the_batch_first_row_per_key() {
    for seed in 1..=10u64 {
        let mut rng = XorShift::new(seed);
        let mut op = keep_first();
        let mut out = Output::default();
        let mut all: Vec<(String, i64, i64)> = Vec::new();
        let mut max_time = 0i64;
        let mut got = Vec::new();
        for step in 0..50i64 {
            // Times rise with up to 30 ms of disorder; the watermark lags by 30 ms.
            let batch: Vec<(String, i64, i64)> = (0..rng.below(20))
                .map(|j| {
                    let t = step * 20 + rng.below(30) as i64;
                    (format!("k{}", rng.below(15)), step * 100 + j as i64, t)
                })
                .collect();
            max_time = max_time.max(batch.iter().map(|r| r.2).max().unwrap_or(0));
            let refs: Vec<(&str, i64, i64)> =
                batch.iter().map(|(k, i, t)| (k.as_str(), *i, *t)).collect();
            op.process_batch(0, rows(&refs), &mut out).unwrap();
            all.extend(batch);
            op.process_watermark(Watermark::EventTime((max_time - 31).max(0) * MS), &mut out)
                .unwrap();
            if rng.below(6) == 0 {
                let mut restored = keep_first();
                restored.restore(op.snapshot().unwrap()).unwrap();
                op = restored;
            }
            got.extend(emitted(&mut out));
        }
        op.finish(&mut out).unwrap();
        got.extend(emitted(&mut out));
        let mut first: std::collections::BTreeMap<String, (i64, i64)> = Default::default();
        for (k, id, t) in &all {
            let e = first.entry(k.clone()).or_insert((*t, *id));
            if *t < e.0 {
                *e = (*t, *id);
            }
        }
        let mut expected: Vec<(String, i64)> =
            first.into_iter().map(|(k, (_, id))| (k, id)).collect();
        got.sort();
        expected.sort();
        assert_eq!(got, expected, "seed {seed}");
    }
}

#[test]
fn with_a_state_ttl_keys_emitted_long_ago_are_forgotten_and_emitted_again() {
    let ttl = Some(std::time::Duration::from_secs(10));
    let mut op = keep_first().with_state_ttl(ttl);
    let mut out = Output::default();
    op.process_batch(0, rows(&[("a", 1, 10)]), &mut out)
        .unwrap();
    op.process_watermark(Watermark::EventTime(15 * MS), &mut out)
        .unwrap();
    assert_eq!(emitted(&mut out), vec![("a".into(), 1)]);
    // `a` was emitted at 1 s (processing time); `b` now.
    for e in op.emitted.values_mut() {
        e.at_ms = 1_000;
    }
    op.process_batch(0, rows(&[("b", 2, 20)]), &mut out)
        .unwrap();
    op.process_watermark(Watermark::EventTime(30 * MS), &mut out)
        .unwrap();
    assert_eq!(emitted(&mut out), vec![("b".into(), 2)]);
    // Times survive a checkpoint.
    let mut restored = keep_first().with_state_ttl(ttl);
    restored.restore(op.snapshot().unwrap()).unwrap();
    let mut times: Vec<u64> = restored.emitted.values().map(|e| e.at_ms).collect();
    times.sort();
    assert_eq!(times[0], 1_000);
    assert!(times[1] > 1_000_000, "b's time is now");
    assert_eq!(
        restored.expire_emitted_keys(11_001),
        1,
        "a was emitted 10.001 s before"
    );
    assert_eq!(restored.expire_emitted_keys(11_002), 0, "no sweep due yet");
    // Forgotten: a later row of `a` is emitted again; `b`'s are not.
    restored
        .process_batch(0, rows(&[("a", 3, 40), ("b", 4, 40)]), &mut out)
        .unwrap();
    restored.finish(&mut out).unwrap();
    assert_eq!(emitted(&mut out), vec![("a".into(), 3)]);
    let mut plain = keep_first();
    assert_eq!(
        plain.expire_emitted_keys(u64::MAX),
        0,
        "no TTL: kept for ever"
    );
}

/// The emitted keys and when, in key order, for comparing two operators' state.
fn emitted_keys(op: &KeepFirstOperator) -> Vec<(Box<[u8]>, u64)> {
    let mut keys: Vec<(Box<[u8]>, u64)> = op
        .emitted
        .iter()
        .map(|(k, e)| (k.clone(), e.at_ms))
        .collect();
    keys.sort();
    keys
}

#[tokio::test]
async fn incremental_checkpoints_restore_what_a_full_one_would() {
    let ttl = Some(std::time::Duration::from_secs(1));
    let (mut deltas, mut removals) = (0, 0);
    for seed in 0..6u64 {
        let mut harness = crate::operators::test_checkpoints::StoreHarness::new("deduplicate");
        let mut rng = XorShift::new(seed);
        let mut op = keep_first().with_state_ttl(ttl);
        let mut out = Output::default();
        let mut time = 0i64;
        for step in 1..=45u64 {
            let names: Vec<String> = (0..rng.below(40))
                .map(|_| format!("k{}", rng.below(3000)))
                .collect();
            let data: Vec<(&str, i64, i64)> = names
                .iter()
                .map(|k| (k.as_str(), step as i64, time + rng.below(5) as i64))
                .collect();
            op.process_batch(0, rows(&data), &mut out).unwrap();
            time += 5;
            op.process_watermark(Watermark::EventTime(time * MS), &mut out)
                .unwrap();
            out.drain();
            // Some keys were emitted long ago (processing time): the TTL forgets them.
            if rng.below(6) == 0 {
                for e in op.emitted.values_mut().filter(|e| e.at_ms % 7 == 0) {
                    e.at_ms = 1;
                }
                op.ttl = Some(IdleSweep::new(std::time::Duration::from_secs(1)));
                op.expire_emitted_keys(1_000_000);
            }
            if step % 3 != 0 {
                continue;
            }
            let state = op.snapshot_at(&harness.barrier(step)).unwrap();
            // One checkpoint in five is not stored: the next one's base is older.
            let stored = rng.below(5) != 0;
            let Some(loaded) = harness.store(step, state, EMITTED_TABLE, stored).await else {
                continue;
            };
            let mut restored = keep_first().with_state_ttl(ttl);
            restored.restore(loaded).unwrap();
            assert_eq!(
                emitted_keys(&restored),
                emitted_keys(&op),
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
    assert!(removals > 0, "no delta forgot a key");
}
