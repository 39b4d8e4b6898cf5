//! GROUP BY over an updating result (an aggregate of an aggregate): the aggregates that can
//! take retractions, over the rows' data columns.

use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{Aggregate, Expr};

use laketide_engine::operators::{RetractableFunction, RetractableSpec, RetractingAggregate};
use laketide_engine::{EngineError, schema_with_change};

use super::{Stream, Translator, arrow_schema};
use crate::error::Result;

impl Translator<'_> {
    /// `agg` over the updating stream `input`.
    pub(crate) fn retracting_aggregate(
        &mut self,
        agg: &Aggregate,
        input: Stream,
    ) -> Result<Stream> {
        let group_exprs = agg
            .group_expr
            .iter()
            .map(|e| self.physical(e, &input.schema))
            .collect::<Result<Vec<_>>>()?;
        let aggregates = agg
            .aggr_expr
            .iter()
            .map(|e| self.retractable(e, &input))
            .collect::<Result<Vec<_>>>()?;
        let output = schema_with_change(agg.schema.as_arrow());
        let op = RetractingAggregate::new(
            &arrow_schema(&input.schema),
            group_exprs,
            aggregates,
            output,
            self.update_interval,
        )
        .map_err(|e| match e {
            EngineError::User(message) => self.err(message),
            other => other.into(),
        })?;
        let signature = format!(
            "{} over an updating result (retractions subtract)",
            Self::aggregate_description(agg)
        );
        let description = format!(
            "{signature}, updating every {}ms",
            self.update_interval.as_millis()
        );
        let node = self.operator("aggregate", description, Box::new(op), vec![input.node])?;
        // The emission interval changes when results go out, not what the state holds.
        self.dataflow.set_state_signature(node, signature);
        Ok(Stream {
            node,
            schema: agg.schema.clone(),
            event_time: input.event_time,
            window: None,
            time_column: None,
        })
    }

    /// One aggregate expression as an aggregate that takes retractions, or a located error.
    fn retractable(&self, e: &Expr, input: &Stream) -> Result<RetractableSpec> {
        let Expr::AggregateFunction(AggregateFunction { func, params }) = e.clone().unalias()
        else {
            return Err(self.err(format!("`{e}` is not an aggregate")));
        };
        let name = func.name().to_ascii_lowercase();
        let function = match (name.as_str(), params.distinct) {
            ("count", false) => RetractableFunction::Count,
            ("count", true) => RetractableFunction::CountDistinct,
            ("sum", false) => RetractableFunction::Sum,
            ("avg", false) => RetractableFunction::Avg,
            ("min", _) => RetractableFunction::Min,
            ("max", _) => RetractableFunction::Max,
            _ => {
                return Err(self.err(format!(
                    "{}{} over an updating result (an aggregate of an aggregate) is not supported: count, count(DISTINCT), sum, avg, min and max are",
                    func.name(),
                    if params.distinct { "(DISTINCT …)" } else { "" }
                )));
            }
        };
        if !params.order_by.is_empty() {
            return Err(self.err(format!(
                "{}(… ORDER BY …) over an updating result is not supported",
                func.name()
            )));
        }
        let arg = match params.args.as_slice() {
            [] => None,
            [Expr::Literal(v, _)] if function == RetractableFunction::Count && !v.is_null() => None,
            [a] => Some(self.physical(a, &input.schema)?),
            _ => return Err(self.err(format!("{} takes one argument", func.name()))),
        };
        let filter = params
            .filter
            .as_ref()
            .map(|f| self.physical(f, &input.schema))
            .transpose()?;
        Ok(RetractableSpec {
            function,
            arg,
            filter,
        })
    }
}
