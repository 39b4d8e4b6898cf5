//! A source table's event-time options: `idle_timeout`, `max_future` and
//! `late_dead_letter_path`.

use std::time::Duration;

use laketide_connectors::{DEFAULT_MAX_FUTURE, EventTimeBound, parse_duration};

use crate::ddl::TableDef;
use crate::error::{Result, SqlError};

/// Default idle timeout of a source's splits (`idle_timeout` option).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How a source table's event time is guarded.
#[derive(Debug, Clone)]
pub struct EventTimeOptions {
    /// A split with nothing to deliver for this long stops holding the watermark.
    pub idle_timeout: Duration,
    /// Records further ahead of the wall clock than this are bad records; `None` without a
    /// `WATERMARK` or with `max_future = 'off'`.
    pub bound: Option<EventTimeBound>,
    /// Where late rows are kept (`late_dead_letter_path`), besides being counted.
    pub late_dead_letter_path: Option<String>,
}

/// Reads `idle_timeout` and `max_future` (default 1h; `off` disables it) of `def`. Errors
/// point at the table.
pub fn event_time_options(def: &TableDef) -> Result<EventTimeOptions> {
    let duration = |key: &str, v: &str| {
        parse_duration(v).ok_or_else(|| {
            SqlError::plan(
                def.location,
                format!("option `{key}` must be a duration such as '30s', not '{v}'"),
            )
        })
    };
    let idle_timeout = match def.option("idle_timeout") {
        None => DEFAULT_IDLE_TIMEOUT,
        Some(v) => duration("idle_timeout", v)?,
    };
    let max_future = match def.option("max_future") {
        None => Some(DEFAULT_MAX_FUTURE),
        Some(v) if v.eq_ignore_ascii_case("off") => None,
        Some(v) => Some(duration("max_future", v)?),
    };
    let bound = match (&def.watermark, max_future) {
        (Some(w), Some(max_future)) => Some(EventTimeBound {
            column: w.column.clone(),
            max_future,
        }),
        (None, _) if def.option("max_future").is_some() => {
            return Err(SqlError::plan(
                def.location,
                format!(
                    "option `max_future` bounds the event time, but table `{}` has no WATERMARK FOR column: add one, or remove the option",
                    def.name
                ),
            ));
        }
        _ => None,
    };
    Ok(EventTimeOptions {
        idle_timeout,
        bound,
        late_dead_letter_path: def.option("late_dead_letter_path").map(str::to_string),
    })
}
