//! `laketide check FILE` and `laketide explain FILE`.

use std::path::Path;

use laketide_engine::NodeKind;

use crate::error::Result;
use crate::pipeline::plan_file;

/// Validates a pipeline file and prints what it would run.
pub async fn check(file: &Path) -> Result<()> {
    let planned = plan_file(file, &Default::default()).await?;
    let nodes = planned.dataflow.nodes();
    let count = |f: fn(&NodeKind) -> bool| nodes.iter().filter(|n| f(&n.kind)).count();
    println!(
        "{}: ok ({} source{}, {} sink{}, {})",
        file.display(),
        count(|k| matches!(k, NodeKind::Source { .. })),
        if count(|k| matches!(k, NodeKind::Source { .. })) == 1 {
            ""
        } else {
            "s"
        },
        count(|k| matches!(k, NodeKind::Sink(_))),
        if count(|k| matches!(k, NodeKind::Sink(_))) == 1 {
            ""
        } else {
            "s"
        },
        if planned.bounded {
            "bounded: ends when its input is read"
        } else {
            "continuous"
        }
    );
    Ok(())
}

/// Prints the dataflow graph of a pipeline file.
pub async fn explain(file: &Path) -> Result<()> {
    let planned = plan_file(file, &Default::default()).await?;
    print!("{}", planned.dataflow.explain());
    Ok(())
}
