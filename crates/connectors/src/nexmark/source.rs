//! The Nexmark source: generates one kind of Nexmark's events (persons, auctions or bids),
//! deterministically, with the `nexmark` crate's generator.

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use nexmark::EventGenerator;
use nexmark::event::EventType;
use serde::{Deserialize, Serialize};

use laketide_engine::{NodeState, Result, Source, SourcePoll};

use super::columns::{batch, projection};
use super::config::{NexmarkSourceConfig, NexmarkTable};
use crate::error::Result as ConnectorResult;

/// Generates the events of one kind among the first `events` Nexmark events, in event-time
/// order, in batches of `batch_size`; bounded. Its one split is `nexmark-<table>`; a
/// checkpoint saves how many events of the kind were delivered, and a restored source goes
/// on from the next one.
pub struct NexmarkSource {
    config: NexmarkSourceConfig,
    schema: SchemaRef,
    projection: Vec<usize>,
    generator: EventGenerator,
    /// Events of this kind delivered so far.
    delivered: u64,
    started: bool,
    finished: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Position {
    delivered: u64,
}

impl NexmarkSource {
    /// A source of `config.table` events with the declared `schema` (columns named after
    /// the events' fields, in any order and subset).
    pub fn new(config: NexmarkSourceConfig, schema: SchemaRef) -> ConnectorResult<Self> {
        let projection = projection(config.table, &schema)?;
        Ok(NexmarkSource {
            generator: generator(&config, 0),
            config,
            schema,
            projection,
            delivered: 0,
            started: false,
            finished: false,
        })
    }

    fn split(&self) -> String {
        format!("nexmark-{}", self.config.table.name())
    }
}

fn generator(config: &NexmarkSourceConfig, offset: u64) -> EventGenerator {
    let kind = match config.table {
        NexmarkTable::Person => EventType::Person,
        NexmarkTable::Auction => EventType::Auction,
        NexmarkTable::Bid => EventType::Bid,
    };
    EventGenerator::new(config.generator())
        .with_type_filter(kind)
        .with_offset(offset)
}

#[async_trait]
impl Source for NexmarkSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    async fn open(&mut self) -> Result<()> {
        Ok(())
    }

    async fn poll_next(&mut self) -> Result<SourcePoll> {
        if self.finished {
            return Ok(SourcePoll::Finished);
        }
        if !self.started {
            self.started = true;
            return Ok(SourcePoll::SplitStarted(self.split()));
        }
        let mut events = Vec::with_capacity(self.config.batch_size);
        while events.len() < self.config.batch_size
            && self.generator.global_offset() < self.config.events
        {
            events.extend(self.generator.next());
        }
        if events.is_empty() {
            self.finished = true;
            return Ok(SourcePoll::SplitFinished(self.split()));
        }
        self.delivered += events.len() as u64;
        let batch = batch(self.config.table, &events, &self.schema, &self.projection)?;
        // Generating is CPU work: let the runtime's other tasks run between batches.
        tokio::task::yield_now().await;
        Ok(SourcePoll::Batch {
            split: self.split(),
            batch,
        })
    }

    fn snapshot(&mut self) -> Result<NodeState> {
        NodeState::json(&Position {
            delivered: self.delivered,
        })
    }

    fn restore(&mut self, state: NodeState) -> Result<()> {
        if let Some(p) = state.to_json::<Position>()? {
            self.delivered = p.delivered;
            self.generator = generator(&self.config, p.delivered);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Options;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;

    fn source(events: u64, batch_size: u64) -> NexmarkSource {
        let options = Options::new([
            ("table".to_string(), "bid".to_string()),
            ("events".to_string(), events.to_string()),
            ("batch_size".to_string(), batch_size.to_string()),
        ])
        .unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("price", DataType::Int64, false),
            Field::new("auction", DataType::Int64, false),
            Field::new(
                "date_time",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
        ]));
        NexmarkSource::new(NexmarkSourceConfig::from_options(options).unwrap(), schema).unwrap()
    }

    async fn drain(s: &mut NexmarkSource) -> Vec<(i64, i64, i64)> {
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
        let mut rows = Vec::new();
        loop {
            match s.poll_next().await.unwrap() {
                SourcePoll::Batch { batch, .. } => {
                    let p = batch.column(0).as_primitive::<Int64Type>();
                    let a = batch.column(1).as_primitive::<Int64Type>();
                    let t = batch.column(2).as_primitive::<TimestampMicrosecondType>();
                    for i in 0..batch.num_rows() {
                        rows.push((p.value(i), a.value(i), t.value(i)));
                    }
                }
                SourcePoll::Finished => return rows,
                _ => {}
            }
        }
    }

    #[tokio::test]
    async fn bids_are_46_of_every_50_events_deterministic_and_resume_after_a_checkpoint() {
        let all = drain(&mut source(1000, 64)).await;
        assert_eq!(all.len(), 920);
        assert_eq!(all, drain(&mut source(1000, 7)).await, "the same events");
        assert!(
            all.windows(2).all(|w| w[0].2 <= w[1].2),
            "in event-time order"
        );
        assert!(
            (1_704_067_200_000_000..1_704_067_201_000_000).contains(&all[0].2),
            "from the default base time, 2024-01-01"
        );

        let mut first = source(1000, 100);
        let mut seen = 0;
        while seen < 300 {
            if let SourcePoll::Batch { batch, .. } = first.poll_next().await.unwrap() {
                seen += batch.num_rows();
            }
        }
        let state = first.snapshot().unwrap();
        let mut resumed = source(1000, 100);
        resumed.restore(state).unwrap();
        let rest = drain(&mut resumed).await;
        assert_eq!(rest, all[300..].to_vec());
    }
}
