//! Stable node ids and per-node fingerprints, which address a node's state in checkpoints.
//!
//! A node's id does not depend on its position in the graph, so adding, removing or
//! reordering other statements leaves it alone:
//!
//! - a source is `source:<name>`;
//! - a sink is `<name>[<n>]`, `n` counting the earlier sinks of the same name (the n-th
//!   `INSERT INTO` that table);
//! - an operator is the id of the first sink that reaches it (in sink order), followed by the
//!   names of the nodes on the way down, each with its input number where a node has several
//!   inputs: `customer_stats[0]/project/aggregate/project`, `totals[0]/union/1:project`.
//!
//! A node's fingerprint covers what it computes: its role, name, description (or the state
//! signature it was given instead), output schema and mode, and the fingerprints of its
//! inputs. State is restored only into a node with the
//! same id and fingerprint; a node whose query changed keeps its id but not its fingerprint,
//! so its old state is refused rather than misread.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::checkpoint::NodeKey;
use crate::graph::{Node, NodeKind};

/// The checkpoint key of every node, in node order.
pub(crate) fn node_keys(nodes: &[Node]) -> Vec<NodeKey> {
    let ids = stable_ids(nodes);
    let fingerprints = fingerprints(nodes);
    nodes
        .iter()
        .zip(ids)
        .zip(fingerprints)
        .map(|((node, id), fingerprint)| NodeKey {
            id,
            name: node.name.clone(),
            fingerprint,
        })
        .collect()
}

/// The stable id of every node, in node order (unique).
fn stable_ids(nodes: &[Node]) -> Vec<String> {
    let mut ids: Vec<Option<String>> = vec![None; nodes.len()];
    let mut sinks_per_name: HashMap<&str, usize> = HashMap::new();
    for (i, node) in nodes.iter().enumerate() {
        match node.kind {
            NodeKind::Source { .. } => ids[i] = Some(format!("source:{}", node.name)),
            NodeKind::Sink(_) => {
                let n = sinks_per_name.entry(node.name.as_str()).or_default();
                ids[i] = Some(format!("{}[{n}]", node.name));
                *n += 1;
            }
            NodeKind::Operator(_) => {}
        }
    }
    for i in 0..nodes.len() {
        if matches!(nodes[i].kind, NodeKind::Sink(_)) {
            name_inputs(nodes, i, &mut ids);
        }
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    ids.into_iter()
        .enumerate()
        .map(|(i, id)| {
            // Every operator feeds a sink; a graph built otherwise still gets an id.
            let id = id.unwrap_or_else(|| format!("node:{}", nodes[i].name));
            let copies = seen.entry(id.clone()).or_default();
            *copies += 1;
            if *copies == 1 {
                id
            } else {
                format!("{id}#{copies}")
            }
        })
        .collect()
}

/// Names the operators upstream of `node` that have no id yet, depth first.
fn name_inputs(nodes: &[Node], node: usize, ids: &mut [Option<String>]) {
    let mut stack = vec![node];
    while let Some(at) = stack.pop() {
        let parent = ids[at].clone().expect("named before its inputs");
        let several = nodes[at].inputs.len() > 1;
        for (pos, input) in nodes[at].inputs.iter().enumerate() {
            if ids[*input].is_some() {
                continue;
            }
            let name = &nodes[*input].name;
            ids[*input] = Some(if several {
                format!("{parent}/{pos}:{name}")
            } else {
                format!("{parent}/{name}")
            });
            stack.push(*input);
        }
    }
}

/// The fingerprint of every node, in node order (inputs come before the nodes they feed).
fn fingerprints(nodes: &[Node]) -> Vec<String> {
    let mut done: Vec<String> = Vec::with_capacity(nodes.len());
    for node in nodes {
        let mut text = format!(
            "{} {}: {}\n{:?}\n{:?}\n",
            node.kind.role().name(),
            node.name,
            node.state_signature.as_deref().unwrap_or(&node.description),
            node.schema.fields(),
            node.mode
        );
        for input in &node.inputs {
            let _ = writeln!(text, "<- {}", done[*input]);
        }
        done.push(format!("{:08x}", crc32fast::hash(text.as_bytes())));
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Result;
    use crate::graph::Dataflow;
    use crate::operators::{FilterOperator, UnionOperator};
    use crate::sink::{Sink, SinkSummary};
    use crate::source::{Source, SourcePoll};
    use crate::watermark::WatermarkStrategy;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::physical_expr::expressions::lit;
    use std::sync::Arc;

    struct Empty(SchemaRef);

    #[async_trait::async_trait]
    impl Source for Empty {
        fn schema(&self) -> SchemaRef {
            self.0.clone()
        }
        async fn open(&mut self) -> Result<()> {
            Ok(())
        }
        async fn poll_next(&mut self) -> Result<SourcePoll> {
            Ok(SourcePoll::Finished)
        }
    }

    struct NullSink;

    #[async_trait::async_trait]
    impl Sink for NullSink {
        async fn open(&mut self, _schema: SchemaRef) -> Result<()> {
            Ok(())
        }
        async fn write_batch(&mut self, _batch: RecordBatch) -> Result<()> {
            Ok(())
        }
        async fn close(&mut self) -> Result<SinkSummary> {
            Ok(SinkSummary::default())
        }
    }

    fn source(flow: &mut Dataflow, name: &str) -> usize {
        let source = Box::new(Empty(schema()));
        flow.add_source(
            name,
            "empty",
            source,
            WatermarkStrategy::ProcessingTime,
            None,
        )
    }

    fn filter(flow: &mut Dataflow, text: &str, input: usize) -> usize {
        let op = Box::new(FilterOperator::new(lit(true), schema()));
        flow.add_operator("filter", text, op, vec![input]).unwrap()
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]))
    }

    /// `extra` adds a statement into `other` before the others.
    fn flow(extra: bool, filter_text: &str) -> Vec<NodeKey> {
        let mut flow = Dataflow::new();
        let a = source(&mut flow, "a");
        let b = source(&mut flow, "b");
        if extra {
            let f = filter(&mut flow, "x > 1", a);
            flow.add_sink("other", "null", Box::new(NullSink), f)
                .unwrap();
        }
        let f = filter(&mut flow, filter_text, b);
        let u = flow
            .add_operator(
                "union",
                "a + b",
                Box::new(UnionOperator::new(schema())),
                vec![a, f],
            )
            .unwrap();
        flow.add_sink("out", "null", Box::new(NullSink), u).unwrap();
        flow.add_sink("out", "null", Box::new(NullSink), a).unwrap();
        node_keys(flow.nodes())
    }

    fn find<'a>(keys: &'a [NodeKey], id: &str) -> &'a NodeKey {
        keys.iter()
            .find(|k| k.id == id)
            .unwrap_or_else(|| panic!("{id} in {keys:?}"))
    }

    #[test]
    fn ids_follow_the_statements_not_the_positions() {
        let plain = flow(false, "x > 0");
        let ids: Vec<&str> = plain.iter().map(|k| k.id.as_str()).collect();
        assert_eq!(
            ids,
            vec![
                "source:a",
                "source:b",
                "out[0]/union/1:filter",
                "out[0]/union",
                "out[0]",
                "out[1]"
            ]
        );
        // Another statement first: every node of the first pipeline keeps id and fingerprint.
        let more = flow(true, "x > 0");
        for key in &plain {
            assert_eq!(find(&more, &key.id), key);
        }
        assert_eq!(find(&more, "other[0]/filter").name, "filter");
        // A changed filter keeps its id; it and everything downstream get new fingerprints.
        let changed = flow(false, "x > 5");
        for (old, new) in plain.iter().zip(&changed) {
            assert_eq!(old.id, new.id);
            let downstream = ["out[0]/union/1:filter", "out[0]/union", "out[0]"];
            assert_eq!(
                old.fingerprint != new.fingerprint,
                downstream.contains(&old.id.as_str()),
                "{}",
                old.id
            );
        }
    }
}
