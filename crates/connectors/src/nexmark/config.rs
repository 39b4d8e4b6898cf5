//! Options of the `nexmark` source.

use crate::error::{ConnectorError, Result};
use crate::options::Options;

/// Which of Nexmark's three event kinds a table reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NexmarkTable {
    /// `person`: id, name, email_address, credit_card, city, state, date_time, extra.
    Person,
    /// `auction`: id, item_name, description, initial_bid, reserve, date_time, expires,
    /// seller, category, extra.
    Auction,
    /// `bid`: auction, bidder, price, channel, url, date_time, extra.
    Bid,
}

impl NexmarkTable {
    /// The option value naming this table.
    pub fn name(self) -> &'static str {
        match self {
            NexmarkTable::Person => "person",
            NexmarkTable::Auction => "auction",
            NexmarkTable::Bid => "bid",
        }
    }
}

/// Configuration of a Nexmark source (`connector = 'nexmark'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NexmarkSourceConfig {
    /// The event kind read.
    pub table: NexmarkTable,
    /// Events generated over all three kinds (the table reads its share: 46 of every 50 are
    /// bids, 3 auctions, 1 a person).
    pub events: u64,
    /// Rows per batch.
    pub batch_size: usize,
    /// Events per second of event time (Nexmark's `first_event_rate`).
    pub event_rate: u64,
    /// Event time of the first event, in milliseconds since the epoch.
    pub base_time_ms: u64,
}

/// The option keys of the Nexmark source.
pub const NEXMARK_SOURCE_OPTIONS: &[&str] =
    &["table", "events", "batch_size", "event_rate", "base_time"];

/// 2024-01-01T00:00:00Z: the default event time of the first event, so that every run
/// generates the same events.
const DEFAULT_BASE_TIME_MS: u64 = 1_704_067_200_000;

impl NexmarkSourceConfig {
    /// Reads and validates the options; unknown keys are errors.
    pub fn from_options(mut options: Options) -> Result<Self> {
        let table = match options.take_choice("table", &["person", "auction", "bid"])? {
            Some(t) if t == "person" => NexmarkTable::Person,
            Some(t) if t == "auction" => NexmarkTable::Auction,
            Some(_) => NexmarkTable::Bid,
            None => {
                return Err(ConnectorError::InvalidOption(
                    "the nexmark connector needs the option `table` ('person', 'auction' or 'bid')"
                        .into(),
                ));
            }
        };
        let events = options.take_u64("events")?.unwrap_or(10_000_000);
        let batch_size = options.take_u64("batch_size")?.unwrap_or(8192) as usize;
        let event_rate = options.take_u64("event_rate")?.unwrap_or(10_000);
        let base_time_ms = match options.take("base_time") {
            None => DEFAULT_BASE_TIME_MS,
            Some(text) => chrono::DateTime::parse_from_rfc3339(&text)
                .ok()
                .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
                .ok_or_else(|| {
                    ConnectorError::InvalidOption(format!(
                        "option `base_time` must be an RFC 3339 time such as 2024-01-01T00:00:00Z, not '{text}'"
                    ))
                })?,
        };
        for (key, value) in [
            ("events", events),
            ("batch_size", batch_size as u64),
            ("event_rate", event_rate),
        ] {
            if value == 0 {
                return Err(ConnectorError::InvalidOption(format!(
                    "option `{key}` must be positive"
                )));
            }
        }
        options.finish("nexmark", NEXMARK_SOURCE_OPTIONS)?;
        Ok(NexmarkSourceConfig {
            table,
            events,
            batch_size,
            event_rate,
            base_time_ms,
        })
    }

    /// The generator's configuration.
    pub fn generator(&self) -> nexmark::config::NexmarkConfig {
        nexmark::config::NexmarkConfig {
            base_time: self.base_time_ms,
            first_rate: self.event_rate as usize,
            next_rate: self.event_rate as usize,
            ..Default::default()
        }
    }
}
