//! One module per subcommand.

pub mod bench;
pub mod bench_decode;
pub mod bench_dynamodb;
pub mod bench_lookup;
pub mod bench_nexmark;
pub mod bench_windows;
pub mod check;
pub mod generate;
pub mod maintain;
pub mod produce;
pub mod query;
pub mod run;
