//! Windowed GROUP BY: a window aggregate over rows that carry their window.

use datafusion::common::DFSchema;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Aggregate, Expr};
use datafusion::physical_expr::aggregate::LoweredAggregateBuilder;

use laketide_engine::operators::{
    AggregateSpec, UpdatingAggregate, WINDOW_END, WINDOW_START, WindowAggregate,
};
use laketide_engine::schema_with_change;

use super::{Stream, Translator, WindowColumns, arrow_schema};
use crate::error::Result;

impl Translator<'_> {
    pub(crate) fn aggregate(&mut self, agg: &Aggregate) -> Result<Stream> {
        if let Some(fused) = self.fused_session(agg)? {
            return Ok(fused);
        }
        let hint = non_window_groups(agg);
        let outer_hint = self.session_keys_hint.replace(hint);
        let input = self.translate(&agg.input);
        self.session_keys_hint = outer_hint;
        let input = input?;
        let Some(window) = input.window else {
            return self.updating_aggregate(agg, input);
        };
        let input_schema = arrow_schema(&input.schema);
        let is_column = |e: &Expr, idx: usize| {
            let (q, f) = input.schema.qualified_field(idx);
            matches!(e, Expr::Column(c) if c.name == *f.name() && (c.relation.is_none() || c.relation.as_ref() == q))
        };
        if agg
            .group_expr
            .iter()
            .any(|e| matches!(e, Expr::GroupingSet(_)))
        {
            return Err(
                self.err("GROUPING SETS, ROLLUP and CUBE are not supported in streaming queries")
            );
        }
        let Some(end_group) = window
            .end
            .and_then(|end| agg.group_expr.iter().position(|e| is_column(e, end)))
        else {
            return Err(self.err(format!(
                "a windowed GROUP BY must include `{WINDOW_END}` (and usually `{WINDOW_START}`)"
            )));
        };
        let start_group = window
            .start
            .and_then(|s| agg.group_expr.iter().position(|e| is_column(e, s)));
        let group_exprs = agg
            .group_expr
            .iter()
            .map(|e| self.physical(e, &input.schema))
            .collect::<Result<Vec<_>>>()?;
        let aggregates = self.aggregate_specs(agg, &input.schema)?;
        let output = arrow_schema(&agg.schema);
        let description = Self::aggregate_description(agg);
        let op = WindowAggregate::new(&input_schema, group_exprs, end_group, aggregates, output)?;
        let node = self.operator(
            "window_aggregate",
            description,
            Box::new(op),
            vec![input.node],
        )?;
        Ok(Stream {
            node,
            schema: agg.schema.clone(),
            event_time: input.event_time,
            window: Some(WindowColumns {
                session: input.window.is_some_and(|w| w.session),
                start: start_group,
                end: Some(end_group),
            }),
            // A window is emitted when the watermark passes its end, before that watermark
            // goes on, so every row after a watermark has a later window_end.
            time_column: Some(end_group),
        })
    }

    /// GROUP BY without a window: an updating result, one current row per key.
    fn updating_aggregate(&mut self, agg: &Aggregate, input: Stream) -> Result<Stream> {
        if agg
            .group_expr
            .iter()
            .any(|e| matches!(e, Expr::GroupingSet(_)))
        {
            return Err(
                self.err("GROUPING SETS, ROLLUP and CUBE are not supported in streaming queries")
            );
        }
        if self.dataflow.mode(input.node).is_updating() {
            return self.retracting_aggregate(agg, input);
        }
        let group_exprs = agg
            .group_expr
            .iter()
            .map(|e| self.physical(e, &input.schema))
            .collect::<Result<Vec<_>>>()?;
        let aggregates = self.aggregate_specs(agg, &input.schema)?;
        let output = schema_with_change(agg.schema.as_arrow());
        let op = UpdatingAggregate::new(
            &arrow_schema(&input.schema),
            group_exprs,
            aggregates,
            output,
            self.update_interval,
        )?
        .with_state_ttl(self.state_ttl);
        let signature = Self::aggregate_description(agg);
        let mut description = format!(
            "{signature}, updating every {}",
            humantime_short(self.update_interval)
        );
        if let Some(ttl) = self.state_ttl {
            description.push_str(&format!(", keys idle for {} dropped", humantime_short(ttl)));
        }
        let node = self.operator("aggregate", description, Box::new(op), vec![input.node])?;
        // The emission interval and the TTL change when results go out and how long keys
        // stay, not what the saved state means: changing them keeps the state.
        self.dataflow.set_state_signature(node, signature);
        Ok(Stream {
            node,
            schema: agg.schema.clone(),
            event_time: input.event_time,
            window: None,
            time_column: None,
        })
    }

    /// The physical aggregates of `agg`, over rows of `input`.
    pub(crate) fn aggregate_specs(
        &self,
        agg: &Aggregate,
        input: &DFSchema,
    ) -> Result<Vec<AggregateSpec>> {
        let input_schema = arrow_schema(input);
        let mut aggregates = Vec::with_capacity(agg.aggr_expr.len());
        let state = self.ctx.state();
        let planning = PhysicalPlanningContext::default();
        for e in &agg.aggr_expr {
            let lowered = LoweredAggregateBuilder::new(
                e,
                input,
                &input_schema,
                state.execution_props(),
                &planning,
            )
            .build()
            .map_err(|err| self.df(err))?;
            aggregates.push(AggregateSpec {
                function: lowered.aggregate,
                filter: lowered.filter,
            });
        }
        Ok(aggregates)
    }

    /// `group by [...] compute [...]` for `explain`.
    pub(crate) fn aggregate_description(agg: &Aggregate) -> String {
        format!(
            "group by [{}] compute [{}]",
            agg.group_expr
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            agg.aggr_expr
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// The GROUP BY expressions other than `window_start` and `window_end`: the keys a SESSION
/// without key arguments keeps its sessions per.
pub(crate) fn non_window_groups(agg: &Aggregate) -> Vec<Expr> {
    agg.group_expr
        .iter()
        .filter(|e| !matches!(e, Expr::Column(c) if c.name == WINDOW_START || c.name == WINDOW_END))
        .cloned()
        .collect()
}

/// `1s`, `250ms`: an interval for `explain`.
pub(super) fn humantime_short(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
