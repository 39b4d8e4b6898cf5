//! The settings of a pipeline: `SET name = 'value'` statements of the script, and the
//! command-line options that override them.

use std::time::Duration;

use laketide_connectors::parse_duration;

use crate::error::{Location, Result, SqlError};

/// Settings a pipeline file makes with `SET name = 'value'`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipelineSettings {
    /// `SET checkpoint_interval = '5s'`: time between checkpoints (the command line's
    /// `--checkpoint-interval` overrides it).
    pub checkpoint_interval: Option<Duration>,
    /// `SET update_interval = '1s'`: how often updating aggregates emit the results that
    /// changed (`0s`: at every batch; the command line's `--update-interval` overrides it).
    pub update_interval: Option<Duration>,
    /// `SET state_ttl = '1d'`: keys of updating queries that have not changed for this long
    /// (processing time) are dropped from their state.
    pub state_ttl: Option<Duration>,
}

/// The names `SET` accepts.
const SETTINGS: &[&str] = &["checkpoint_interval", "update_interval", "state_ttl"];

impl PipelineSettings {
    /// Applies `SET name = 'value'` at `location`; an unknown name or a bad value is an error
    /// there.
    pub(crate) fn set(&mut self, name: &str, value: &str, location: Location) -> Result<()> {
        match name {
            "checkpoint_interval" => match parse_duration(value) {
                Some(d) if !d.is_zero() => self.checkpoint_interval = Some(d),
                _ => {
                    return Err(SqlError::plan(
                        location,
                        format!(
                            "checkpoint_interval must be a duration such as '10s' or '500ms', not '{value}'"
                        ),
                    ));
                }
            },
            "update_interval" => match parse_duration(value) {
                Some(d) => self.update_interval = Some(d),
                None => {
                    return Err(SqlError::plan(
                        location,
                        format!(
                            "update_interval must be a duration such as '1s' or '0s', not '{value}'"
                        ),
                    ));
                }
            },
            "state_ttl" => match parse_duration(value) {
                Some(d) if !d.is_zero() => self.state_ttl = Some(d),
                _ => {
                    return Err(SqlError::plan(
                        location,
                        format!(
                            "state_ttl must be a duration such as '1d' or '12h', not '{value}'"
                        ),
                    ));
                }
            },
            other => {
                return Err(SqlError::plan(
                    location,
                    format!(
                        "unknown setting `{other}`; settings are: {}",
                        SETTINGS.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Options of planning that come from outside the script (command-line flags); each one set
/// overrides the script's `SET`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// `--update-interval`: how often updating aggregates emit changed results.
    pub update_interval: Option<Duration>,
}
