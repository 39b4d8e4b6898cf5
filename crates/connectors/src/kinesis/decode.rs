//! Turns GetRecords responses into Arrow batches: KPL de-aggregation, payload decoding with the
//! source's `on_error` policy, metadata columns, and the position after each batch.

use std::ops::Range;
use std::sync::Arc;

use aws_sdk_kinesis::types::Record;
use datafusion::arrow::array::{ArrayRef, StringBuilder, TimestampMillisecondBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use laketide_engine::{BadRecords, EngineError, Result};

use super::kpl::deaggregate;
use super::position::ShardPosition;
use crate::format::{EventTimeBound, Format, RecordDecoder};
use crate::metadata::{MetadataColumn, MetadataKey, is_text, is_timestamp, split_schema};

/// The metadata a Kinesis source offers.
pub const KINESIS_METADATA: &[MetadataKey] = &[
    MetadataKey {
        name: "shard_id",
        description: "TEXT",
        accepts: is_text,
    },
    MetadataKey {
        name: "sequence_number",
        description: "TEXT",
        accepts: is_text,
    },
    MetadataKey {
        name: "partition_key",
        description: "TEXT",
        accepts: is_text,
    },
    MetadataKey {
        name: "arrival_time",
        description: "a TIMESTAMP (the record's approximate arrival time)",
        accepts: is_timestamp,
    },
];

/// A batch decoded from part of a response, and the shard position after it.
#[derive(Debug)]
pub struct DecodedChunk {
    /// The rows (`None` if every record of the chunk was bad).
    pub batch: Option<RecordBatch>,
    /// The position after the chunk's last record.
    pub position: ShardPosition,
}

/// One user record: a plain Kinesis record, or one record of a KPL aggregate.
struct Entry<'a> {
    record: &'a Record,
    sub_sequence: Option<u64>,
    last_of_record: bool,
    partition_key: &'a str,
    range: Range<usize>,
}

/// Decodes the records of one stream into batches of the table's schema.
#[derive(Debug)]
pub struct KinesisDecoder {
    stream: String,
    output: SchemaRef,
    payload: RecordDecoder,
    payload_columns: Vec<usize>,
    metadata: Vec<(usize, MetadataKey)>,
    max_rows: usize,
}

impl KinesisDecoder {
    /// A decoder for rows of `schema`, whose `metadata` columns are filled from record
    /// metadata and the rest from the payload in `format`. Batches hold at most `max_rows`.
    pub fn new(
        stream: &str,
        schema: SchemaRef,
        metadata: &[MetadataColumn],
        format: Format,
        bad: Arc<BadRecords>,
        max_rows: usize,
        event_time_bound: Option<EventTimeBound>,
    ) -> crate::error::Result<Self> {
        let (payload_schema, metadata) =
            split_schema("kinesis", &schema, metadata, KINESIS_METADATA)?;
        let payload_columns = (0..schema.fields().len())
            .filter(|i| !metadata.iter().any(|(m, _)| m == i))
            .collect();
        Ok(KinesisDecoder {
            stream: stream.to_string(),
            output: schema,
            payload: RecordDecoder::new(payload_schema, format, bad)
                .with_event_time_bound(event_time_bound),
            payload_columns,
            metadata,
            max_rows: max_rows.max(1),
        })
    }

    /// The schema of the batches.
    pub fn schema(&self) -> SchemaRef {
        self.output.clone()
    }

    /// Decodes a response's records (in shard order) into chunks of at most `max_rows` user
    /// records. `skip` = (sequence number, n) drops the user records `0..=n` of that aggregated
    /// record, already delivered before a restart.
    pub fn decode(
        &self,
        shard: &str,
        records: &[Record],
        skip: Option<(&str, u64)>,
    ) -> Result<Vec<DecodedChunk>> {
        let mut buffer = Vec::new();
        let mut entries: Vec<Entry> = Vec::new();
        for record in records {
            let data = record.data().as_ref();
            let key = record.partition_key().unwrap_or_default();
            match deaggregate(data) {
                Some(users) => {
                    let count = users.len();
                    for (i, user) in users.into_iter().enumerate() {
                        let i = i as u64;
                        if let Some((seq, through)) = skip
                            && seq == record.sequence_number()
                            && i <= through
                        {
                            continue;
                        }
                        let range = push_record(&mut buffer, user.data);
                        entries.push(Entry {
                            record,
                            sub_sequence: Some(i),
                            last_of_record: i + 1 == count as u64,
                            partition_key: user.partition_key,
                            range,
                        });
                    }
                }
                None => {
                    let range = push_record(&mut buffer, data);
                    entries.push(Entry {
                        record,
                        sub_sequence: None,
                        last_of_record: true,
                        partition_key: key,
                        range,
                    });
                }
            }
        }
        let mut chunks = Vec::new();
        for chunk in entries.chunks(self.max_rows) {
            let last = &chunk[chunk.len() - 1];
            let position = ShardPosition::After {
                sequence: last.record.sequence_number().to_string(),
                sub_sequence: if last.last_of_record {
                    None
                } else {
                    last.sub_sequence
                },
            };
            chunks.push(DecodedChunk {
                batch: self.decode_chunk(shard, &buffer, chunk)?,
                position,
            });
        }
        // An aggregate whose user records were all delivered before a restart leaves nothing
        // to decode, but the position still moves past it.
        if chunks.is_empty()
            && let Some(last) = records.last()
        {
            chunks.push(DecodedChunk {
                batch: None,
                position: ShardPosition::After {
                    sequence: last.sequence_number().to_string(),
                    sub_sequence: None,
                },
            });
        }
        Ok(chunks)
    }

    fn decode_chunk(
        &self,
        shard: &str,
        buffer: &[u8],
        chunk: &[Entry],
    ) -> Result<Option<RecordBatch>> {
        let ranges: Vec<Range<usize>> = chunk.iter().map(|e| e.range.clone()).collect();
        let location = |i: usize| {
            let e = &chunk[i];
            let sub = e
                .sub_sequence
                .map(|s| format!(" sub-sequence {s}"))
                .unwrap_or_default();
            format!(
                "kinesis stream `{}` shard {shard} sequence {}{sub}",
                self.stream,
                e.record.sequence_number()
            )
        };
        let Some((payload, rows)) = self.payload.decode_indexed(buffer, &ranges, &location)? else {
            return Ok(None);
        };
        if self.metadata.is_empty() {
            return Ok(Some(payload));
        }
        let mut columns: Vec<Option<ArrayRef>> = vec![None; self.output.fields().len()];
        for (array, &i) in payload.columns().iter().zip(&self.payload_columns) {
            columns[i] = Some(array.clone());
        }
        for (i, key) in &self.metadata {
            let array: ArrayRef = match key.name {
                "arrival_time" => {
                    let mut b = TimestampMillisecondBuilder::with_capacity(rows.len());
                    for &r in &rows {
                        b.append_option(
                            chunk[r]
                                .record
                                .approximate_arrival_timestamp()
                                .and_then(|t| t.to_millis().ok()),
                        );
                    }
                    Arc::new(b.finish())
                }
                name => {
                    let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 24);
                    for &r in &rows {
                        let e = &chunk[r];
                        b.append_value(match name {
                            "shard_id" => shard,
                            "sequence_number" => e.record.sequence_number(),
                            _ => e.partition_key,
                        });
                    }
                    Arc::new(b.finish())
                }
            };
            let target = self.output.field(*i).data_type();
            columns[*i] = Some(
                cast(&array, target)
                    .map_err(|e| EngineError::compute("building a metadata column", e))?,
            );
        }
        let columns: Vec<ArrayRef> = columns.into_iter().map(|c| c.expect("filled")).collect();
        RecordBatch::try_new(self.output.clone(), columns)
            .map(Some)
            .map_err(|e| EngineError::compute("assembling a Kinesis batch", e))
    }
}

/// Appends one record and a newline separator; returns its range without trailing line breaks.
fn push_record(buffer: &mut Vec<u8>, data: &[u8]) -> Range<usize> {
    let mut end = data.len();
    while end > 0 && matches!(data[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    let start = buffer.len();
    buffer.extend_from_slice(&data[..end]);
    let range = start..buffer.len();
    buffer.push(b'\n');
    range
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinesis::kpl::aggregate;
    use aws_sdk_kinesis::primitives::{Blob, DateTime};
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit};
    use laketide_engine::OnError;

    fn record(seq: &str, key: &str, data: &[u8]) -> Record {
        Record::builder()
            .sequence_number(seq)
            .partition_key(key)
            .data(Blob::new(data))
            .approximate_arrival_timestamp(DateTime::from_millis(1_700_000_000_000))
            .build()
            .unwrap()
    }

    fn decoder(max_rows: usize, policy: OnError) -> (KinesisDecoder, Arc<BadRecords>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("seq", DataType::Utf8, true),
            Field::new("key", DataType::Utf8, true),
            Field::new(
                "arrived",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                true,
            ),
        ]));
        let meta = [
            ("seq", "sequence_number"),
            ("key", "partition_key"),
            ("arrived", "arrival_time"),
        ]
        .map(|(c, k)| MetadataColumn {
            column: c.into(),
            key: k.into(),
        });
        let bad = Arc::new(BadRecords::new("clicks", policy));
        (
            KinesisDecoder::new(
                "s",
                schema,
                &meta,
                Format::Json,
                bad.clone(),
                max_rows,
                None,
            )
            .unwrap(),
            bad,
        )
    }

    #[test]
    fn plain_and_aggregated_records_with_metadata() {
        let (d, _) = decoder(100, OnError::Fail);
        let agg = aggregate(&[("k2", b"{\"id\":2}"), ("k3", b"{\"id\":3}\n")]);
        let records = vec![
            record("10", "k1", b"{\"id\":1}\n"),
            record("20", "outer", &agg),
        ];
        let chunks = d.decode("shard-0", &records, None).unwrap();
        assert_eq!(chunks.len(), 1);
        let b = chunks[0].batch.as_ref().unwrap();
        let ids: Vec<i64> = b.column(0).as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(ids, vec![1, 2, 3]);
        let keys: Vec<&str> = b.column(2).as_string::<i32>().iter().flatten().collect();
        assert_eq!(
            keys,
            vec!["k1", "k2", "k3"],
            "user records keep their own keys"
        );
        let seqs: Vec<&str> = b.column(1).as_string::<i32>().iter().flatten().collect();
        assert_eq!(seqs, vec!["10", "20", "20"]);
        assert_eq!(
            b.column(3)
                .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>()
                .value(0),
            1_700_000_000_000_000
        );
        assert_eq!(
            chunks[0].position,
            ShardPosition::After {
                sequence: "20".into(),
                sub_sequence: None
            }
        );
    }

    #[test]
    fn chunks_inside_an_aggregate_carry_sub_sequence_positions_and_resume_skips() {
        let (d, _) = decoder(2, OnError::Fail);
        let users: Vec<String> = (0..5).map(|i| format!("{{\"id\":{i}}}")).collect();
        let pairs: Vec<(&str, &[u8])> = users.iter().map(|u| ("k", u.as_bytes())).collect();
        let records = vec![record("30", "k", &aggregate(&pairs))];
        let chunks = d.decode("shard-0", &records, None).unwrap();
        let positions: Vec<Option<u64>> = chunks
            .iter()
            .map(|c| match &c.position {
                ShardPosition::After { sub_sequence, .. } => *sub_sequence,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(positions, vec![Some(1), Some(3), None]);
        // Restart after the first chunk: the record is read again, its first two skipped.
        let chunks = d.decode("shard-0", &records, Some(("30", 1))).unwrap();
        let ids: Vec<i64> = chunks
            .iter()
            .flat_map(|c| {
                c.batch
                    .as_ref()
                    .unwrap()
                    .column(0)
                    .as_primitive::<Int64Type>()
                    .values()
                    .to_vec()
            })
            .collect();
        assert_eq!(ids, vec![2, 3, 4]);
    }

    #[test]
    fn csv_records_one_line_each() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("shard", DataType::Utf8, true),
        ]));
        let meta = [MetadataColumn {
            column: "shard".into(),
            key: "shard_id".into(),
        }];
        let bad = Arc::new(BadRecords::new("t", OnError::Skip));
        let format = Format::Csv {
            header: false,
            delimiter: b';',
        };
        let d = KinesisDecoder::new("s", schema, &meta, format, bad.clone(), 100, None).unwrap();
        let records = vec![
            record("1", "a", b"1;x\r\n"),
            record("2", "b", b"two;y"),
            record("3", "c", b"3;\"z;z\""),
        ];
        let chunks = d.decode("shard-7", &records, None).unwrap();
        let b = chunks[0].batch.as_ref().unwrap();
        assert_eq!(
            b.column(0).as_primitive::<Int64Type>().values().to_vec(),
            vec![1, 3]
        );
        let names: Vec<&str> = b.column(1).as_string::<i32>().iter().flatten().collect();
        assert_eq!(names, vec!["x", "z;z"]);
        let shards: Vec<&str> = b.column(2).as_string::<i32>().iter().flatten().collect();
        assert_eq!(shards, vec!["shard-7", "shard-7"]);
        assert_eq!(bad.count(), 1);
    }

    #[test]
    fn bad_records_keep_metadata_aligned() {
        let (d, bad) = decoder(100, OnError::Skip);
        let records = vec![
            record("1", "a", b"{\"id\":1}"),
            record("2", "b", b"not json"),
            record("3", "c", b"{\"id\":3}"),
        ];
        let chunks = d.decode("shard-0", &records, None).unwrap();
        let b = chunks[0].batch.as_ref().unwrap();
        let keys: Vec<&str> = b.column(2).as_string::<i32>().iter().flatten().collect();
        assert_eq!(keys, vec!["a", "c"]);
        assert_eq!(bad.count(), 1);

        let (d, _) = decoder(100, OnError::Fail);
        let e = d.decode("shard-0", &records, None).unwrap_err();
        assert!(
            e.to_string()
                .contains("kinesis stream `s` shard shard-0 sequence 2"),
            "{e}"
        );
    }

    #[test]
    fn records_beyond_max_future_are_bad_and_the_rest_decode() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]));
        let bad = Arc::new(BadRecords::new("clicks", OnError::Skip));
        let bound = EventTimeBound {
            column: "ts".into(),
            max_future: std::time::Duration::from_secs(3600),
        };
        let d = KinesisDecoder::new(
            "s",
            schema,
            &[],
            Format::Json,
            bad.clone(),
            100,
            Some(bound),
        )
        .unwrap();
        let now = chrono::Utc::now().timestamp_millis();
        let records = vec![
            record("1", "k", format!("{{\"id\":1,\"ts\":{now}}}").as_bytes()),
            record("2", "k", b"{\"id\":2,\"ts\":\"2926-01-01T00:00:00Z\"}"),
            record("3", "k", b"{\"id\":3,\"ts\":0}"),
        ];
        let chunks = d.decode("shard-0", &records, None).unwrap();
        let batch = chunks[0].batch.as_ref().unwrap();
        let ids = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(
            ids.values().to_vec(),
            vec![1, 3],
            "the epoch is late, not bad"
        );
        assert_eq!(bad.count(), 1);
    }
}
