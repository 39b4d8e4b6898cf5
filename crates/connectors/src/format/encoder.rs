//! Encodes rows one record each (a JSON object or a CSV line), for sinks that send records to
//! a service one by one (Kinesis).

use datafusion::arrow::record_batch::RecordBatch;
use laketide_engine::{EngineError, Result};

use super::Format;

/// Turns each row of a batch into the bytes of one record, without a trailing newline.
#[derive(Debug, Clone)]
pub struct RowEncoder {
    format: Format,
}

impl RowEncoder {
    /// An encoder for `format` (JSON or CSV; CSV without a header).
    pub fn new(format: Format) -> Self {
        RowEncoder { format }
    }

    /// One record per row, in row order. JSON leaves out null fields; timestamps are written
    /// as ISO-8601 text, which every laketide source reads back.
    pub fn encode(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
        let text = self.write(batch)?;
        let records = split_lines(&text);
        if records.len() == batch.num_rows() {
            return Ok(records);
        }
        // A CSV field with a line break spans lines: encode row by row instead.
        (0..batch.num_rows())
            .map(|i| {
                let mut one = self.write(&batch.slice(i, 1))?;
                while one.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    one.pop();
                }
                Ok(one)
            })
            .collect()
    }

    fn write(&self, batch: &RecordBatch) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(batch.num_rows() * 64);
        let failed = |e| EngineError::compute("encoding rows", e);
        match &self.format {
            Format::Csv { delimiter, .. } => {
                let mut w = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(false)
                    .with_delimiter(*delimiter)
                    .build(&mut out);
                w.write(batch).map_err(failed)?;
            }
            _ => {
                let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut out);
                w.write(batch).map_err(failed)?;
                w.finish().map_err(failed)?;
            }
        }
        Ok(out)
    }
}

fn split_lines(text: &[u8]) -> Vec<Vec<u8>> {
    text.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn batch() -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, true),
                Field::new("text", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), Some(2), None])),
                Arc::new(StringArray::from(vec![Some("a\nb"), None, Some("c,d")])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn json_rows() {
        let rows = RowEncoder::new(Format::Json).encode(&batch()).unwrap();
        let rows: Vec<String> = rows
            .into_iter()
            .map(|r| String::from_utf8(r).unwrap())
            .collect();
        assert_eq!(
            rows,
            vec![
                r#"{"id":1,"text":"a\nb"}"#,
                r#"{"id":2}"#,
                r#"{"text":"c,d"}"#
            ]
        );
    }

    #[test]
    fn csv_rows_with_line_breaks_inside_fields() {
        let rows = RowEncoder::new(Format::Csv {
            header: false,
            delimiter: b',',
        })
        .encode(&batch())
        .unwrap();
        let rows: Vec<String> = rows
            .into_iter()
            .map(|r| String::from_utf8(r).unwrap())
            .collect();
        assert_eq!(rows, vec!["1,\"a\nb\"", "2,", ",\"c,d\""]);
    }
}
