//! Conversions between Arrow timestamp columns and [`EventTime`] nanoseconds.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, PrimitiveArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit};

use crate::error::{EngineError, Result};
use crate::message::EventTime;

/// Nanoseconds in one unit of `unit`.
pub fn nanos_per_unit(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

/// The time unit of a timestamp type, or a user error naming the column.
pub fn timestamp_unit(data_type: &DataType, column: &str) -> Result<TimeUnit> {
    match data_type {
        DataType::Timestamp(unit, _) => Ok(*unit),
        other => Err(EngineError::User(format!(
            "column `{column}` is used as event time but has type {other}; it must be a TIMESTAMP"
        ))),
    }
}

/// The raw i64 values of a timestamp array (in the array's own unit), sharing its buffers.
pub fn timestamp_values(array: &ArrayRef) -> Result<PrimitiveArray<Int64Type>> {
    match array.data_type() {
        DataType::Timestamp(_, _) | DataType::Int64 => {
            let as_i64 = cast(array, &DataType::Int64)?;
            Ok(as_i64.as_primitive::<Int64Type>().clone())
        }
        other => Err(EngineError::Internal(format!(
            "expected a timestamp array, found {other}"
        ))),
    }
}

/// Builds a timestamp array of `data_type` from raw i64 values in that type's unit.
pub fn timestamp_array(values: Int64Array, data_type: &DataType) -> Result<ArrayRef> {
    let array: ArrayRef = Arc::new(values);
    Ok(cast(&array, data_type)?)
}

/// Converts a value in `unit` to event-time nanoseconds, saturating at the i64 range.
pub fn to_event_time(value: i64, unit: TimeUnit) -> EventTime {
    value.saturating_mul(nanos_per_unit(unit))
}

/// Converts event-time nanoseconds to `unit`, rounding towards negative infinity.
pub fn from_event_time(time: EventTime, unit: TimeUnit) -> i64 {
    time.div_euclid(nanos_per_unit(unit))
}

/// Current wall-clock time as event time.
pub fn now() -> EventTime {
    chrono::Utc::now()
        .timestamp_nanos_opt()
        .unwrap_or(EventTime::MAX)
}

/// Formats event time as RFC 3339 for logs and summaries.
pub fn format_event_time(time: EventTime) -> String {
    if time == EventTime::MAX {
        return "end of input".to_string();
    }
    if time == EventTime::MIN {
        return "none".to_string();
    }
    chrono::DateTime::from_timestamp_nanos(time)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_between_units_flooring() {
        assert_eq!(to_event_time(3, TimeUnit::Millisecond), 3_000_000);
        assert_eq!(from_event_time(3_999_999, TimeUnit::Millisecond), 3);
        assert_eq!(from_event_time(-1, TimeUnit::Millisecond), -1);
        assert_eq!(to_event_time(i64::MAX, TimeUnit::Second), i64::MAX);
    }
}
