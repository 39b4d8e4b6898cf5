//! Builds sources and sinks from a table's `connector` and `WITH` options. Building validates
//! every option and does no I/O, so `laketide check` can run it on any machine.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use laketide_engine::{BadRecords, LookupTable, OnError, Sink, Source, SourcePoll};

use crate::blackhole::BlackholeSink;
use crate::changelog::ChangelogAsRows;
use crate::console::ConsoleSink;
use crate::delta::{DeltaLookup, DeltaSink, DeltaSinkConfig, DeltaUpsertSink};
use crate::dynamodb::{DynamoDbLookup, DynamoDbLookupConfig, DynamoDbSink, DynamoDbSinkConfig};
use crate::error::{ConnectorError, Result};
use crate::file::{FileLookup, FileMode, FileSource, FileSourceConfig};
use crate::filesystem::{FilesystemSink, FilesystemSinkConfig};
use crate::format::EventTimeBound;
use crate::kinesis::{KinesisSink, KinesisSinkConfig, KinesisSource, KinesisSourceConfig};
use crate::metadata::{MetadataColumn, split_schema};
use crate::nexmark::{NexmarkSource, NexmarkSourceConfig};
use crate::options::Options;

/// Connectors that can be read from.
pub const SOURCE_CONNECTORS: &[&str] = &["file", "kinesis", "nexmark"];
/// Connectors that lookup joins can read (`JOIN t FOR SYSTEM_TIME AS OF …`).
pub const LOOKUP_CONNECTORS: &[&str] = &["delta", "dynamodb", "file"];

/// Connectors that can be written to.
pub const SINK_CONNECTORS: &[&str] = &[
    "delta",
    "filesystem",
    "kinesis",
    "dynamodb",
    "webhook",
    "console",
    "blackhole",
];

/// A source ready to be added to a dataflow.
pub struct BuiltSource {
    /// The connector.
    pub source: Box<dyn Source>,
    /// One line for `explain`.
    pub description: String,
    /// Its bad-record handler, for the run's counters.
    pub bad_records: Option<Arc<BadRecords>>,
    /// Whether the source ends by itself.
    pub bounded: bool,
}

/// A sink ready to be added to a dataflow.
pub struct BuiltSink {
    /// The connector.
    pub sink: Box<dyn Sink>,
    /// One line for `explain`.
    pub description: String,
}

fn unknown(connector: &str, role: &str, known: &[&str]) -> ConnectorError {
    let other: Vec<&str> = if role == "source" {
        SINK_CONNECTORS
    } else {
        SOURCE_CONNECTORS
    }
    .to_vec();
    let hint = if other.contains(&connector) {
        format!(
            "; '{connector}' can only be used as a {}",
            if role == "source" { "sink" } else { "source" }
        )
    } else {
        String::new()
    };
    ConnectorError::InvalidOption(format!(
        "unknown {role} connector '{connector}'; {role}s are: {}{hint}",
        known.join(", ")
    ))
}

/// Builds the source of table `table` with rows of `schema`, whose `metadata` columns are
/// filled from record metadata (`col TYPE METADATA FROM 'key'`). Records beyond
/// `event_time_bound` are bad records.
pub fn build_source(
    table: &str,
    schema: SchemaRef,
    metadata: &[MetadataColumn],
    connector: &str,
    options: Options,
    event_time_bound: Option<EventTimeBound>,
) -> Result<BuiltSource> {
    match connector {
        "kinesis" => {
            let mut config = KinesisSourceConfig::from_options(options)?;
            config.event_time_bound = event_time_bound;
            let bad = Arc::new(BadRecords::new(table, config.on_error.clone()));
            let description = format!(
                "kinesis {} ({}, from {})",
                config.stream,
                config.format.name(),
                match config.start_position {
                    crate::kinesis::StartPosition::Latest => "latest".to_string(),
                    crate::kinesis::StartPosition::TrimHorizon => "trim_horizon".to_string(),
                    crate::kinesis::StartPosition::AtTimestamp(t) => format!("timestamp {t}"),
                }
            );
            let source = KinesisSource::new(
                config,
                schema,
                metadata.to_vec(),
                bad.clone(),
                Default::default(),
            )?;
            Ok(BuiltSource {
                source: Box::new(source),
                description,
                bad_records: Some(bad),
                bounded: false,
            })
        }
        "file" => {
            split_schema("file", &schema, metadata, &[])?;
            let mut config = FileSourceConfig::from_options(options)?;
            config.event_time_bound = event_time_bound;
            let bad = Arc::new(BadRecords::new(table, config.on_error.clone()));
            let description = format!(
                "file {} ({}, {})",
                config.path,
                config.format.name(),
                if config.mode == FileMode::Once {
                    "once"
                } else {
                    "continuous"
                }
            );
            let bounded = config.mode == FileMode::Once;
            Ok(BuiltSource {
                source: Box::new(FileSource::new(config, schema, bad.clone())),
                description,
                bad_records: Some(bad),
                bounded,
            })
        }
        "nexmark" => {
            split_schema("nexmark", &schema, metadata, &[])?;
            let config = NexmarkSourceConfig::from_options(options)?;
            let description = format!("nexmark {} ({} events)", config.table.name(), config.events);
            Ok(BuiltSource {
                source: Box::new(NexmarkSource::new(config, schema)?),
                description,
                bad_records: None,
                bounded: true,
            })
        }
        other => Err(unknown(other, "source", SOURCE_CONNECTORS)),
    }
}

/// Reads everything a source holds right now (a bounded read), for ad-hoc queries over a
/// pipeline's inputs. Bad records are skipped and counted rather than dead-lettered again.
/// File sources can be read this way, and Nexmark sources (every event they generate).
pub async fn snapshot_source(
    table: &str,
    schema: SchemaRef,
    metadata: &[MetadataColumn],
    connector: &str,
    options: Options,
) -> Result<Vec<RecordBatch>> {
    match connector {
        "file" => {
            split_schema("file", &schema, metadata, &[])?;
            let mut config = FileSourceConfig::from_options(options)?;
            config.mode = FileMode::Once;
            if matches!(config.on_error, OnError::DeadLetter(_)) {
                config.on_error = OnError::Skip;
            }
            let bad = Arc::new(BadRecords::new(table, config.on_error.clone()));
            read_all(Box::new(FileSource::new(config, schema, bad))).await
        }
        // Deterministic: its snapshot is every event it generates.
        "nexmark" => {
            split_schema("nexmark", &schema, metadata, &[])?;
            let config = NexmarkSourceConfig::from_options(options)?;
            read_all(Box::new(NexmarkSource::new(config, schema)?)).await
        }
        "kinesis" => Err(ConnectorError::InvalidOption(format!(
            "table `{table}` reads a Kinesis stream, which has no snapshot to query; query the tables it feeds"
        ))),
        other => Err(unknown(other, "source", SOURCE_CONNECTORS)),
    }
}

/// Every batch of a bounded source.
pub(crate) async fn read_all(mut source: Box<dyn Source>) -> Result<Vec<RecordBatch>> {
    source.open().await?;
    let mut batches = Vec::new();
    loop {
        match source.poll_next().await? {
            SourcePoll::Batch { batch, .. } => batches.push(batch),
            SourcePoll::Finished => return Ok(batches),
            _ => {}
        }
    }
}

/// Whether tables of `connector` can only be read by lookup joins (not as streams).
pub fn is_lookup_only(connector: &str) -> bool {
    LOOKUP_CONNECTORS.contains(&connector) && !SOURCE_CONNECTORS.contains(&connector)
}

/// Builds the lookup table `table` with rows of `schema`, read by the columns `key` (names,
/// in the order the join gives them; the table's `key_columns` may order them otherwise).
/// Validates every option and does no I/O.
pub fn build_lookup(
    table: &str,
    schema: SchemaRef,
    connector: &str,
    mut options: Options,
    key: &[String],
) -> Result<Arc<dyn LookupTable>> {
    match connector {
        "dynamodb" => {
            let config = DynamoDbLookupConfig::from_options(options)?;
            Ok(Arc::new(DynamoDbLookup::new(table, config, schema, key)?))
        }
        "delta" => {
            let key_columns = column_positions(table, &schema, key)?;
            Ok(Arc::new(DeltaLookup::new(
                table,
                options,
                schema,
                key_columns,
            )?))
        }
        "file" => {
            let reload_interval = options.take_duration("lookup.reload_interval")?;
            let config = FileSourceConfig::from_options(options)?;
            let key_columns = column_positions(table, &schema, key)?;
            Ok(Arc::new(FileLookup::new(
                table,
                config,
                reload_interval,
                schema,
                key_columns,
            )?))
        }
        other => Err(ConnectorError::InvalidOption(format!(
            "'{other}' tables cannot be read with FOR SYSTEM_TIME AS OF; lookup tables are: {}",
            LOOKUP_CONNECTORS.join(", ")
        ))),
    }
}

/// The positions of columns `names` in `schema`, table `table`'s.
fn column_positions(table: &str, schema: &SchemaRef, names: &[String]) -> Result<Vec<usize>> {
    (names.iter())
        .map(|k| {
            schema.index_of(k).map_err(|_| {
                ConnectorError::InvalidOption(format!("`{k}` is not a column of `{table}`"))
            })
        })
        .collect()
}

/// Builds the sink of table `table`.
pub fn build_sink(table: &str, connector: &str, options: Options) -> Result<BuiltSink> {
    match connector {
        "delta" => {
            let config = DeltaSinkConfig::from_options(options)?;
            let mut description = format!("delta {}", config.path);
            if !config.partition_by.is_empty() {
                description.push_str(&format!(
                    " partitioned by ({})",
                    config.partition_by.join(", ")
                ));
            }
            if !config.primary_key.is_empty() {
                description.push_str(&format!(
                    ", one row per ({})",
                    config.primary_key.join(", ")
                ));
                return Ok(BuiltSink {
                    sink: Box::new(DeltaUpsertSink::new(table, config)),
                    description,
                });
            }
            Ok(BuiltSink {
                sink: Box::new(DeltaSink::new(table, config)),
                description,
            })
        }
        "filesystem" => {
            let config = FilesystemSinkConfig::from_options(options)?;
            let description = format!("filesystem {} ({})", config.path, config.format.extension());
            Ok(BuiltSink {
                sink: Box::new(ChangelogAsRows::new(Box::new(FilesystemSink::new(
                    table, config,
                )))),
                description,
            })
        }
        "kinesis" => {
            let config = KinesisSinkConfig::from_options(options)?;
            let description = format!(
                "kinesis {} ({}, partition key {})",
                config.stream,
                config.format.name(),
                config.partition_key.as_deref().unwrap_or("random")
            );
            Ok(BuiltSink {
                sink: Box::new(ChangelogAsRows::new(Box::new(KinesisSink::new(
                    table, config,
                )))),
                description,
            })
        }
        "dynamodb" => {
            let config = DynamoDbSinkConfig::from_options(options)?;
            let description = format!(
                "dynamodb {} (key {}{})",
                config.table,
                config.primary_key.join(", "),
                match &config.mode {
                    crate::dynamodb::WriteMode::Upsert => String::new(),
                    crate::dynamodb::WriteMode::Update { .. } => ", update".to_string(),
                }
            );
            Ok(BuiltSink {
                sink: Box::new(DynamoDbSink::new(table, config)),
                description,
            })
        }
        "webhook" => {
            let config = crate::webhook::WebhookSinkConfig::from_options(options)?;
            let description = format!(
                "webhook POST {} ({} row{} per request{})",
                config.display_url(),
                config.rows_per_request,
                if config.rows_per_request == 1 {
                    ""
                } else {
                    "s"
                },
                if config.secret_env.is_some() {
                    ", signed"
                } else {
                    ""
                }
            );
            Ok(BuiltSink {
                sink: Box::new(ChangelogAsRows::new(Box::new(
                    crate::webhook::WebhookSink::new(table, config),
                ))),
                description,
            })
        }
        "console" => Ok(BuiltSink {
            sink: Box::new(ConsoleSink::from_options(table, options)?),
            description: "console".into(),
        }),
        "blackhole" => Ok(BuiltSink {
            sink: Box::new(BlackholeSink::from_options(options)?),
            description: "blackhole (rows are discarded)".into(),
        }),
        other => Err(unknown(other, "sink", SINK_CONNECTORS)),
    }
}
