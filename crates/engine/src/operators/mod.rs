//! The built-in operators.

mod change_tracker;
mod filter;
mod grouped_state;
mod idle_sweep;
mod interval_join;
mod join_rows;
mod keep_first;
mod key_expiry;
mod lookup_join;
#[cfg(test)]
mod lookup_join_tests;
mod projection;
mod rank;
mod rank_rows;
mod result_store;
mod retractable;
mod retracting_aggregate;
mod retracting_state;
mod session_aggregate;
mod session_assign;
mod session_generations;
mod session_index;
mod session_state;
#[cfg(test)]
mod test_checkpoints;
#[cfg(test)]
mod test_rng;
mod union;
mod updating_aggregate;
mod updating_join;
mod window_aggregate;
mod window_assign;

pub use filter::FilterOperator;
pub use interval_join::{IntervalJoin, IntervalJoinSpec, JoinKind};
pub use keep_first::KeepFirstOperator;
pub use lookup_join::{LookupJoin, LookupJoinSpec};
pub use projection::ProjectionOperator;
pub use rank::{RankOperator, RankSpec};
pub use retractable::{RetractableFunction, RetractableSpec};
pub use retracting_aggregate::RetractingAggregate;
pub use session_aggregate::{SessionAggregate, SessionAggregation};
pub use session_assign::SessionAssign;
pub use union::UnionOperator;
pub use updating_aggregate::{DEFAULT_UPDATE_INTERVAL, UpdatingAggregate};
pub use updating_join::{UpdatingJoin, UpdatingJoinSpec};
pub use window_aggregate::{AggregateSpec, WindowAggregate};
pub use window_assign::{SlidingWindow, WindowAssign};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use std::sync::Arc;

/// Names of the columns that window table functions add.
pub const WINDOW_START: &str = "window_start";
/// See [`WINDOW_START`].
pub const WINDOW_END: &str = "window_end";

/// `input`'s fields followed by non-null `window_start` and `window_end` of `time_type`.
pub fn schema_with_window_columns(input: &Schema, time_type: &DataType) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = input.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(WINDOW_START, time_type.clone(), false)));
    fields.push(Arc::new(Field::new(WINDOW_END, time_type.clone(), false)));
    Arc::new(Schema::new_with_metadata(fields, input.metadata().clone()))
}
