//! `laketide generate`: write clickstream events as JSON lines.

use std::path::Path;

use crate::datagen::{ClickstreamSpec, write_clickstream};
use crate::error::Result;

/// Writes `spec`'s events into `out` and reports the files.
pub fn generate(out: &Path, spec: &ClickstreamSpec) -> Result<()> {
    let started = std::time::Instant::now();
    let files = write_clickstream(out, spec)?;
    eprintln!(
        "wrote {} events into {} files under {} in {:.2}s",
        spec.events,
        files.len(),
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
