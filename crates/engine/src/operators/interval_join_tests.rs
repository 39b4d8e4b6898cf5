//! Unit tests of the interval join, against a nested-loop join of all rows.
use super::*;
use crate::message::Message;
use crate::operators::test_rng::XorShift;
use datafusion::arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{
    DataType, Field, Int64Type, Schema, TimeUnit, TimestampMillisecondType,
};
use datafusion::logical_expr::Operator as BinaryOp;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::scalar::ScalarValue;

const MS: i64 = 1_000_000;

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, None)
}

/// Both sides: (key, id, ts).
fn side_schema(prefix: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(format!("{prefix}_key"), DataType::Utf8, true),
        Field::new(format!("{prefix}_id"), DataType::Int64, false),
        Field::new(format!("{prefix}_ts"), ts(), true),
    ]))
}

fn output(kind: JoinKind) -> SchemaRef {
    if kind.left_only() {
        return side_schema("l");
    }
    let fields: Vec<Field> = [side_schema("l"), side_schema("r")]
        .iter()
        .enumerate()
        .flat_map(|(side, s)| {
            let nullable = kind.keeps_unmatched(1 - side);
            (s.fields().iter())
                .map(|f| {
                    f.as_ref()
                        .clone()
                        .with_nullable(f.is_nullable() || nullable)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// `l.ts - r.ts` within [lower, upper] ms; with `odd_ids`, only pairs whose ids sum to an odd
/// number pass the filter.
fn join(kind: JoinKind, lower: i64, upper: i64, odd_ids: bool) -> IntervalJoin {
    let key = |side: &str| -> Vec<Arc<dyn PhysicalExpr>> {
        vec![Arc::new(Column::new(&format!("{side}_key"), 0))]
    };
    let filter: Option<Arc<dyn PhysicalExpr>> = odd_ids.then(|| {
        let sum = Arc::new(BinaryExpr::new(
            Arc::new(Column::new("l_id", 1)),
            BinaryOp::Plus,
            Arc::new(Column::new("r_id", 4)),
        ));
        let modulo = Arc::new(BinaryExpr::new(
            sum,
            BinaryOp::Modulo,
            Arc::new(Literal::new(ScalarValue::Int64(Some(2)))),
        ));
        Arc::new(BinaryExpr::new(
            modulo,
            BinaryOp::Eq,
            Arc::new(Literal::new(ScalarValue::Int64(Some(1)))),
        )) as Arc<dyn PhysicalExpr>
    });
    IntervalJoin::new(IntervalJoinSpec {
        inputs: [side_schema("l"), side_schema("r")],
        keys: [key("l"), key("r")],
        time_columns: Some([2, 2]),
        lower: lower * MS,
        upper: upper * MS,
        filter,
        kind,
        output: output(kind),
    })
    .unwrap()
}

type In = (Option<&'static str>, i64, i64);

fn batch(prefix: &str, rows: &[(Option<String>, i64, i64)]) -> RecordBatch {
    RecordBatch::try_new(
        side_schema(prefix),
        vec![
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(TimestampMillisecondArray::from_iter_values(
                rows.iter().map(|r| r.2),
            )),
        ],
    )
    .unwrap()
}

fn owned(rows: &[In]) -> Vec<(Option<String>, i64, i64)> {
    rows.iter()
        .map(|(k, id, t)| (k.map(String::from), *id, *t))
        .collect()
}

/// (left id, right id) of each output row; `None` for a padded side.
type Pair = (Option<i64>, Option<i64>);

fn pairs(out: &mut Output) -> (Vec<Pair>, Vec<i64>) {
    let (mut found, mut marks) = (Vec::new(), Vec::new());
    for m in out.drain() {
        match m {
            Message::Batch(b) => {
                let l = b.column(1).as_primitive::<Int64Type>();
                // A semi or anti join emits the left columns only.
                let r = (b.num_columns() == 6).then(|| b.column(4).as_primitive::<Int64Type>());
                for i in 0..b.num_rows() {
                    let get = |a: &datafusion::arrow::array::Int64Array| {
                        a.is_valid(i).then(|| a.value(i))
                    };
                    found.push((get(l), r.and_then(get)));
                }
                let lt = b.column(2).as_primitive::<TimestampMillisecondType>();
                assert_eq!(lt.len(), b.num_rows());
            }
            Message::Watermark(Watermark::EventTime(t)) => marks.push(t),
            _ => {}
        }
    }
    (found, marks)
}

/// What a batch join of all rows gives.
fn nested_loop(
    left: &[(Option<String>, i64, i64)],
    right: &[(Option<String>, i64, i64)],
    kind: JoinKind,
    (lower, upper): (i64, i64),
    odd_ids: bool,
) -> Vec<Pair> {
    let matches = |l: &(Option<String>, i64, i64), r: &(Option<String>, i64, i64)| {
        l.0.is_some()
            && l.0 == r.0
            && (lower..=upper).contains(&(l.2 - r.2))
            && (!odd_ids || (l.1 + r.1) % 2 == 1)
    };
    let mut found = Vec::new();
    if kind.left_only() {
        let semi = kind == JoinKind::LeftSemi;
        for l in left
            .iter()
            .filter(|l| right.iter().any(|r| matches(l, r)) == semi)
        {
            found.push((Some(l.1), None));
        }
        found.sort();
        return found;
    }
    for l in left {
        for r in right {
            if matches(l, r) {
                found.push((Some(l.1), Some(r.1)));
            }
        }
    }
    if kind.keeps_unmatched(0) {
        for l in left.iter().filter(|l| !right.iter().any(|r| matches(l, r))) {
            found.push((Some(l.1), None));
        }
    }
    if kind.keeps_unmatched(1) {
        for r in right.iter().filter(|r| !left.iter().any(|l| matches(l, r))) {
            found.push((None, Some(r.1)));
        }
    }
    found.sort();
    found
}

/// Random rows of one side: times rising with up to 20 ms of disorder, a few NULL keys.
fn random_side(rng: &mut XorShift, n: usize, first_id: i64) -> Vec<(Option<String>, i64, i64)> {
    let mut clock = 1_000;
    (0..n)
        .map(|i| {
            clock += rng.below(4) as i64;
            let key = match rng.below(12) {
                0 => None,
                k => Some(format!("k{}", k % 5)),
            };
            let t = clock + rng.below(20) as i64;
            (key, first_id + i as i64, t)
        })
        .collect()
}

/// Feeds both sides in random interleaved batches, each side's watermark 25 ms behind its
/// largest time (so no row is late), snapshotting into a fresh operator at `restore_at`.
fn run(
    kind: JoinKind,
    bounds: (i64, i64),
    odd_ids: bool,
    seed: u64,
    restore_at: Option<usize>,
) -> (Vec<Pair>, Vec<Pair>) {
    let mut rng = XorShift::new(seed);
    let left = random_side(&mut rng, 400, 0);
    let right = random_side(&mut rng, 300, 10_000);
    let expected = nested_loop(&left, &right, kind, bounds, odd_ids);
    let mut op = join(kind, bounds.0, bounds.1, odd_ids);
    let mut out = Output::default();
    let mut found = Vec::new();
    let (mut at, mut max) = ([0usize; 2], [0i64; 2]);
    let sides = [&left, &right];
    let mut step = 0;
    while at[0] < left.len() || at[1] < right.len() {
        let side = if at[0] == left.len() {
            1
        } else if at[1] == right.len() {
            0
        } else {
            rng.below(2) as usize
        };
        let n = 1 + rng.below(15) as usize;
        let rows = &sides[side][at[side]..(at[side] + n).min(sides[side].len())];
        at[side] += rows.len();
        max[side] = max[side].max(rows.iter().map(|r| r.2).max().unwrap());
        let prefix = ["l", "r"][side];
        op.process_batch(side, batch(prefix, rows), &mut out)
            .unwrap();
        let w = Watermark::EventTime((max[side] - 25) * MS);
        op.process_input_watermark(side, w, &mut out).unwrap();
        op.process_watermark(w, &mut out).unwrap();
        let (mut rows, marks) = pairs(&mut out);
        found.append(&mut rows);
        assert!(
            marks.windows(2).all(|m| m[0] < m[1]),
            "monotonic: {marks:?}"
        );
        step += 1;
        if restore_at == Some(step) {
            let state = op.snapshot().unwrap();
            op = join(kind, bounds.0, bounds.1, odd_ids);
            op.restore(state).unwrap();
        }
    }
    op.finish(&mut out).unwrap();
    found.extend(pairs(&mut out).0);
    found.sort();
    (found, expected)
}

#[test]
fn every_join_kind_and_bound_gives_the_nested_loop_join() {
    let kinds = [
        JoinKind::Inner,
        JoinKind::Left,
        JoinKind::Right,
        JoinKind::Full,
        JoinKind::LeftSemi,
        JoinKind::LeftAnti,
    ];
    for (seed, bounds) in [(1, (-10, 0)), (2, (0, 30)), (3, (-5, 5)), (4, (3, 3))] {
        for kind in kinds {
            for odd_ids in [false, true] {
                for restore_at in [None, Some(7), Some(30)] {
                    let (found, expected) = run(kind, bounds, odd_ids, seed, restore_at);
                    assert!(!expected.is_empty());
                    assert!(
                        kind.left_only() || expected.iter().any(|p| p.0.is_some() && p.1.is_some())
                    );
                    assert_eq!(
                        found, expected,
                        "{kind:?} within {bounds:?} ms, filter {odd_ids}, seed {seed}, restored at {restore_at:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn rows_leave_the_state_when_the_other_sides_watermark_passes_them() {
    // l.ts - r.ts in [-10, 0] ms: a left row at 100 matches right rows in [100, 110].
    let mut op = join(JoinKind::Left, -10, 0, false);
    let mut out = Output::default();
    op.process_batch(0, batch("l", &owned(&[(Some("a"), 1, 100)])), &mut out)
        .unwrap();
    op.process_input_watermark(1, Watermark::EventTime(109 * MS), &mut out)
        .unwrap();
    assert_eq!(op.kept_rows(), (1, 0), "a right row at 110 can still match");
    op.process_input_watermark(1, Watermark::EventTime(110 * MS), &mut out)
        .unwrap();
    assert_eq!(op.kept_rows(), (0, 0));
    assert_eq!(
        pairs(&mut out).0,
        vec![(Some(1), None)],
        "unmatched, padded"
    );
    // A right row is kept until the left watermark passes its time (upper bound 0).
    op.process_batch(1, batch("r", &owned(&[(Some("a"), 2, 200)])), &mut out)
        .unwrap();
    op.process_input_watermark(0, Watermark::EventTime(199 * MS), &mut out)
        .unwrap();
    assert_eq!(op.kept_rows(), (0, 1));
    op.process_input_watermark(0, Watermark::EventTime(200 * MS), &mut out)
        .unwrap();
    assert_eq!(
        op.kept_rows(),
        (0, 0),
        "a right row is not padded in a LEFT join"
    );
    assert!(pairs(&mut out).0.is_empty());
}

#[test]
fn late_rows_are_dropped_and_the_watermark_is_held_by_the_bounds() {
    let mut op = join(JoinKind::Inner, -10, 5, false);
    let mut out = Output::default();
    op.process_input_watermark(0, Watermark::EventTime(100 * MS), &mut out)
        .unwrap();
    op.process_input_watermark(1, Watermark::EventTime(100 * MS), &mut out)
        .unwrap();
    op.process_watermark(Watermark::EventTime(100 * MS), &mut out)
        .unwrap();
    // Kept left rows are after 100 - 10; kept right rows after 100 - 5.
    assert_eq!(pairs(&mut out).1, vec![90 * MS]);
    op.process_batch(
        0,
        batch("l", &owned(&[(Some("a"), 1, 100), (Some("a"), 2, 101)])),
        &mut out,
    )
    .unwrap();
    let (late, _) = out.take_counters();
    assert_eq!(late, 1, "the row at the watermark is late");
    assert_eq!(op.kept_rows(), (1, 0));
    op.process_input_watermark(0, Watermark::Idle, &mut out)
        .unwrap();
    op.process_input_watermark(1, Watermark::EventTime(120 * MS), &mut out)
        .unwrap();
    op.process_watermark(Watermark::EventTime(120 * MS), &mut out)
        .unwrap();
    assert_eq!(
        pairs(&mut out).1,
        vec![110 * MS],
        "the idle left side no longer holds it"
    );
}

/// A join without a time bound (a regular inner join).
fn regular_join() -> IntervalJoin {
    let key = |side: &str| -> Vec<Arc<dyn PhysicalExpr>> {
        vec![Arc::new(Column::new(&format!("{side}_key"), 0))]
    };
    IntervalJoin::new(IntervalJoinSpec {
        inputs: [side_schema("l"), side_schema("r")],
        keys: [key("l"), key("r")],
        time_columns: None,
        lower: i64::MIN,
        upper: i64::MAX,
        filter: None,
        kind: JoinKind::Inner,
        output: output(JoinKind::Inner),
    })
    .unwrap()
}

#[test]
fn a_regular_join_keeps_rows_of_any_age_until_the_state_ttl() {
    let mut op = regular_join();
    let mut out = Output::default();
    op.process_batch(0, batch("l", &owned(&[(Some("a"), 1, 100)])), &mut out)
        .unwrap();
    // Watermarks far past the row neither drop it nor go downstream.
    for input in 0..2 {
        op.process_input_watermark(input, Watermark::EventTime(900_000 * MS), &mut out)
            .unwrap();
    }
    op.process_watermark(Watermark::EventTime(900_000 * MS), &mut out)
        .unwrap();
    op.process_batch(1, batch("r", &owned(&[(Some("a"), 2, 5)])), &mut out)
        .unwrap();
    let (found, marks) = pairs(&mut out);
    assert_eq!(
        found,
        vec![(Some(1), Some(2))],
        "no time bound: any ages match"
    );
    assert!(
        marks.is_empty(),
        "a regular join's output has no event time"
    );
    assert_eq!(op.kept_rows(), (1, 1));
    op.on_tick(&mut out).unwrap();
    assert_eq!(op.kept_rows(), (1, 1), "kept forever without a TTL");
    let mut op = regular_join().with_state_ttl(Some(std::time::Duration::ZERO));
    op.process_batch(0, batch("l", &owned(&[(Some("a"), 1, 100)])), &mut out)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    op.on_tick(&mut out).unwrap();
    assert_eq!(op.kept_rows(), (0, 0), "dropped after the TTL");
    op.process_batch(1, batch("r", &owned(&[(Some("a"), 2, 5)])), &mut out)
        .unwrap();
    assert!(pairs(&mut out).0.is_empty(), "the left row is gone");
    let state = op.snapshot().unwrap();
    let mut restored = regular_join();
    restored.restore(state).unwrap();
    assert_eq!(
        restored.kept_rows(),
        (0, 1),
        "the right row is in the checkpoint"
    );
}

/// A regular (no time bound) join of `kind`, with the odd-ids filter if asked.
fn regular_join_of(kind: JoinKind, odd_ids: bool) -> IntervalJoin {
    let bounded = join(kind, 0, 0, odd_ids);
    IntervalJoin::new(IntervalJoinSpec {
        time_columns: None,
        lower: i64::MIN,
        upper: i64::MAX,
        ..bounded.spec.clone()
    })
    .unwrap()
}

/// Applies the changelog in `out` to `current`: `+I` adds a pair, `-D` takes out an equal
/// one, which must be there.
fn apply_changes(out: &mut Output, current: &mut Vec<Pair>) {
    use crate::changelog::{CHANGE_COLUMN, ChangeKind};
    for m in out.drain() {
        let Message::Batch(b) = m else { continue };
        // The change column is last (an append-only semi join has none); a semi or anti
        // join has the left columns only.
        let last = b.num_columns() - 1;
        let changes = b.schema().field(last).name() == CHANGE_COLUMN;
        let data = b.num_columns() - usize::from(changes);
        let l = b.column(1).as_primitive::<Int64Type>();
        let r = (data == 6).then(|| b.column(4).as_primitive::<Int64Type>());
        for i in 0..b.num_rows() {
            let get = |a: &Int64Array| a.is_valid(i).then(|| a.value(i));
            let pair = (get(l), r.and_then(get));
            let kind = match changes {
                true => {
                    let codes = b
                        .column(last)
                        .as_primitive::<datafusion::arrow::datatypes::Int8Type>();
                    ChangeKind::from_code(codes.value(i))
                }
                false => Some(ChangeKind::Insert),
            };
            match kind {
                Some(ChangeKind::Insert) => current.push(pair),
                Some(ChangeKind::Delete) => {
                    let at = current.iter().position(|p| *p == pair);
                    let at = at.unwrap_or_else(|| panic!("-D {pair:?} of a row not emitted"));
                    current.swap_remove(at);
                }
                other => panic!("unexpected change {other:?}"),
            }
        }
    }
}

#[test]
fn an_outer_join_without_a_time_bound_updates_to_the_nested_loop_join() {
    let kinds = [
        JoinKind::Left,
        JoinKind::Right,
        JoinKind::Full,
        JoinKind::LeftSemi,
        JoinKind::LeftAnti,
    ];
    for kind in kinds {
        for odd_ids in [false, true] {
            for (seed, restore_at) in [(11, None), (12, Some(9)), (13, Some(40))] {
                let mut rng = XorShift::new(seed);
                let left = random_side(&mut rng, 300, 0);
                let right = random_side(&mut rng, 250, 10_000);
                let expected = nested_loop(&left, &right, kind, (i64::MIN, i64::MAX), odd_ids);
                let mut op = regular_join_of(kind, odd_ids);
                let mode = op.output_mode(&[StreamMode::AppendOnly, StreamMode::AppendOnly]);
                // A semi join's rows are final at their first match: append-only.
                assert_eq!(mode.unwrap().is_updating(), kind != JoinKind::LeftSemi);
                let (mut out, mut current) = (Output::default(), Vec::new());
                let (mut at, sides) = ([0usize; 2], [&left, &right]);
                let mut step = 0;
                while at[0] < left.len() || at[1] < right.len() {
                    let side = match (at[0] == left.len(), at[1] == right.len()) {
                        (true, _) => 1,
                        (_, true) => 0,
                        _ => rng.below(2) as usize,
                    };
                    let n = 1 + rng.below(12) as usize;
                    let rows = &sides[side][at[side]..(at[side] + n).min(sides[side].len())];
                    at[side] += rows.len();
                    op.process_batch(side, batch(["l", "r"][side], rows), &mut out)
                        .unwrap();
                    apply_changes(&mut out, &mut current);
                    step += 1;
                    if restore_at == Some(step) {
                        let state = op.snapshot().unwrap();
                        op = regular_join_of(kind, odd_ids);
                        op.restore(state).unwrap();
                    }
                }
                op.finish(&mut out).unwrap();
                apply_changes(&mut out, &mut current);
                current.sort();
                assert_eq!(
                    current, expected,
                    "{kind:?}, filter {odd_ids}, seed {seed}, restored at {restore_at:?}"
                );
            }
        }
    }
}
