//! Unit tests of the session aggregate.
use super::*;
use crate::message::Message;
use crate::operators::test_rng::XorShift;
use datafusion::arrow::array::{StringArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{Int64Type, TimeUnit, TimestampMillisecondType};
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::physical_expr::aggregate::AggregateExprBuilder;
use datafusion::physical_expr::expressions::Column;

const MS: i64 = 1_000_000;

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

fn input() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Int64, false),
        Field::new("ts", ts(), true),
    ]))
}

fn rows(data: &[(&str, i64, Option<i64>)]) -> RecordBatch {
    RecordBatch::try_new(
        input(),
        vec![
            Arc::new(StringArray::from_iter_values(data.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(data.iter().map(|r| r.1))),
            Arc::new(TimestampMillisecondArray::from(
                data.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

/// Sessions of gap 10 ms per key: key, window_start, window_end, sum(value), count(value).
fn operator() -> SessionAggregate {
    let op = SessionAggregate::new(plan()).unwrap();
    assert!(op.key_groups.is_some(), "grouped by session alone");
    op
}

/// [`operator`] interning the key values of its groups.
fn interning_operator() -> SessionAggregate {
    let op = SessionAggregate::interning_key_values(plan()).unwrap();
    assert!(op.key_groups.is_none());
    op
}

fn plan() -> SessionAggregation {
    let windowed = super::super::schema_with_window_columns(&input(), &ts());
    let value: Arc<dyn PhysicalExpr> = Arc::new(Column::new("value", 1));
    let spec = |f, alias: &str| AggregateSpec {
        function: Arc::new(
            AggregateExprBuilder::new(f, vec![value.clone()])
                .schema(windowed.clone())
                .alias(alias)
                .build()
                .unwrap(),
        ),
        filter: None,
    };
    SessionAggregation {
        input: input(),
        time_column: 2,
        gap_nanos: 10 * MS,
        key_columns: vec![0],
        projection: None,
        group_exprs: vec![
            Arc::new(Column::new("key", 0)),
            Arc::new(Column::new("window_start", 3)),
            Arc::new(Column::new("window_end", 4)),
        ],
        start_group: Some(1),
        end_group: 2,
        aggregates: vec![spec(sum_udaf(), "total"), spec(count_udaf(), "n")],
        output_schema: Arc::new(Schema::new(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("window_start", ts(), false),
            Field::new("window_end", ts(), false),
            Field::new("total", DataType::Int64, true),
            Field::new("n", DataType::Int64, false),
        ])),
    }
}

type Row = (String, i64, i64, i64, i64);

/// The result rows and the watermarks in `out`.
fn drain(out: &mut Output) -> (Vec<Row>, Vec<i64>) {
    let (mut found, mut marks) = (Vec::new(), Vec::new());
    for m in out.drain() {
        match m {
            Message::Batch(b) => {
                let keys = b.column(0).as_string::<i32>();
                let starts = b.column(1).as_primitive::<TimestampMillisecondType>();
                let ends = b.column(2).as_primitive::<TimestampMillisecondType>();
                let totals = b.column(3).as_primitive::<Int64Type>();
                let counts = b.column(4).as_primitive::<Int64Type>();
                for i in 0..b.num_rows() {
                    found.push((
                        keys.value(i).to_string(),
                        starts.value(i),
                        ends.value(i),
                        totals.value(i),
                        counts.value(i),
                    ));
                }
            }
            Message::Watermark(Watermark::EventTime(t)) => marks.push(t / MS),
            _ => {}
        }
    }
    (found, marks)
}

fn row(key: &str, start: i64, end: i64, total: i64, n: i64) -> Row {
    (key.to_string(), start, end, total, n)
}

/// Random rows (key, value, time) over `keys` keys, times rising with up to 5 ms of
/// disorder, in batches of 1 to 40 rows.
fn random_batches(seed: u64, rows: usize, keys: u64) -> Vec<Vec<(String, i64, i64)>> {
    let mut rng = XorShift(seed);
    let mut clock = 1_000;
    let mut all = Vec::new();
    let mut batch = Vec::new();
    for i in 0..rows {
        clock += rng.below(3) as i64;
        let t = clock - rng.below(6) as i64;
        batch.push((format!("k{}", rng.below(keys)), i as i64, t));
        if rng.below(20) == 0 {
            all.push(std::mem::take(&mut batch));
        }
    }
    all.push(batch);
    all
}

/// Runs the batches through `op` with a watermark 6 ms behind the largest time after each
/// batch (so no row is late), snapshotting into a new operator after batch `restore_at`.
fn run_random(
    op: SessionAggregate,
    batches: &[Vec<(String, i64, i64)>],
    restore_at: Option<(usize, usize)>,
) -> Vec<Row> {
    run_random_into(op, batches, restore_at, operator)
}

/// [`run_random`], restoring into an operator made by `restored`.
fn run_random_into(
    mut op: SessionAggregate,
    batches: &[Vec<(String, i64, i64)>],
    restore_at: Option<(usize, usize)>,
    restored: fn() -> SessionAggregate,
) -> Vec<Row> {
    let mut out = Output::default();
    let mut found = Vec::new();
    let mut max_t = 0;
    for (n, batch) in batches.iter().enumerate() {
        let data: Vec<(&str, i64, Option<i64>)> = batch
            .iter()
            .map(|(k, v, t)| (k.as_str(), *v, Some(*t)))
            .collect();
        max_t = batch.iter().map(|r| r.2).max().unwrap_or(max_t).max(max_t);
        op.process_batch(0, rows(&data), &mut out).unwrap();
        op.process_watermark(Watermark::EventTime((max_t - 6) * MS), &mut out)
            .unwrap();
        if n % 7 == 0 {
            op.on_tick(&mut out).unwrap();
        }
        if let Some((at, size)) = restore_at
            && at == n
        {
            let state = op.snapshot().unwrap();
            op = restored();
            op.set_generation_size(size);
            op.restore(state).unwrap();
        }
        found.extend(drain(&mut out).0);
    }
    op.process_watermark(Watermark::END, &mut out).unwrap();
    found.extend(drain(&mut out).0);
    found.sort();
    found
}

/// Sessions computed from all rows at once: per key, sorted by time, a new session where
/// a row comes at or after the current one's end.
fn batch_sessions(batches: &[Vec<(String, i64, i64)>]) -> Vec<Row> {
    let mut by_key: std::collections::BTreeMap<&str, Vec<(i64, i64)>> = Default::default();
    for (k, v, t) in batches.iter().flatten() {
        by_key.entry(k).or_default().push((*t, *v));
    }
    let mut sessions = Vec::new();
    for (k, mut rows) in by_key {
        rows.sort();
        let mut current: Option<Row> = None;
        for (t, v) in rows {
            match &mut current {
                Some(s) if t < s.2 => {
                    s.2 = t + 10;
                    s.3 += v;
                    s.4 += 1;
                }
                _ => {
                    sessions.extend(current.take());
                    current = Some(row(k, t, t + 10, v, 1));
                }
            }
        }
        sessions.extend(current);
    }
    sessions.sort();
    sessions
}

#[test]
fn any_generation_size_and_a_restore_at_any_point_give_the_batch_sessions() {
    for (seed, keys) in [(7, 40), (99, 8), (2024, 3)] {
        let batches = random_batches(seed, 3_000, keys);
        let expected = batch_sessions(&batches);
        assert!(expected.len() > 100, "many sessions: {}", expected.len());
        for size in [1, 2, 5, 8192] {
            let mut op = operator();
            op.set_generation_size(size);
            assert_eq!(
                run_random(op, &batches, None),
                expected,
                "seed {seed}, generations of {size}"
            );
            let mut op = operator();
            op.set_generation_size(size);
            let at = batches.len() / 2;
            assert_eq!(
                run_random(op, &batches, Some((at, size))),
                expected,
                "seed {seed}, generations of {size}, restored after batch {at}"
            );
        }
    }
}

#[test]
fn groups_by_session_alone_and_interned_key_values_agree_and_share_checkpoints() {
    let makers: [(&str, fn() -> SessionAggregate); 2] =
        [("by session", operator), ("interning", interning_operator)];
    for (seed, keys) in [(11, 30), (5, 4)] {
        let batches = random_batches(seed, 2_000, keys);
        let expected = batch_sessions(&batches);
        for (from, make) in makers {
            for (into, restored) in makers {
                for at in [3, batches.len() / 2] {
                    let mut op = make();
                    op.set_generation_size(4);
                    assert_eq!(
                        run_random_into(op, &batches, Some((at, 4)), restored),
                        expected,
                        "seed {seed}: {from}, restored after batch {at} {into}"
                    );
                }
            }
        }
    }
}

#[test]
fn emitting_takes_out_the_closing_sessions_not_every_open_one() {
    // 100 new sessions per ms with a gap of 10 ms: about a thousand open at a time, in
    // generations of 64; checkpoints now and then, and a restore half way.
    let mut op = operator();
    op.set_generation_size(64);
    let mut out = Output::default();
    let (mut sessions, mut taken_before) = (0, 0);
    for ms in 0..400i64 {
        let keys: Vec<String> = (0..100).map(|k| format!("k{ms}-{k}")).collect();
        let data: Vec<(&str, i64, Option<i64>)> =
            keys.iter().map(|k| (k.as_str(), 1, Some(ms))).collect();
        op.process_batch(0, rows(&data), &mut out).unwrap();
        sessions += 100;
        op.process_watermark(Watermark::EventTime((ms - 1) * MS), &mut out)
            .unwrap();
        if ms % 50 == 25 {
            let state = op.snapshot().unwrap();
            if ms == 225 {
                taken_before = op.groups.taken();
                op = operator();
                op.set_generation_size(64);
                op.restore(state).unwrap();
            }
        }
    }
    drain(&mut out);
    let taken = taken_before + op.groups.taken();
    assert!(
        taken < 2 * sessions,
        "{taken} groups taken out for {sessions} sessions"
    );
}

#[test]
fn sessions_fold_rows_as_they_come_and_merge_across_batches() {
    let mut op = operator();
    let mut out = Output::default();
    op.process_batch(
        0,
        rows(&[
            ("a", 1, Some(100)),
            ("a", 2, Some(116)),
            ("b", 5, Some(101)),
        ]),
        &mut out,
    )
    .unwrap();
    assert_eq!(op.open_sessions(), 3);
    // 108 bridges a's sessions 100..110 and 116..126; 95 extends the merged one back.
    op.process_batch(
        0,
        rows(&[("a", 4, Some(108)), ("a", 8, Some(95))]),
        &mut out,
    )
    .unwrap();
    assert_eq!(op.open_sessions(), 2);
    op.process_watermark(Watermark::EventTime(111 * MS), &mut out)
        .unwrap();
    let (found, marks) = drain(&mut out);
    assert_eq!(found, vec![row("b", 101, 111, 5, 1)]);
    assert_eq!(marks, vec![111]);
    op.process_watermark(Watermark::END, &mut out).unwrap();
    let (found, _) = drain(&mut out);
    assert_eq!(found, vec![row("a", 95, 126, 15, 4)]);
}

#[test]
fn rows_whose_session_already_closed_and_rows_without_time_are_late() {
    let mut op = operator();
    let mut out = Output::default();
    op.process_watermark(Watermark::EventTime(100 * MS), &mut out)
        .unwrap();
    op.process_batch(
        0,
        rows(&[("a", 1, Some(90)), ("a", 2, Some(91)), ("a", 3, None)]),
        &mut out,
    )
    .unwrap();
    assert_eq!(out.take_counters().0, 2, "90 + 10 <= 100 and NULL");
    let late = out.take_late();
    assert_eq!(late[0].0.num_rows(), 2);
    op.finish(&mut out).unwrap();
    assert_eq!(drain(&mut out).0, vec![row("a", 91, 101, 2, 1)]);
}

#[test]
fn a_few_closed_sessions_of_many_wait_with_the_watermark_held_before_them() {
    let mut op = operator();
    let mut out = Output::default();
    let many: Vec<(String, i64, Option<i64>)> = (0..100)
        .map(|k| (format!("k{k}"), 1, Some(200 + k)))
        .collect();
    let many: Vec<(&str, i64, Option<i64>)> =
        many.iter().map(|(k, v, t)| (k.as_str(), *v, *t)).collect();
    op.process_batch(0, rows(&many), &mut out).unwrap();
    op.process_batch(0, rows(&[("early", 7, Some(100))]), &mut out)
        .unwrap();
    op.process_watermark(Watermark::EventTime(150 * MS), &mut out)
        .unwrap();
    let (found, marks) = drain(&mut out);
    assert!(found.is_empty(), "1 closed session of 101 waits");
    assert_eq!(
        marks,
        vec![109],
        "held just before the pending session's end"
    );
    std::thread::sleep(TICK_INTERVAL);
    op.on_tick(&mut out).unwrap();
    let (found, marks) = drain(&mut out);
    assert_eq!(found, vec![row("early", 100, 110, 7, 1)]);
    assert_eq!(marks, vec![150]);
}

#[test]
fn a_snapshot_restores_open_pending_and_merged_sessions_exactly() {
    let mut op = operator();
    let mut out = Output::default();
    let many: Vec<(String, i64, Option<i64>)> =
        (0..20).map(|k| (format!("k{k}"), k, Some(300))).collect();
    let many: Vec<(&str, i64, Option<i64>)> =
        many.iter().map(|(k, v, t)| (k.as_str(), *v, *t)).collect();
    op.process_batch(0, rows(&many), &mut out).unwrap();
    op.process_batch(
        0,
        rows(&[("a", 1, Some(100)), ("a", 2, Some(116))]),
        &mut out,
    )
    .unwrap();
    op.process_batch(0, rows(&[("a", 4, Some(108))]), &mut out)
        .unwrap(); // merges a's two sessions
    op.process_batch(0, rows(&[("p", 9, Some(50))]), &mut out)
        .unwrap();
    op.process_watermark(Watermark::EventTime(70 * MS), &mut out)
        .unwrap(); // p's session is pending
    drain(&mut out);
    let state = op.snapshot().unwrap();
    let mut restored = operator();
    restored.restore(state).unwrap();
    for o in [&mut op, &mut restored] {
        o.process_batch(
            0,
            rows(&[("a", 16, Some(125)), ("k3", 100, Some(305))]),
            &mut out,
        )
        .unwrap();
    }
    op.process_watermark(Watermark::END, &mut out).unwrap();
    let (original, _) = drain(&mut out);
    restored
        .process_watermark(Watermark::END, &mut out)
        .unwrap();
    let (again, _) = drain(&mut out);
    assert_eq!(again, original);
    assert!(original.contains(&row("p", 50, 60, 9, 1)));
    assert!(original.contains(&row("a", 100, 135, 23, 4)));
    assert!(original.contains(&row("k3", 300, 315, 103, 2)));
    assert_eq!(original.len(), 22);
}

/// A checkpoint of an earlier release: closed sessions waiting to be emitted were saved
/// without their keys (the groups' key columns hold them).
fn without_pending_keys(state: NodeState) -> NodeState {
    let sessions = state.table(SESSIONS_TABLE).unwrap().clone();
    let pending = sessions.column(4).as_boolean();
    let keys = sessions.column(1).as_binary::<i32>();
    let blanked: BinaryArray = (0..sessions.num_rows())
        .map(|i| {
            Some(if pending.value(i) {
                &[][..]
            } else {
                keys.value(i)
            })
        })
        .collect();
    let mut columns = sessions.columns().to_vec();
    columns[1] = Arc::new(blanked);
    let batch = RecordBatch::try_new(sessions.schema(), columns).unwrap();
    state.with_table(SESSIONS_TABLE, batch)
}

#[test]
fn closed_sessions_of_a_checkpoint_without_their_keys_get_them_from_their_groups() {
    let mut op = operator();
    let mut out = Output::default();
    op.process_batch(
        0,
        rows(&[
            ("a", 1, Some(100)),
            ("b", 2, Some(100)),
            ("c", 3, Some(300)),
        ]),
        &mut out,
    )
    .unwrap();
    op.process_watermark(Watermark::EventTime(120 * MS), &mut out)
        .unwrap(); // a and b closed; 2 of 3 are due, so they are emitted
    let (first, _) = drain(&mut out);
    assert_eq!(first.len(), 2);
    op.process_batch(
        0,
        rows(&[
            ("d", 4, Some(130)),
            ("e", 5, Some(400)),
            ("f", 6, Some(401)),
        ]),
        &mut out,
    )
    .unwrap();
    op.process_batch(
        0,
        rows(&[("g", 7, Some(402)), ("h", 8, Some(403))]),
        &mut out,
    )
    .unwrap();
    op.process_watermark(Watermark::EventTime(150 * MS), &mut out)
        .unwrap(); // d closed, 1 of 6: it waits
    assert!(drain(&mut out).0.is_empty(), "d waits");
    let state = without_pending_keys(op.snapshot().unwrap());
    let mut restored = operator();
    restored.restore(state).unwrap();
    restored
        .process_watermark(Watermark::END, &mut out)
        .unwrap();
    let (found, _) = drain(&mut out);
    let mut expected = vec![
        row("c", 300, 310, 3, 1),
        row("d", 130, 140, 4, 1),
        row("e", 400, 410, 5, 1),
        row("f", 401, 411, 6, 1),
        row("g", 402, 412, 7, 1),
        row("h", 403, 413, 8, 1),
    ];
    expected.sort();
    let mut found = found;
    found.sort();
    assert_eq!(found, expected);
}
