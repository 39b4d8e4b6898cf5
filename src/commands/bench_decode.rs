//! The Kinesis part of `laketide bench`: how many records per second the Kinesis source decodes
//! from GetRecords responses (plain and KPL-aggregated), measured on responses built in memory
//! from generated events, so that the number is the source's own cost, not the server's.

use std::sync::Arc;
use std::time::Instant;

use aws_sdk_kinesis::primitives::{Blob, DateTime};
use aws_sdk_kinesis::types::Record;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use laketide_connectors::MetadataColumn;
use laketide_connectors::format::Format;
use laketide_connectors::kinesis::{KinesisDecoder, kpl};
use laketide_engine::{BadRecords, OnError};

use crate::datagen::{ClickstreamEvents, ClickstreamSpec, clickstream_fields};
use crate::error::Result;
use crate::progress::human_rate;

/// Records per GetRecords response, as the service returns at most.
const RESPONSE_RECORDS: usize = 10_000;

fn responses(events: u64, aggregate: usize) -> Vec<Vec<Record>> {
    let mut generator = ClickstreamEvents::new(&ClickstreamSpec {
        events,
        ..Default::default()
    });
    let mut lines = Vec::with_capacity(events as usize);
    let mut line = String::new();
    while generator.next_into(&mut line) {
        lines.push(line.clone());
    }
    let arrival = DateTime::from_millis(1_714_564_800_000);
    let mut records = Vec::new();
    for (i, group) in lines.chunks(aggregate.max(1)).enumerate() {
        let data = if aggregate > 1 {
            let pairs: Vec<(&str, &[u8])> = group.iter().map(|l| ("key", l.as_bytes())).collect();
            kpl::aggregate(&pairs)
        } else {
            group[0].clone().into_bytes()
        };
        records.push(
            Record::builder()
                .sequence_number(format!("{:056}", i))
                .partition_key("key")
                .data(Blob::new(data))
                .approximate_arrival_timestamp(arrival)
                .build()
                .expect("a complete record"),
        );
    }
    records
        .chunks(RESPONSE_RECORDS)
        .map(|c| c.to_vec())
        .collect()
}

/// Decodes `events` generated events from in-memory responses and prints records per second,
/// plain and with `aggregate` user records per Kinesis record.
pub fn bench_decode(events: u64, aggregate: usize) -> Result<()> {
    let mut fields = clickstream_fields();
    fields.push(Field::new(
        "arrived",
        DataType::Timestamp(TimeUnit::Millisecond, None),
        true,
    ));
    let schema = Arc::new(Schema::new(fields));
    let metadata = vec![MetadataColumn {
        column: "arrived".into(),
        key: "arrival_time".into(),
    }];
    for per_record in [1, aggregate] {
        let responses = responses(events, per_record);
        let bad = Arc::new(BadRecords::new("bench", OnError::Fail));
        let decoder = KinesisDecoder::new(
            "bench",
            schema.clone(),
            &metadata,
            Format::Json,
            bad,
            8192,
            None,
        )?;
        let started = Instant::now();
        let mut rows = 0usize;
        for response in &responses {
            for chunk in decoder.decode("shardId-000000000000", response, None)? {
                rows += chunk.batch.map_or(0, |b| b.num_rows());
            }
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "bench kinesis decode ({}): {rows} records in {secs:.2}s = {} records/s",
            if per_record > 1 {
                format!("KPL, {per_record} per Kinesis record")
            } else {
                "plain JSON records".to_string()
            },
            human_rate(rows as f64 / secs.max(1e-9))
        );
    }
    Ok(())
}
