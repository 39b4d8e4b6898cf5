//! SESSION windows: which keys sessions are kept per, and `GROUP BY … window_start,
//! window_end` directly over `SESSION(…)` translated into one incremental session aggregate.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{Aggregate, Expr, LogicalPlan};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::utils::collect_columns;

use laketide_engine::operators::{SessionAggregate, SessionAggregation};

use super::{Stream, Translator, WindowColumns, arrow_schema};
use crate::error::Result;
use crate::window_functions::{WindowKind, WindowedTable};

impl Translator<'_> {
    /// The key columns of a SESSION window over `input` (by name and index): its key
    /// arguments, or without them the aggregate's GROUP BY keys (which must then be columns).
    pub(crate) fn session_keys(
        &self,
        windowed: &WindowedTable,
        keys: &[String],
        input: &Schema,
    ) -> Result<(Vec<String>, Vec<usize>)> {
        let keys: Vec<String> = match (&self.session_keys_hint, keys.is_empty()) {
            (Some(hint), true) => hint
                .iter()
                .map(|e| match e {
                    Expr::Column(c) if input.index_of(&c.name).is_ok() => Ok(c.name.clone()),
                    other => Err(self.err(format!(
                        "SESSION without key arguments keeps sessions per GROUP BY key, but `{other}` is not a column of `{input}`; pass the keys explicitly: SESSION({input}, {time}, gap, key, …)",
                        input = windowed.input,
                        time = windowed.time_column
                    ))),
                })
                .collect::<Result<_>>()?,
            _ => keys.to_vec(),
        };
        let indices = keys
            .iter()
            .map(|k| {
                input
                    .index_of(k)
                    .map_err(|_| self.err(format!("no column `{k}`")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((keys, indices))
    }

    /// `agg` as one [`SessionAggregate`] when it groups a SESSION window of a source table
    /// directly (no filter in between; `window_start`/`window_end` only as plain GROUP BY
    /// columns). `None` for any other shape: sessions are then assigned first and their rows
    /// aggregated as windows. Creates no node unless it returns a stream.
    pub(crate) fn fused_session(&mut self, agg: &Aggregate) -> Result<Option<Stream>> {
        let LogicalPlan::TableScan(scan) = agg.input.as_ref() else {
            return Ok(None);
        };
        let provider = source_as_provider(&scan.source).map_err(|e| self.df(e))?;
        let Some(windowed) = provider.downcast_ref::<WindowedTable>() else {
            return Ok(None);
        };
        let WindowKind::Session { gap, keys } = &windowed.kind else {
            return Ok(None);
        };
        let is_source = self.sources.view_plan(&windowed.input).is_none();
        if !scan.filters.is_empty() || !is_source || !self.sources.has_event_time(&windowed.input) {
            return Ok(None);
        }
        if agg
            .group_expr
            .iter()
            .any(|e| matches!(e, Expr::GroupingSet(_)))
        {
            return Ok(None);
        }
        let full = provider.schema();
        let n = full.fields().len() - 2;
        let input = Arc::new(Schema::new(full.fields()[..n].to_vec()));
        let Ok(time_column) = input.index_of(&windowed.time_column) else {
            return Ok(None);
        };
        let projected = &scan.projected_schema;
        let position = |i: usize| match &scan.projection {
            Some(p) => p.iter().position(|x| *x == i),
            None => Some(i),
        };
        let window = WindowColumns {
            session: true,
            start: position(n),
            end: position(n + 1),
        };
        let group_of = |idx: Option<usize>| {
            let idx = idx?;
            let (q, f) = projected.qualified_field(idx);
            agg.group_expr.iter().position(|e| {
                matches!(e, Expr::Column(c) if c.name == *f.name() && (c.relation.is_none() || c.relation.as_ref() == q))
            })
        };
        let Some(end_group) = group_of(window.end) else {
            return Ok(None);
        };
        let start_group = group_of(window.start);
        let group_exprs = agg
            .group_expr
            .iter()
            .map(|e| self.physical(e, projected))
            .collect::<Result<Vec<_>>>()?;
        let aggregates = self.aggregate_specs(agg, projected)?;
        // Only the GROUP BY columns window_start/window_end may read the window columns: the
        // session's bounds are known when it closes, not per row.
        let window_positions: HashSet<usize> =
            [window.start, window.end].into_iter().flatten().collect();
        let reads_window = |e: &Arc<dyn PhysicalExpr>| {
            collect_columns(e)
                .iter()
                .any(|c| window_positions.contains(&c.index()))
        };
        let other_groups_read_window = group_exprs
            .iter()
            .enumerate()
            .filter(|(g, _)| *g != end_group && Some(*g) != start_group)
            .any(|(_, e)| reads_window(e));
        let aggregates_read_window = aggregates.iter().any(|a| {
            a.function.expressions().iter().any(&reads_window)
                || a.function.order_bys().iter().any(|o| reads_window(&o.expr))
                || a.filter.as_ref().is_some_and(&reads_window)
        });
        if other_groups_read_window || aggregates_read_window {
            return Ok(None);
        }
        let hint = super::aggregate::non_window_groups(agg);
        let outer = self.session_keys_hint.replace(hint);
        let keys = self.session_keys(windowed, keys, &input);
        self.session_keys_hint = outer;
        let (key_names, key_columns) = keys?;
        let op = SessionAggregate::new(SessionAggregation {
            input: input.clone(),
            time_column,
            gap_nanos: *gap,
            key_columns,
            projection: scan.projection.clone(),
            group_exprs,
            start_group,
            end_group,
            aggregates,
            output_schema: arrow_schema(&agg.schema),
        })?;
        let source = self
            .sources
            .source_node(self.dataflow, &windowed.input, self.location)?;
        if self.dataflow.schema(source).fields() != input.fields() {
            return Err(self.err(format!(
                "internal: the SESSION input schema differs from `{}`'s",
                windowed.input
            )));
        }
        let description = format!(
            "session gap {}ms keys [{}] on {}, {}",
            gap / 1_000_000,
            key_names.join(", "),
            windowed.time_column,
            Self::aggregate_description(agg)
        );
        let node = self.operator("session_aggregate", description, Box::new(op), vec![source])?;
        Ok(Some(Stream {
            node,
            schema: agg.schema.clone(),
            event_time: true,
            window: Some(WindowColumns {
                session: true,
                start: start_group,
                end: Some(end_group),
            }),
            // Closed sessions go out before the watermark passes their end (it is held).
            time_column: Some(end_group),
        }))
    }
}
