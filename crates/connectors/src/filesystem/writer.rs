use std::fs::File;
use std::io::BufWriter;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;

use super::config::FileFormat;

/// An open output file of one of the supported formats.
pub(crate) enum FormatWriter {
    Parquet(ArrowWriter<File>),
    Json(datafusion::arrow::json::LineDelimitedWriter<BufWriter<File>>),
    Csv(datafusion::arrow::csv::Writer<BufWriter<File>>),
}

impl FormatWriter {
    pub(crate) fn new(format: FileFormat, file: File, schema: &SchemaRef) -> Result<Self, String> {
        Ok(match format {
            FileFormat::Parquet => FormatWriter::Parquet(
                ArrowWriter::try_new(file, schema.clone(), None).map_err(|e| e.to_string())?,
            ),
            FileFormat::Json => FormatWriter::Json(
                datafusion::arrow::json::LineDelimitedWriter::new(BufWriter::new(file)),
            ),
            FileFormat::Csv => {
                FormatWriter::Csv(datafusion::arrow::csv::Writer::new(BufWriter::new(file)))
            }
        })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), String> {
        match self {
            FormatWriter::Parquet(w) => w.write(batch).map_err(|e| e.to_string()),
            FormatWriter::Json(w) => w.write(batch).map_err(|e| e.to_string()),
            FormatWriter::Csv(w) => w.write(batch).map_err(|e| e.to_string()),
        }
    }

    /// Bytes written so far, including buffered ones (approximate for Parquet).
    pub(crate) fn size(&self, written_estimate: u64) -> u64 {
        match self {
            FormatWriter::Parquet(w) => (w.bytes_written() + w.in_progress_size()) as u64,
            _ => written_estimate,
        }
    }

    pub(crate) fn finish(self) -> Result<(), String> {
        match self {
            FormatWriter::Parquet(w) => w.close().map(|_| ()).map_err(|e| e.to_string()),
            FormatWriter::Json(mut w) => {
                w.finish().map_err(|e| e.to_string())?;
                let mut inner = w.into_inner();
                std::io::Write::flush(&mut inner).map_err(|e| e.to_string())
            }
            FormatWriter::Csv(w) => {
                let mut inner = w.into_inner();
                std::io::Write::flush(&mut inner).map_err(|e| e.to_string())
            }
        }
    }
}
