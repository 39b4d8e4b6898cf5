//! The bound on event time ahead of the wall clock (`max_future`): a record whose event time
//! is further ahead is a bad record, so one device with a wrong clock or one corrupt digit
//! cannot move the watermark years ahead and make every later record late.

use std::time::Duration;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use laketide_engine::Result;

/// The default `max_future`.
pub const DEFAULT_MAX_FUTURE: Duration = Duration::from_secs(3600);

/// Event times more than `max_future` ahead of the wall clock in `column` are bad records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTimeBound {
    /// The event-time column (the one the table's `WATERMARK FOR` names).
    pub column: String,
    /// How far ahead of the wall clock an event time may be.
    pub max_future: Duration,
}

impl EventTimeBound {
    /// The rows of `times` (a TIMESTAMP column) that are more than `max_future` ahead of
    /// `now_ms` (epoch milliseconds), each with the reason to report.
    pub fn violations(&self, times: &ArrayRef, now_ms: i64) -> Result<Vec<(usize, String)>> {
        let DataType::Timestamp(unit, _) = times.data_type() else {
            return Ok(Vec::new());
        };
        let limit_ms = now_ms.saturating_add(self.max_future.as_millis() as i64);
        let limit = match unit {
            TimeUnit::Second => limit_ms.div_euclid(1000),
            TimeUnit::Millisecond => limit_ms,
            TimeUnit::Microsecond => limit_ms.saturating_mul(1_000),
            TimeUnit::Nanosecond => limit_ms.saturating_mul(1_000_000),
        };
        let raw = cast(times, &DataType::Int64)?;
        let values = raw.as_primitive::<Int64Type>();
        let over: Vec<usize> = (0..values.len())
            .filter(|&i| values.is_valid(i) && values.value(i) > limit)
            .collect();
        if over.is_empty() {
            return Ok(Vec::new());
        }
        let options = FormatOptions::default();
        let shown = ArrayFormatter::try_new(times.as_ref(), &options)?;
        Ok(over
            .into_iter()
            .map(|i| (i, self.reason(&shown.value(i).to_string())))
            .collect())
    }

    fn reason(&self, value: &str) -> String {
        format!(
            "column `{}`: event time {value} is more than {} ahead of the wall clock (max_future = '{}'); it would move the watermark past every later record",
            self.column,
            human(self.max_future),
            human(self.max_future),
        )
    }
}

/// `1h`, `90s`, `1500ms`: the form the option takes.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::TimestampMicrosecondArray;
    use std::sync::Arc;

    #[test]
    fn only_times_beyond_the_bound_are_reported_with_the_column_value_and_bound() {
        let now_ms = 1_764_637_200_000; // 2025-12-02T01:00:00Z
        let bound = EventTimeBound {
            column: "ts".into(),
            max_future: Duration::from_secs(3600),
        };
        let us = |ms: i64| ms * 1000;
        let times: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![
            Some(us(now_ms)),
            Some(us(now_ms + 3_600_000)), // exactly at the bound: fine
            Some(us(now_ms + 3_600_001)), // beyond
            None,                         // no time: not this check's business
            Some(0),                      // the epoch: late, not bad
            Some(30_000_000_000_000_000), // year 2920
        ]));
        let found = bound.violations(&times, now_ms).unwrap();
        assert_eq!(
            found.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![2, 5]
        );
        assert!(found[1].1.contains("column `ts`"), "{}", found[1].1);
        assert!(found[1].1.contains("2920-"), "{}", found[1].1);
        assert!(found[1].1.contains("max_future = '1h'"), "{}", found[1].1);
    }
}
