//! The end-to-end tests, in one test binary so that the workspace links it once: the CLI,
//! SQL semantics (sqllogictest files), the batch oracle, Delta interoperability, and the
//! emulator-backed S3, Kinesis, DynamoDB and webhook tests, and the dashboard in Chromium.

#[allow(dead_code)]
mod common;

mod bad_input;
mod cli;
mod dynamodb;
mod idleness;
mod interop;
mod joins;
mod kinesis;
mod kinesis_pipeline;
mod lookups;
mod oracle;
mod recovery;
mod s3;
mod slt;
mod ui;
mod updating;
mod webhook;
