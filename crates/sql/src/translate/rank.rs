//! Top-N and deduplication: a filter on the row number of `ROW_NUMBER() OVER (PARTITION BY …
//! ORDER BY …)` becomes one rank operator that keeps the first N rows of each partition.

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::expr::WindowFunction;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{BinaryExpr, Expr, Filter, LogicalPlan, Operator, Window};
use datafusion::physical_expr::create_physical_sort_exprs;

use laketide_engine::operators::{KeepFirstOperator, RankOperator, RankSpec};

use super::aggregate::humantime_short;
use super::{Stream, Translator, arrow_schema};
use crate::error::Result;

/// A rank the translator is looking for: the window node (by its schema) whose row number a
/// filter limits, and the limit.
#[derive(Debug, Clone)]
pub(crate) struct PendingRank {
    window: datafusion::common::DFSchemaRef,
    limit: usize,
}

/// `rn <= N`, `rn < N`, `rn = 1` (and the same with the sides swapped): the filtered column
/// and the number of rows kept.
fn rank_limit(predicate: &Expr) -> Option<(String, usize)> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = predicate else {
        return None;
    };
    let (column, value, op) = match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Literal(v, _)) => (c, v, *op),
        (Expr::Literal(v, _), Expr::Column(c)) => (c, v, op.swap()?),
        _ => return None,
    };
    let n = match value {
        ScalarValue::Int64(Some(n)) => *n,
        ScalarValue::UInt64(Some(n)) => i64::try_from(*n).ok()?,
        ScalarValue::Int32(Some(n)) => i64::from(*n),
        _ => return None,
    };
    let limit = match op {
        Operator::LtEq => n,
        Operator::Lt => n - 1,
        Operator::Eq if n == 1 => 1,
        _ => return None,
    };
    (limit >= 1).then(|| (column.name.clone(), limit as usize))
}

/// The window node under `plan` (through projections and aliases) whose single window
/// expression the column `name` of `plan` passes through unchanged.
fn window_of<'a>(plan: &'a LogicalPlan, name: &str) -> Option<&'a Window> {
    match plan {
        LogicalPlan::SubqueryAlias(a) => window_of(&a.input, name),
        LogicalPlan::Projection(p) => {
            let at = p.schema.fields().iter().position(|f| f.name() == name)?;
            match p.expr[at].clone().unalias() {
                Expr::Column(c) => window_of(&p.input, &c.name),
                _ => None,
            }
        }
        LogicalPlan::Window(w) => {
            let last = w.schema.fields().last()?;
            (w.window_expr.len() == 1 && last.name() == name).then_some(w)
        }
        _ => None,
    }
}

impl Translator<'_> {
    /// The input column of the event time when `order_by` is exactly a source's event-time
    /// column ascending and the rank keeps one row (keep-first deduplication, append-only).
    fn keep_first_by_event_time(
        &self,
        order_by: &[datafusion::logical_expr::SortExpr],
        input: &Stream,
        spec: &RankSpec,
    ) -> Option<usize> {
        let [first] = order_by else {
            return None;
        };
        let Expr::Column(c) = &first.expr else {
            return None;
        };
        if spec.limit != 1 || !first.asc || spec.window_end.is_some() || !input.event_time {
            return None;
        }
        let table = c.relation.as_ref()?.table().to_string();
        if self.sources.event_time_column(&table)? != c.name {
            return None;
        }
        input.schema.index_of_column(c).ok()
    }

    /// `f` as a Top-N or deduplication, if it filters the row number of a window.
    pub(crate) fn rank_filter(&mut self, f: &Filter) -> Result<Option<Stream>> {
        let Some((column, limit)) = rank_limit(&f.predicate) else {
            return Ok(None);
        };
        let Some(window) = window_of(&f.input, &column) else {
            return Ok(None);
        };
        let outer = self.pending_rank.replace(PendingRank {
            window: window.schema.clone(),
            limit,
        });
        let stream = self.translate(&f.input);
        self.pending_rank = outer;
        stream.map(Some)
    }

    /// The window node `w` as the rank a filter above it asked for, if it did.
    pub(crate) fn rank_window(&mut self, w: &Window) -> Result<Option<Stream>> {
        let Some(pending) = self
            .pending_rank
            .take()
            .filter(|p| Arc::ptr_eq(&p.window, &w.schema))
        else {
            return Ok(None);
        };
        let Expr::WindowFunction(function) = w.window_expr[0].clone().unalias() else {
            return Ok(None);
        };
        let WindowFunction { fun, params } = *function;
        if fun.name() != "row_number" {
            return Err(self.err(format!(
                "{}() OVER (…) is not supported in streaming queries; ROW_NUMBER() filtered by `rn <= N` or `rn = 1` is (Top-N, deduplication)",
                fun.name()
            )));
        }
        if params.order_by.is_empty() {
            return Err(self.err(
                "ROW_NUMBER() OVER (…) needs an ORDER BY in a streaming query: it says which rows of each partition are kept",
            ));
        }
        let input = self.translate(&w.input)?;
        let partition = params
            .partition_by
            .iter()
            .map(|e| self.physical(e, &input.schema))
            .collect::<Result<Vec<_>>>()?;
        let state = self.ctx.state();
        let order = create_physical_sort_exprs(
            &params.order_by,
            &input.schema,
            state.execution_props(),
            &PhysicalPlanningContext::default(),
        )
        .map_err(|e| self.df(e))?;
        // Partitioned by a window's end: ranks are final when the window closes.
        let window_end = input.window.and_then(|wc| wc.end).filter(|end| {
            let (q, f) = input.schema.qualified_field(*end);
            params.partition_by.iter().any(|e| {
                matches!(e, Expr::Column(c) if c.name == *f.name() && (c.relation.is_none() || c.relation.as_ref() == q))
            })
        });
        let rank_field = w.schema.fields().last().map(|f| f.as_ref().clone());
        let spec = RankSpec {
            partition,
            order,
            limit: pending.limit,
            window_end,
        };
        if let Some(time) = self.keep_first_by_event_time(&params.order_by, &input, &spec) {
            let op = KeepFirstOperator::new(
                arrow_schema(&input.schema),
                &spec,
                time,
                rank_field.as_ref(),
            )?
            .with_state_ttl(self.state_ttl);
            let signature = format!(
                "keep the first row of each partition by {}, emitted when the watermark passes it",
                params.order_by[0]
            );
            let mut description = signature.clone();
            if let Some(ttl) = self.state_ttl {
                description.push_str(&format!(
                    ", keys emitted {} ago forgotten",
                    humantime_short(ttl)
                ));
            }
            let node = self.operator("deduplicate", description, Box::new(op), vec![input.node])?;
            // A changed TTL keeps the state (it says how long keys stay, not what they mean).
            self.dataflow.set_state_signature(node, signature);
            return Ok(Some(Stream {
                node,
                schema: w.schema.clone(),
                window: input.window,
                event_time: input.event_time,
                time_column: input.time_column,
            }));
        }
        let op = RankOperator::new(arrow_schema(&input.schema), spec, rank_field.as_ref())?
            .with_state_ttl(self.state_ttl);
        let mut description = format!(
            "keep the first {} of each partition by [{}]{}",
            pending.limit,
            params
                .order_by
                .iter()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if window_end.is_some() {
                ", emitted when its window closes"
            } else {
                ""
            }
        );
        let signature = description.clone();
        if let (Some(ttl), None) = (self.state_ttl, window_end) {
            description.push_str(&format!(
                ", partitions idle for {} dropped",
                humantime_short(ttl)
            ));
        }
        let node = self.operator("rank", description, Box::new(op), vec![input.node])?;
        // A changed TTL keeps the state (it says how long partitions stay, not what they mean).
        self.dataflow.set_state_signature(node, signature);
        Ok(Some(Stream {
            node,
            schema: w.schema.clone(),
            window: input.window,
            event_time: input.event_time,
            time_column: input.time_column,
        }))
    }
}
