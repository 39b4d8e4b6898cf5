//! JOIN of two streams: the interval join (equal keys plus lower and upper bounds between the
//! two sides' event times), the window join (equal keys and equal `window_end` of two
//! windowed streams: an interval join on `window_end` with both bounds 0), and the regular
//! join (equal keys only; an outer one gives an updating result), INNER, LEFT, RIGHT and
//! FULL OUTER. Lookup joins are in `lookup_join.rs`.

use std::sync::Arc;

use datafusion::common::{Column, NullEquality, ScalarValue};
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Join, JoinType, Operator};
use datafusion::physical_expr::PhysicalExpr;
use laketide_engine::operators::{
    IntervalJoin, IntervalJoinSpec, JoinKind, UpdatingJoin, UpdatingJoinSpec,
};

use super::{Stream, Translator, arrow_schema};
use crate::error::Result;

/// The two time columns of a join, and bounds found so far on `left - right` (nanoseconds).
#[derive(Clone, Copy)]
struct TimeBounds<'a> {
    left: &'a Column,
    right: &'a Column,
    /// The difference of two rows' times is a multiple of this (the finer unit).
    step: i64,
    lower: Option<i64>,
    upper: Option<i64>,
}

impl TimeBounds<'_> {
    /// Takes `conjunct` as a bound if it compares the two time columns (each plus or minus a
    /// constant interval); returns whether it did.
    fn take(&mut self, conjunct: &Expr) -> bool {
        match conjunct {
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => {
                let ge = binary(expr, Operator::GtEq, low);
                let le = binary(expr, Operator::LtEq, high);
                // Both halves or neither: a half-used BETWEEN would be applied twice.
                let mut trial = *self;
                if trial.take(&ge) && trial.take(&le) {
                    *self = trial;
                    return true;
                }
                false
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => self.comparison(left, *op, right),
            _ => false,
        }
    }

    fn comparison(&mut self, a: &Expr, op: Operator, b: &Expr) -> bool {
        let (Some((ca, oa)), Some((cb, ob))) = (shifted_column(a), shifted_column(b)) else {
            return false;
        };
        // a + oa (op) b + ob, as left - right (op) k.
        let (op, k) = if ca == *self.left && cb == *self.right {
            (op, ob - oa)
        } else if ca == *self.right && cb == *self.left {
            match op.swap() {
                Some(swapped) => (swapped, oa - ob),
                None => return false,
            }
        } else {
            return false;
        };
        let step = self.step;
        match op {
            Operator::GtEq => self.raise_lower(k),
            Operator::Gt => self.raise_lower((k.div_euclid(step) + 1) * step),
            Operator::LtEq => self.lower_upper(k),
            Operator::Lt => self.lower_upper(((k + step - 1).div_euclid(step) - 1) * step),
            _ => return false,
        }
        true
    }

    fn raise_lower(&mut self, k: i64) {
        self.lower = Some(self.lower.map_or(k, |l| l.max(k)));
    }

    fn lower_upper(&mut self, k: i64) {
        self.upper = Some(self.upper.map_or(k, |u| u.min(k)));
    }
}

fn binary(a: &Expr, op: Operator, b: &Expr) -> Expr {
    Expr::BinaryExpr(BinaryExpr::new(
        Box::new(a.clone()),
        op,
        Box::new(b.clone()),
    ))
}

/// `column`, `column + interval` or `column - interval` (an interval of fixed length), as
/// the column and the offset in nanoseconds.
fn shifted_column(e: &Expr) -> Option<(Column, i64)> {
    match e {
        Expr::Column(c) => Some((c.clone(), 0)),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (c, base) = shifted_column(left)?;
            let Expr::Literal(value, _) = right.as_ref() else {
                return None;
            };
            let nanos = fixed_interval_nanos(value)?;
            match op {
                Operator::Plus => Some((c, base + nanos)),
                Operator::Minus => Some((c, base - nanos)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The length of an interval literal without months (whose length varies), in nanoseconds.
fn fixed_interval_nanos(value: &ScalarValue) -> Option<i64> {
    const DAY: i64 = 86_400_000_000_000;
    match value {
        ScalarValue::IntervalMonthDayNano(Some(v)) if v.months == 0 => {
            Some(v.days as i64 * DAY + v.nanoseconds)
        }
        ScalarValue::IntervalDayTime(Some(v)) => {
            Some(v.days as i64 * DAY + v.milliseconds as i64 * 1_000_000)
        }
        ScalarValue::DurationSecond(Some(v)) => Some(v * 1_000_000_000),
        ScalarValue::DurationMillisecond(Some(v)) => Some(v * 1_000_000),
        ScalarValue::DurationMicrosecond(Some(v)) => Some(v * 1_000),
        ScalarValue::DurationNanosecond(Some(v)) => Some(*v),
        _ => None,
    }
}

/// What an interval join matches on besides the keys: `left time - right time` within
/// `bounds` (nanoseconds) on `time_columns`, and the other conditions (`rest`).
struct JoinOn {
    /// "interval join", "window join" or "join" (a regular one), for `explain`.
    what: &'static str,
    /// `None` for a regular join (no time bound).
    time_columns: Option<(usize, usize)>,
    bounds: (i64, i64),
    rest: Vec<Expr>,
}

/// How the join's time bound should be written, for error messages.
const TIME_BOUND_HINT: &str = "join two streams on equal keys and a time bound between their event-time (WATERMARK) columns, for example `ON a.user_id = b.user_id AND a.ts BETWEEN b.ts - INTERVAL '10' SECOND AND b.ts`, or two windowed streams on equal keys and equal `window_end`";

impl Translator<'_> {
    /// A JOIN of two streams (see the module documentation).
    pub(crate) fn join(&mut self, join: &Join) -> Result<Stream> {
        if let Some(lookup) = self.lookup_side(&join.right) {
            return self.lookup_join(join, lookup);
        }
        if let Some(name) = self
            .lookup_side(&join.left)
            .map(|l| l.scan.table_name.to_string())
        {
            return Err(self.err(format!(
                "the lookup table `{name}` must be the right side of the JOIN: write `stream JOIN {name} FOR SYSTEM_TIME AS OF …`"
            )));
        }
        let kind = match join.join_type {
            JoinType::Inner => JoinKind::Inner,
            JoinType::Left => JoinKind::Left,
            JoinType::Right => JoinKind::Right,
            JoinType::Full => JoinKind::Full,
            JoinType::LeftSemi => JoinKind::LeftSemi,
            JoinType::LeftAnti => JoinKind::LeftAnti,
            other => {
                return Err(self.err(format!(
                    "{other} joins are not supported in streaming queries yet; use INNER, LEFT, RIGHT or FULL OUTER JOIN, or EXISTS / NOT EXISTS with the stream to keep in the outer query"
                )));
            }
        };
        if join.null_aware {
            return Err(self.err(
                "NOT IN (subquery) is not supported in streaming joins (a NULL arriving later in the subquery would empty the result); write NOT EXISTS (… WHERE inner.key = outer.key)",
            ));
        }
        if join.null_equality == NullEquality::NullEqualsNull {
            return Err(self.err(
                "join keys compared with IS NOT DISTINCT FROM are not supported in streaming joins; compare them with =",
            ));
        }
        let left = self.translate(&join.left)?;
        let right = self.translate(&join.right)?;
        if join.on.is_empty() {
            return Err(self.err(format!(
                "this JOIN has no equality between the two sides: {TIME_BOUND_HINT}"
            )));
        }
        let all_conditions: Vec<Expr> = (join.filter.iter())
            .flat_map(split_conjunction)
            .cloned()
            .collect();
        let updating = [&left, &right].map(|s| self.dataflow.mode(s.node).is_updating());
        if updating.contains(&true) {
            return self.updating_join(join, kind, [left, right], updating, all_conditions);
        }
        let event_time = left.event_time && right.event_time;
        if let Some(window_ends) = self
            .window_ends(join, &left, &right)?
            .filter(|_| event_time)
        {
            let on = JoinOn {
                what: "window join",
                time_columns: Some(window_ends),
                bounds: (0, 0),
                rest: all_conditions,
            };
            return self.interval_join(join, kind, [left, right], on);
        }
        if let Some(on) = Self::time_bounds(join, &left, &right).filter(|_| event_time) {
            return self.interval_join(join, kind, [left, right], on);
        }
        // An outer one updates: a row goes out padded with NULLs and is retracted when its
        // first match comes.
        let on = JoinOn {
            what: "join",
            time_columns: None,
            bounds: (i64::MIN, i64::MAX),
            rest: all_conditions,
        };
        self.interval_join(join, kind, [left, right], on)
    }

    /// The time bound of a join between its inputs' event-time columns, and its other
    /// conditions; `None` unless it has both a lower and an upper bound.
    fn time_bounds(join: &Join, left: &Stream, right: &Stream) -> Option<JoinOn> {
        let (left_time, right_time) = (left.time_column?, right.time_column?);
        let left_column = Column::from(left.schema.qualified_field(left_time));
        let right_column = Column::from(right.schema.qualified_field(right_time));
        let step = [(&left, left_time), (&right, right_time)]
            .iter()
            .map(|(s, i)| time_step(s.schema.field(*i).data_type()))
            .min()
            .unwrap_or(1);
        let mut bounds = TimeBounds {
            left: &left_column,
            right: &right_column,
            step,
            lower: None,
            upper: None,
        };
        let rest: Vec<Expr> = join
            .filter
            .iter()
            .flat_map(split_conjunction)
            .filter(|c| !bounds.take(c))
            .cloned()
            .collect();
        Some(JoinOn {
            what: "interval join",
            time_columns: Some((left_time, right_time)),
            bounds: (bounds.lower?, bounds.upper?),
            rest,
        })
    }

    /// The `window_end` columns of two windowed inputs that the join's keys equate (a window
    /// join), if they do; an error for session windows.
    fn window_ends(
        &self,
        join: &Join,
        left: &Stream,
        right: &Stream,
    ) -> Result<Option<(usize, usize)>> {
        let (Some(lw), Some(rw)) = (left.window, right.window) else {
            return Ok(None);
        };
        let (Some(left_end), Some(right_end)) = (lw.end, rw.end) else {
            return Ok(None);
        };
        let is = |e: &Expr, stream: &Stream, at: usize| {
            let (q, f) = stream.schema.qualified_field(at);
            matches!(e, Expr::Column(c) if c.name == *f.name() && (c.relation.is_none() || c.relation.as_ref() == q))
        };
        let equal_ends =
            (join.on.iter()).any(|(l, r)| is(l, left, left_end) && is(r, right, right_end));
        if equal_ends && (lw.session || rw.session) {
            return Err(self.err(
                "SESSION windows cannot be joined on their window_end (the sessions of two streams do not share bounds); join the rows with a time bound instead",
            ));
        }
        Ok(equal_ends.then_some((left_end, right_end)))
    }

    /// The interval join of the two inputs on the join's keys and `on`.
    fn interval_join(
        &mut self,
        join: &Join,
        kind: JoinKind,
        [left, right]: [Stream; 2],
        on: JoinOn,
    ) -> Result<Stream> {
        let JoinOn {
            what,
            time_columns,
            bounds: (lower, upper),
            rest,
        } = on;
        let (keys, filter) = self.keys_and_filter(join, [&left, &right], &rest)?;
        let spec = IntervalJoinSpec {
            inputs: [arrow_schema(&left.schema), arrow_schema(&right.schema)],
            keys,
            time_columns: time_columns.map(|(l, r)| [l, r]),
            lower,
            upper,
            filter,
            kind,
            output: arrow_schema(&join.schema),
        };
        let op = IntervalJoin::new(spec)
            .map_err(|e| self.err(e.to_string()))?
            .with_state_ttl(self.state_ttl);
        let bound = match time_columns {
            Some((l, r)) => format!(
                ", {} - {} in [{}, {}]",
                Column::from(left.schema.qualified_field(l)),
                Column::from(right.schema.qualified_field(r)),
                duration_text(lower),
                duration_text(upper)
            ),
            None => String::new(),
        };
        let signature = format!(
            "{what} {} on [{}]{bound}{}",
            join.join_type,
            keys_text(join),
            where_text(rest)
        );
        let updating =
            time_columns.is_none() && !matches!(kind, JoinKind::Inner | JoinKind::LeftSemi);
        let signature = match updating {
            true => format!("{signature}, updating"),
            false => signature,
        };
        let description = match time_columns {
            None => self.with_ttl_text(&signature),
            Some(_) => signature.clone(),
        };
        let node = self.operator(
            &what.replace(' ', "_"),
            description,
            Box::new(op),
            vec![left.node, right.node],
        )?;
        // The TTL says how long rows stay, not what they mean: changing it keeps the state.
        self.dataflow.set_state_signature(node, signature);
        Ok(Stream {
            node,
            schema: join.schema.clone(),
            window: None,
            // A bounded join holds its watermark so that no output row is behind it on the
            // left columns (which come first); a regular join's rows can be of any age.
            event_time: time_columns.is_some(),
            time_column: time_columns.map(|(l, _)| l),
        })
    }
}

/// Each side's equi-join keys, and the other conditions of a joined pair.
type KeysAndFilter = (
    [Vec<Arc<dyn PhysicalExpr>>; 2],
    Option<Arc<dyn PhysicalExpr>>,
);

impl Translator<'_> {
    /// The join's keys over each side's columns, and `conditions` over a pair's (both sides'
    /// columns: a semi or anti join emits only the left's, but its filter sees both).
    fn keys_and_filter(
        &self,
        join: &Join,
        [left, right]: [&Stream; 2],
        conditions: &[Expr],
    ) -> Result<KeysAndFilter> {
        let keys = [
            (join.on.iter())
                .map(|(l, _)| self.physical(l, &left.schema))
                .collect::<Result<Vec<_>>>()?,
            (join.on.iter())
                .map(|(_, r)| self.physical(r, &right.schema))
                .collect::<Result<Vec<_>>>()?,
        ];
        let pairs = left.schema.join(&right.schema).map_err(|e| self.df(e))?;
        let filter = match conjunction(conditions.iter().cloned()) {
            Some(f) => Some(self.physical(&f, &pairs)?),
            None => None,
        };
        Ok((keys, filter))
    }

    /// A regular join of which one or both inputs update (a GROUP BY without a window, a
    /// Top-N): an updating result, whatever the join kind.
    fn updating_join(
        &mut self,
        join: &Join,
        kind: JoinKind,
        [left, right]: [Stream; 2],
        updating: [bool; 2],
        conditions: Vec<Expr>,
    ) -> Result<Stream> {
        let (keys, filter) = self.keys_and_filter(join, [&left, &right], &conditions)?;
        let op = UpdatingJoin::new(UpdatingJoinSpec {
            inputs: [arrow_schema(&left.schema), arrow_schema(&right.schema)],
            updating,
            keys,
            filter,
            kind,
            output: arrow_schema(&join.schema),
        })
        .map_err(|e| self.err(e.to_string()))?
        .with_state_ttl(self.state_ttl);
        let signature = format!(
            "updating join {} on [{}]{}",
            join.join_type,
            keys_text(join),
            where_text(conditions)
        );
        let description = self.with_ttl_text(&signature);
        let node = self.operator(
            "updating_join",
            description,
            Box::new(op),
            vec![left.node, right.node],
        )?;
        self.dataflow.set_state_signature(node, signature);
        Ok(Stream {
            node,
            schema: join.schema.clone(),
            window: None,
            event_time: false,
            time_column: None,
        })
    }
}

impl Translator<'_> {
    /// A join without a time bound's description: `signature` and how long rows are kept.
    fn with_ttl_text(&self, signature: &str) -> String {
        match self.state_ttl {
            Some(ttl) => format!(
                "{signature}, rows kept {}s after they arrive",
                ttl.as_secs_f64()
            ),
            None => format!("{signature}, every row kept (no state TTL)"),
        }
    }
}

/// The join's equalities, as `explain` shows them: `l = r, …`.
pub(super) fn keys_text(join: &Join) -> String {
    (join.on.iter())
        .map(|(l, r)| format!("{l} = {r}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `, where <conditions>`, or nothing.
fn where_text(conditions: Vec<Expr>) -> String {
    match conjunction(conditions) {
        Some(f) => format!(", where {f}"),
        None => String::new(),
    }
}

/// Nanoseconds per unit of a timestamp column (1 if not a timestamp).
fn time_step(data_type: &datafusion::arrow::datatypes::DataType) -> i64 {
    use datafusion::arrow::datatypes::{DataType, TimeUnit};
    match data_type {
        DataType::Timestamp(TimeUnit::Second, _) => 1_000_000_000,
        DataType::Timestamp(TimeUnit::Millisecond, _) => 1_000_000,
        DataType::Timestamp(TimeUnit::Microsecond, _) => 1_000,
        _ => 1,
    }
}

/// A bound in nanoseconds as text (`-10s`, `250ms`).
fn duration_text(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let d = std::time::Duration::from_nanos(nanos.unsigned_abs());
    format!("{sign}{d:?}")
}
