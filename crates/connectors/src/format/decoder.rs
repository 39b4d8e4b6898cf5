use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

use laketide_engine::{BadRecords, EngineError};

use super::timestamps::coerce_timestamps;
use super::{EventTimeBound, Format};

/// Decodes chunks of records (JSON lines or CSV lines) into batches of a target schema.
///
/// The whole chunk is decoded at once; only if that fails is it decoded record by record to
/// find and report the bad ones, so well-formed input pays nothing for error handling.
/// Top-level TIMESTAMP columns accept RFC 3339 / ISO-8601 strings and epoch milliseconds.
#[derive(Debug)]
pub struct RecordDecoder {
    target: SchemaRef,
    read_schema: SchemaRef,
    timestamp_columns: Vec<usize>,
    format: Format,
    bad: Arc<BadRecords>,
    /// The event-time column's index in `target`, with its `max_future` bound.
    event_time: Option<(usize, EventTimeBound)>,
}

type Decoded = std::result::Result<RecordBatch, ArrowError>;

impl RecordDecoder {
    /// A decoder for `format` (JSON or CSV) producing `target`, reporting bad records to `bad`.
    pub fn new(target: SchemaRef, format: Format, bad: Arc<BadRecords>) -> Self {
        let mut timestamp_columns = Vec::new();
        let fields: Vec<Field> = target
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if matches!(f.data_type(), DataType::Timestamp(_, _)) {
                    timestamp_columns.push(i);
                    Field::new(f.name(), DataType::Utf8, true)
                } else {
                    f.as_ref().clone().with_nullable(true)
                }
            })
            .collect();
        RecordDecoder {
            read_schema: Arc::new(Schema::new(fields)),
            target,
            timestamp_columns,
            format,
            bad,
            event_time: None,
        }
    }

    /// Makes records whose event time is beyond `bound` bad records. A bound on a column the
    /// decoded records do not have (a metadata column) is ignored.
    pub fn with_event_time_bound(mut self, bound: Option<EventTimeBound>) -> Self {
        self.event_time = bound.and_then(|b| {
            let index = self.target.index_of(&b.column).ok()?;
            Some((index, b))
        });
        self
    }

    /// The schema of decoded batches.
    pub fn schema(&self) -> SchemaRef {
        self.target.clone()
    }

    fn decode_bytes(&self, bytes: &[u8], rows: usize) -> Decoded {
        let batch_size = rows.max(1) + 1;
        match &self.format {
            Format::Csv { delimiter, .. } => {
                let mut decoder =
                    datafusion::arrow::csv::ReaderBuilder::new(self.read_schema.clone())
                        .with_header(false)
                        .with_delimiter(*delimiter)
                        .with_batch_size(batch_size)
                        .build_decoder();
                let mut offset = 0;
                let mut batches = Vec::new();
                while offset < bytes.len() {
                    let read = decoder.decode(&bytes[offset..])?;
                    offset += read;
                    if read == 0 || decoder.capacity() == 0 {
                        if let Some(b) = decoder.flush()? {
                            batches.push(b);
                        } else if read == 0 {
                            break;
                        }
                    }
                }
                // An empty buffer tells the CSV parser the input ended (completes the last line).
                decoder.decode(&[])?;
                if let Some(b) = decoder.flush()? {
                    batches.push(b);
                }
                concat_batches(&self.read_schema, &batches)
            }
            _ => {
                let mut decoder =
                    datafusion::arrow::json::ReaderBuilder::new(self.read_schema.clone())
                        .with_batch_size(batch_size)
                        .with_coerce_primitive(true)
                        .build_decoder()?;
                let mut offset = 0;
                let mut batches = Vec::new();
                while offset < bytes.len() {
                    let read = decoder.decode(&bytes[offset..])?;
                    offset += read;
                    if let Some(b) = decoder.flush()? {
                        batches.push(b);
                    } else if read == 0 {
                        break;
                    }
                }
                if let Some(b) = decoder.flush()? {
                    batches.push(b);
                }
                concat_batches(&self.read_schema, &batches)
            }
        }
    }

    /// Decodes the records `records` (byte ranges of `buffer`, one record each, no blank ones).
    /// `location(i)` names record `i` for error messages (file:line, shard/sequence number).
    /// Bad records go to the source's policy; `Err` only under `on_error = 'fail'` or when the
    /// dead-letter file fails.
    pub fn decode(
        &self,
        buffer: &[u8],
        records: &[Range<usize>],
        location: &dyn Fn(usize) -> String,
    ) -> Result<Option<RecordBatch>, EngineError> {
        Ok(self
            .decode_indexed(buffer, records, location)?
            .map(|(batch, _)| batch))
    }

    /// Like [`RecordDecoder::decode`], and also says which record each row came from (bad
    /// records leave gaps), so that callers can attach per-record metadata.
    pub fn decode_indexed(
        &self,
        buffer: &[u8],
        records: &[Range<usize>],
        location: &dyn Fn(usize) -> String,
    ) -> Result<Option<(RecordBatch, Vec<usize>)>, EngineError> {
        if records.is_empty() {
            return Ok(None);
        }
        let span = records[0].start..records[records.len() - 1].end;
        // Fast path: the whole chunk at once.
        let (batch, record_of_row) = match self.decode_bytes(&buffer[span], records.len()) {
            Ok(b) if b.num_rows() == records.len() => (b, None),
            _ => {
                // Slow path: one record at a time, reporting the bad ones.
                let mut good = Vec::with_capacity(records.len());
                let mut batches = Vec::with_capacity(records.len());
                for (i, r) in records.iter().enumerate() {
                    let raw = &buffer[r.clone()];
                    match self.decode_bytes(raw, 1) {
                        Ok(b) if b.num_rows() == 1 => {
                            good.push(i);
                            batches.push(b);
                        }
                        Ok(b) => self.bad.report(
                            &location(i),
                            raw,
                            &format!("expected one record, found {}", b.num_rows()),
                        )?,
                        Err(e) => self.bad.report(&location(i), raw, &clean_arrow_error(&e))?,
                    }
                }
                if batches.is_empty() {
                    return Ok(None);
                }
                (concat_batches(&self.read_schema, &batches)?, Some(good))
            }
        };
        self.finish(batch, buffer, records, record_of_row.as_deref(), location)
    }

    /// Converts timestamp columns, reports rows with unparseable times, casts to the target.
    fn finish(
        &self,
        batch: RecordBatch,
        buffer: &[u8],
        records: &[Range<usize>],
        record_of_row: Option<&[usize]>,
        location: &dyn Fn(usize) -> String,
    ) -> Result<Option<(RecordBatch, Vec<usize>)>, EngineError> {
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        let rows = batch.num_rows();
        let mut keep = vec![true; rows];
        let report = |row: usize,
                      reason: String,
                      keep: &mut Vec<bool>|
         -> Result<(), EngineError> {
            if keep[row] {
                keep[row] = false;
                let record = record_of_row.map_or(row, |m| m[row]);
                self.bad
                    .report(&location(record), &buffer[records[record].clone()], &reason)?;
            }
            Ok(())
        };
        for &c in &self.timestamp_columns {
            let target = self.target.field(c);
            let (converted, bad) = coerce_timestamps(&columns[c], target.data_type())?;
            columns[c] = converted;
            for (row, text) in bad {
                report(
                    row,
                    format!(
                        "column `{}`: '{text}' is neither an RFC 3339 timestamp nor epoch milliseconds",
                        target.name()
                    ),
                    &mut keep,
                )?;
            }
        }
        for (c, field) in self.target.fields().iter().enumerate() {
            if columns[c].data_type() != field.data_type() {
                columns[c] = cast(&columns[c], field.data_type())?;
            }
            if !field.is_nullable() && columns[c].null_count() > 0 {
                for row in 0..rows {
                    if columns[c].is_null(row) {
                        report(
                            row,
                            format!(
                                "column `{}` is NOT NULL but the record has no value for it",
                                field.name()
                            ),
                            &mut keep,
                        )?;
                    }
                }
            }
        }
        if let Some((c, bound)) = &self.event_time {
            let now_ms = chrono::Utc::now().timestamp_millis();
            for (row, reason) in bound.violations(&columns[*c], now_ms)? {
                report(row, reason, &mut keep)?;
            }
        }
        let mut record_of_row: Vec<usize> = match record_of_row {
            Some(m) => m.to_vec(),
            None => (0..rows).collect(),
        };
        if keep.iter().any(|k| !k) {
            record_of_row = record_of_row
                .into_iter()
                .zip(&keep)
                .filter_map(|(r, k)| k.then_some(r))
                .collect();
            let mask = BooleanArray::from(keep);
            columns = columns
                .iter()
                .map(|c| datafusion::arrow::compute::filter(c.as_ref(), &mask))
                .collect::<std::result::Result<_, _>>()?;
        }
        let out = RecordBatch::try_new(self.target.clone(), columns).map_err(|e| {
            EngineError::User(format!("records do not fit the table's schema: {e}"))
        })?;
        Ok((out.num_rows() > 0).then_some((out, record_of_row)))
    }
}

/// Arrow's messages start with an error class ("Json error: …"); keep the useful part.
fn clean_arrow_error(e: &ArrowError) -> String {
    let text = e.to_string();
    for prefix in [
        "Json error: ",
        "Parser error: ",
        "Csv error: ",
        "Cast error: ",
    ] {
        if let Some(rest) = text.strip_prefix(prefix) {
            return rest.to_string();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, StructArray};
    use datafusion::arrow::datatypes::{
        Float64Type, Int64Type, TimeUnit, TimestampMicrosecondType,
    };
    use laketide_engine::OnError;

    fn lines(text: &str) -> (Vec<u8>, Vec<Range<usize>>) {
        let mut ranges = Vec::new();
        let mut start = 0;
        for line in text.split_inclusive('\n') {
            let end = start + line.trim_end_matches('\n').len();
            ranges.push(start..end);
            start += line.len();
        }
        (text.as_bytes().to_vec(), ranges)
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("amount", DataType::Float64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new(
                "geo",
                DataType::Struct(vec![Field::new("country", DataType::Utf8, true)].into()),
                true,
            ),
        ]))
    }

    #[test]
    fn json_with_nested_fields_and_both_time_forms() {
        let bad = Arc::new(BadRecords::new("t", OnError::Fail));
        let d = RecordDecoder::new(schema(), Format::Json, bad);
        let (buf, recs) = lines(
            "{\"id\":1,\"amount\":2.5,\"ts\":\"2024-01-01T00:00:00Z\",\"geo\":{\"country\":\"NL\"}}\n{\"id\":2,\"ts\":1704067200000,\"extra\":true}\n",
        );
        let b = d
            .decode(&buf, &recs, &|i| format!("f:{}", i + 1))
            .unwrap()
            .unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.column(0).as_primitive::<Int64Type>().value(1), 2);
        assert_eq!(b.column(1).as_primitive::<Float64Type>().value(0), 2.5);
        let ts = b.column(2).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.value(0), ts.value(1));
        let geo: &StructArray = b.column(3).as_struct();
        assert_eq!(geo.column(0).as_string::<i32>().value(0), "NL");
    }

    #[test]
    fn bad_json_lines_are_skipped_and_counted_or_fail_with_location() {
        let (buf, recs) =
            lines("{\"id\":1}\n{\"id\":\n{\"id\":\"x\"}\n{\"id\":4,\"ts\":\"noon\"}\n{\"id\":5}\n");
        let skip = Arc::new(BadRecords::new("t", OnError::Skip));
        let d = RecordDecoder::new(schema(), Format::Json, skip.clone());
        let b = d
            .decode(&buf, &recs, &|i| format!("f:{}", i + 1))
            .unwrap()
            .unwrap();
        let ids: Vec<i64> = b.column(0).as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(ids, vec![1, 5]);
        assert_eq!(skip.count(), 3);

        let fail = Arc::new(BadRecords::new("t", OnError::Fail));
        let d = RecordDecoder::new(schema(), Format::Json, fail);
        let err = d
            .decode(&buf, &recs, &|i| format!("f:{}", i + 1))
            .unwrap_err();
        assert!(err.to_string().contains("f:2"), "{err}");
    }

    #[test]
    fn missing_not_null_values_are_bad_records() {
        let s = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
        ]));
        let skip = Arc::new(BadRecords::new("t", OnError::Skip));
        let d = RecordDecoder::new(s, Format::Json, skip.clone());
        let (buf, recs) = lines(
            "{\"id\":1,\"ts\":1}\n{\"ts\":2}\n{\"id\":3,\"ts\":\"never\"}\n{\"id\":4,\"ts\":4}\n",
        );
        let b = d
            .decode(&buf, &recs, &|i| format!("f:{}", i + 1))
            .unwrap()
            .unwrap();
        assert_eq!(
            b.column(0).as_primitive::<Int64Type>().values().to_vec(),
            vec![1, 4]
        );
        assert_eq!(
            skip.count(),
            2,
            "the missing id and the bad time, each reported once"
        );
    }

    #[test]
    fn csv_records() {
        let s = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]));
        let skip = Arc::new(BadRecords::new("t", OnError::Skip));
        let d = RecordDecoder::new(
            s,
            Format::Csv {
                header: false,
                delimiter: b',',
            },
            skip.clone(),
        );
        let (buf, recs) = lines("1,2024-01-01T00:00:00Z\nx,1\n3,1704067200000\n");
        let b = d
            .decode(&buf, &recs, &|i| format!("f:{}", i + 1))
            .unwrap()
            .unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(skip.count(), 1);
    }
}
