//! Unit tests of the updating join: random changelogs on both sides, fed in random
//! interleaved batches (with restores), must leave the join of the two sides' final rows.
use super::*;
use crate::changelog::CHANGE_COLUMN;
use crate::message::Message;
use crate::operators::test_rng::XorShift;
use datafusion::arrow::array::{Array, Int8Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int8Type, Schema};
use datafusion::logical_expr::Operator as BinaryOp;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::scalar::ScalarValue;

/// A side's data columns: (key, id).
fn side_schema(prefix: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(format!("{prefix}_key"), DataType::Utf8, true),
        Field::new(format!("{prefix}_id"), DataType::Int64, false),
    ]))
}

fn with_change(schema: &SchemaRef) -> SchemaRef {
    schema_with_change(schema)
}

fn join(kind: JoinKind, updating: [bool; 2], odd_ids: bool) -> UpdatingJoin {
    let key = |side: &str| -> Vec<Arc<dyn PhysicalExpr>> {
        vec![Arc::new(Column::new(&format!("{side}_key"), 0))]
    };
    let filter: Option<Arc<dyn PhysicalExpr>> = odd_ids.then(|| {
        let sum = Arc::new(BinaryExpr::new(
            Arc::new(Column::new("l_id", 1)),
            BinaryOp::Plus,
            Arc::new(Column::new("r_id", 3)),
        ));
        let two = Arc::new(Literal::new(ScalarValue::Int64(Some(2))));
        let one = Arc::new(Literal::new(ScalarValue::Int64(Some(1))));
        let modulo = Arc::new(BinaryExpr::new(sum, BinaryOp::Modulo, two));
        Arc::new(BinaryExpr::new(modulo, BinaryOp::Eq, one)) as Arc<dyn PhysicalExpr>
    });
    let sides = match kind.left_only() {
        true => vec![side_schema("l")],
        false => vec![side_schema("l"), side_schema("r")],
    };
    let fields: Vec<Field> = sides
        .iter()
        .flat_map(|s| {
            s.fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>()
        })
        .collect();
    UpdatingJoin::new(UpdatingJoinSpec {
        inputs: [side_schema("l"), side_schema("r")],
        updating,
        keys: [key("l"), key("r")],
        filter,
        kind,
        output: Arc::new(Schema::new(fields)),
    })
    .unwrap()
}

/// One change of a side's rows: a row (key, id) inserted or retracted.
type Change = (Option<String>, i64, bool);

/// Random changes of one side: inserts of new rows, and (if `updating`) retractions of rows
/// inserted before; returns the changes and the rows left at the end.
fn random_changes(
    rng: &mut XorShift,
    n: usize,
    first_id: i64,
    updating: bool,
) -> (Vec<Change>, Vec<(Option<String>, i64)>) {
    let mut changes = Vec::new();
    let mut current: Vec<(Option<String>, i64)> = Vec::new();
    for i in 0..n {
        if updating && !current.is_empty() && rng.below(3) == 0 {
            let at = rng.below(current.len() as u64) as usize;
            let (key, id) = current.swap_remove(at);
            changes.push((key, id, true));
        } else {
            let key = match rng.below(10) {
                0 => None,
                k => Some(format!("k{}", k % 4)),
            };
            let id = first_id + i as i64;
            current.push((key.clone(), id));
            changes.push((key, id, false));
        }
    }
    (changes, current)
}

fn batch(prefix: &str, changes: &[Change], updating: bool) -> RecordBatch {
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(
            changes.iter().map(|c| c.0.clone()).collect::<Vec<_>>(),
        )),
        Arc::new(Int64Array::from_iter_values(changes.iter().map(|c| c.1))),
    ];
    let schema = match updating {
        true => {
            let kinds = changes.iter().map(|c| match c.2 {
                true => ChangeKind::Delete.code(),
                false => ChangeKind::Insert.code(),
            });
            columns.push(Arc::new(Int8Array::from_iter_values(kinds)));
            with_change(&side_schema(prefix))
        }
        false => side_schema(prefix),
    };
    RecordBatch::try_new(schema, columns).unwrap()
}

/// (left id, right id) of an output row; `None` for a padded side.
type Pair = (Option<i64>, Option<i64>);

/// Applies the changelog in `out` to `current`; every retraction must find its row.
fn apply(out: &mut Output, current: &mut Vec<Pair>) {
    for m in out.drain() {
        let Message::Batch(b) = m else { continue };
        // The change column is last; a semi or anti join has the left columns only.
        let last = b.num_columns() - 1;
        assert_eq!(b.schema().field(last).name(), CHANGE_COLUMN);
        let l = b.column(1).as_primitive::<Int64Type>();
        let r = (last == 4).then(|| b.column(3).as_primitive::<Int64Type>());
        let kinds = b.column(last).as_primitive::<Int8Type>();
        for i in 0..b.num_rows() {
            let get = |a: &Int64Array| a.is_valid(i).then(|| a.value(i));
            let pair = (get(l), r.and_then(get));
            let kind = ChangeKind::from_code(kinds.value(i)).unwrap();
            if kind.is_retraction() {
                let at = current.iter().position(|p| *p == pair);
                let at = at.unwrap_or_else(|| panic!("{kind:?} {pair:?} of a row not there"));
                current.swap_remove(at);
            } else {
                current.push(pair);
            }
        }
    }
}

/// The join of the final rows, by nested loops.
fn nested_loop(
    left: &[(Option<String>, i64)],
    right: &[(Option<String>, i64)],
    kind: JoinKind,
    odd_ids: bool,
) -> Vec<Pair> {
    let matches = |l: &(Option<String>, i64), r: &(Option<String>, i64)| {
        l.0.is_some() && l.0 == r.0 && (!odd_ids || (l.1 + r.1) % 2 == 1)
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

#[test]
fn random_changelogs_leave_the_join_of_the_final_rows() {
    let kinds = [
        JoinKind::LeftSemi,
        JoinKind::LeftAnti,
        JoinKind::Inner,
        JoinKind::Left,
        JoinKind::Right,
        JoinKind::Full,
    ];
    let updating_sides = [[true, true], [true, false], [false, true]];
    for kind in kinds {
        for updating in updating_sides {
            for odd_ids in [false, true] {
                for (seed, restore_at) in [(21, None), (22, Some(6)), (23, Some(25))] {
                    let mut rng = XorShift::new(seed);
                    let (left, left_rows) = random_changes(&mut rng, 250, 0, updating[0]);
                    let (right, right_rows) = random_changes(&mut rng, 200, 10_000, updating[1]);
                    let expected = nested_loop(&left_rows, &right_rows, kind, odd_ids);
                    let mut op = join(kind, updating, odd_ids);
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
                        let changes = &sides[side][at[side]..(at[side] + n).min(sides[side].len())];
                        at[side] += changes.len();
                        let b = batch(["l", "r"][side], changes, updating[side]);
                        op.process_batch(side, b, &mut out).unwrap();
                        apply(&mut out, &mut current);
                        step += 1;
                        if restore_at == Some(step) {
                            let state = op.snapshot().unwrap();
                            op = join(kind, updating, odd_ids);
                            op.restore(state).unwrap();
                        }
                    }
                    current.sort();
                    assert_eq!(
                        current, expected,
                        "{kind:?}, updating {updating:?}, filter {odd_ids}, seed {seed}, restored at {restore_at:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_retraction_of_a_row_never_seen_retracts_nothing() {
    let mut op = join(JoinKind::Left, [true, true], false);
    let mut out = Output::default();
    let gone = vec![(Some("a".to_string()), 1, true)];
    op.process_batch(0, batch("l", &gone, true), &mut out)
        .unwrap();
    assert!(out.drain().next().is_none());
    assert_eq!(op.kept_rows(), (0, 0));
    assert!(
        op.output_mode(&[StreamMode::AppendOnly, StreamMode::AppendOnly])
            .is_err(),
        "the inputs' modes are checked"
    );
}
