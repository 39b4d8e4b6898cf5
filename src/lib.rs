//! The `laketide` command: run streaming SQL pipelines, validate and explain them, and query
//! the lake. The library part is what the binary and the end-to-end tests share.

pub mod checkpointing;
pub mod commands;
pub mod datagen;
mod error;
pub mod lake;
pub mod oracle;
pub mod pipeline;
pub mod progress;
pub mod ui;

pub use error::{CliError, Result};
