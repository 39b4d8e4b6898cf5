//! Timestamp coercion: RFC 3339 / ISO-8601 strings and epoch milliseconds both become TIMESTAMP.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Builder};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, TimeUnit};

use laketide_engine::time::nanos_per_unit;

/// Converts a string column (numbers were kept as their text) to `target` (a timestamp type).
/// Returns the column and, for every row whose text is neither a timestamp nor an integer,
/// its row index and the offending text.
pub fn coerce_timestamps(
    strings: &ArrayRef,
    target: &DataType,
) -> datafusion::arrow::error::Result<(ArrayRef, Vec<(usize, String)>)> {
    let DataType::Timestamp(unit, _) = target else {
        return Ok((
            cast_with_options(strings, target, &CastOptions::default())?,
            vec![],
        ));
    };
    let safe = CastOptions {
        safe: true,
        ..Default::default()
    };
    let parsed = cast_with_options(strings, target, &safe)?;
    // Rows that were not null but did not parse as a timestamp: epoch milliseconds, or bad.
    let failed = parsed.null_count() - strings.null_count();
    if failed == 0 {
        return Ok((parsed, vec![]));
    }
    let text = strings.as_string::<i32>();
    let parsed_raw = cast_with_options(&parsed, &DataType::Int64, &safe)?;
    let parsed_raw = parsed_raw.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    let per_milli = nanos_per_unit(TimeUnit::Millisecond);
    let per_unit = nanos_per_unit(*unit);
    let mut out = Int64Builder::with_capacity(text.len());
    let mut bad = Vec::new();
    for row in 0..text.len() {
        if text.is_null(row) {
            out.append_null();
        } else if parsed_raw.is_valid(row) {
            out.append_value(parsed_raw.value(row));
        } else {
            let value = text.value(row).trim();
            match value.parse::<i64>() {
                Ok(millis) => {
                    let nanos = millis as i128 * per_milli as i128;
                    out.append_value((nanos / per_unit as i128) as i64);
                }
                Err(_) => {
                    bad.push((row, value.to_string()));
                    out.append_null();
                }
            }
        }
    }
    let raw: ArrayRef = Arc::new(out.finish());
    Ok((
        cast_with_options(&raw, target, &CastOptions::default())?,
        bad,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::TimestampMicrosecondType;

    #[test]
    fn strings_and_epoch_millis_become_timestamps() {
        let input: ArrayRef = Arc::new(StringArray::from(vec![
            Some("2024-01-01T00:00:01Z"),
            Some("1704067202000"),
            None,
            Some("yesterday"),
            Some("2024-01-01 00:00:03"),
        ]));
        let target = DataType::Timestamp(TimeUnit::Microsecond, None);
        let (out, bad) = coerce_timestamps(&input, &target).unwrap();
        let out = out.as_primitive::<TimestampMicrosecondType>();
        assert_eq!(out.value(0), 1_704_067_201_000_000);
        assert_eq!(out.value(1), 1_704_067_202_000_000);
        assert!(out.is_null(2));
        assert_eq!(bad, vec![(3, "yesterday".to_string())]);
        assert_eq!(out.value(4), 1_704_067_203_000_000);
    }
}
