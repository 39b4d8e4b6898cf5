//! The dataflow graph: sources, operators and sinks connected by edges.

use std::fmt::Write as _;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;

use crate::bad_records::BadRecords;
use crate::changelog::{StreamMode, has_change_column};
use crate::error::{EngineError, Result};
use crate::late_rows::LateRows;
use crate::metrics::{NodeMetrics, NodeRole, PipelineMetrics};
use crate::operator::Operator;
use crate::sink::Sink;
use crate::source::Source;
use crate::watermark::WatermarkStrategy;

/// Index of a node in its [`Dataflow`].
pub type NodeId = usize;

/// What a node does.
pub enum NodeKind {
    /// Reads records.
    Source {
        /// The connector.
        source: Box<dyn Source>,
        /// How its watermark is derived.
        watermark: WatermarkStrategy,
    },
    /// Transforms records.
    Operator(Box<dyn Operator>),
    /// Writes records.
    Sink(Box<dyn Sink>),
}

impl NodeKind {
    /// Whether the node reads, transforms or writes records.
    pub fn role(&self) -> NodeRole {
        match self {
            NodeKind::Source { .. } => NodeRole::Source,
            NodeKind::Operator(_) => NodeRole::Operator,
            NodeKind::Sink(_) => NodeRole::Sink,
        }
    }
}

/// One node of the graph.
pub struct Node {
    /// Short name (table name, operator kind).
    pub name: String,
    /// One line for `explain`.
    pub description: String,
    /// What the node's state depends on, for its checkpoint fingerprint, when that is less
    /// than the description (set with [`Dataflow::set_state_signature`]; e.g. an aggregate's
    /// emission interval changes when results are emitted, not what its state means).
    pub state_signature: Option<String>,
    /// The node's behaviour.
    pub kind: NodeKind,
    /// Upstream nodes; the position is the input number seen by the operator.
    pub inputs: Vec<NodeId>,
    /// Schema of the rows this node emits (for sinks: the rows it receives).
    pub schema: SchemaRef,
    /// Whether the rows it emits are final or change (for sinks: the rows it receives).
    pub mode: StreamMode,
    /// The node's counters.
    pub metrics: Arc<NodeMetrics>,
    /// The late-row handlers of the sources upstream of this node (a source: its own), which
    /// the late rows an operator drops are handed to.
    pub late: Vec<Arc<LateRows>>,
}

/// A streaming pipeline: a directed acyclic graph built source-first, so every node's inputs
/// have smaller ids. One source node may feed several downstream nodes (shared scans).
#[derive(Default)]
pub struct Dataflow {
    nodes: Vec<Node>,
    metrics: PipelineMetrics,
}

impl Dataflow {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a source with its watermark strategy and (optional) bad-record handler.
    pub fn add_source(
        &mut self,
        name: impl Into<String>,
        description: impl Into<String>,
        source: Box<dyn Source>,
        watermark: WatermarkStrategy,
        bad_records: Option<Arc<BadRecords>>,
    ) -> NodeId {
        let name = name.into();
        let schema = source.schema();
        let metrics = self.metrics.register(NodeRole::Source, name.clone());
        let late = Arc::new(LateRows::new(name.clone(), None));
        self.metrics.register_late_rows(late.clone());
        if let Some(b) = bad_records {
            self.metrics.register_bad_records(b);
        }
        if let Some(status) = source.status() {
            self.metrics
                .register_service_status(NodeRole::Source, name.clone(), status);
        }
        self.push(Node {
            name,
            description: description.into(),
            state_signature: None,
            kind: NodeKind::Source { source, watermark },
            inputs: vec![],
            schema,
            mode: StreamMode::AppendOnly,
            metrics,
            late: vec![late],
        })
    }

    /// Adds an operator reading from `inputs`. Fails with a [`EngineError::User`] error when
    /// the operator refuses its inputs' modes (see [`Operator::output_mode`]).
    pub fn add_operator(
        &mut self,
        name: impl Into<String>,
        description: impl Into<String>,
        operator: Box<dyn Operator>,
        inputs: Vec<NodeId>,
    ) -> Result<NodeId> {
        self.check_inputs(&inputs)?;
        let name = name.into();
        let schema = operator.output_schema();
        let input_modes: Vec<StreamMode> =
            inputs.iter().map(|i| self.nodes[*i].mode.clone()).collect();
        let mode = operator
            .output_mode(&input_modes)
            .map_err(|why| EngineError::User(format!("{name}: {why}")))?;
        check_mode(&name, &schema, &mode)?;
        let metrics = self.metrics.register(NodeRole::Operator, name.clone());
        if let Some(status) = operator.status() {
            self.metrics
                .register_service_status(NodeRole::Operator, name.clone(), status);
        }
        let mut late: Vec<Arc<LateRows>> = Vec::new();
        for input in &inputs {
            for handler in &self.nodes[*input].late {
                if !late.iter().any(|l| Arc::ptr_eq(l, handler)) {
                    late.push(handler.clone());
                }
            }
        }
        Ok(self.push(Node {
            name,
            description: description.into(),
            state_signature: None,
            kind: NodeKind::Operator(operator),
            inputs,
            schema,
            mode,
            metrics,
            late,
        }))
    }

    /// Adds a sink reading from `input`. Fails with a [`EngineError::User`] error when the
    /// sink cannot apply the input's mode (see [`Sink::accepts`]).
    pub fn add_sink(
        &mut self,
        name: impl Into<String>,
        description: impl Into<String>,
        sink: Box<dyn Sink>,
        input: NodeId,
    ) -> Result<NodeId> {
        self.check_inputs(&[input])?;
        let name = name.into();
        let schema = self.nodes[input].schema.clone();
        let mode = self.nodes[input].mode.clone();
        sink.accepts(&schema, &mode)
            .map_err(|why| EngineError::User(format!("sink `{name}`: {why}")))?;
        let metrics = self.metrics.register(NodeRole::Sink, name.clone());
        if let Some(status) = sink.status() {
            self.metrics
                .register_service_status(NodeRole::Sink, name.clone(), status);
        }
        Ok(self.push(Node {
            name,
            description: description.into(),
            state_signature: None,
            kind: NodeKind::Sink(sink),
            inputs: vec![input],
            schema,
            mode,
            metrics,
            late: Vec::new(),
        }))
    }

    /// Keeps the late rows attributed to source `source` in the JSON-lines file `path`
    /// (`late_dead_letter_path`), besides counting them.
    pub fn keep_late_rows(&mut self, source: NodeId, path: std::path::PathBuf) -> Result<()> {
        match self.nodes.get(source) {
            Some(node) if matches!(node.kind, NodeKind::Source { .. }) => {
                node.late[0].keep_in(path);
                Ok(())
            }
            _ => Err(EngineError::Internal(format!(
                "node {source} is not a source"
            ))),
        }
    }

    fn check_inputs(&self, inputs: &[NodeId]) -> Result<()> {
        if inputs.is_empty() {
            return Err(EngineError::Internal(
                "a node needs at least one input".into(),
            ));
        }
        for i in inputs {
            match self.nodes.get(*i) {
                None => {
                    return Err(EngineError::Internal(format!(
                        "input node {i} does not exist"
                    )));
                }
                Some(n) if matches!(n.kind, NodeKind::Sink(_)) => {
                    return Err(EngineError::Internal(format!(
                        "node {i} is a sink and has no output"
                    )));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Replaces every sink by what `wrap` makes of it (given the sink's name and the mode of
    /// the rows it receives), e.g. to observe the rows that reach the sinks. Call before
    /// running.
    pub fn wrap_sinks(
        &mut self,
        mut wrap: impl FnMut(&str, &StreamMode, Box<dyn Sink>) -> Box<dyn Sink>,
    ) {
        self.nodes = std::mem::take(&mut self.nodes)
            .into_iter()
            .map(|mut node| {
                node.kind = match node.kind {
                    NodeKind::Sink(sink) => NodeKind::Sink(wrap(&node.name, &node.mode, sink)),
                    other => other,
                };
                node
            })
            .collect();
    }

    /// Sets what `node`'s state depends on, for its checkpoint fingerprint, instead of its
    /// description: a run whose node differs only outside the signature keeps the state.
    pub fn set_state_signature(&mut self, node: NodeId, signature: impl Into<String>) {
        self.nodes[node].state_signature = Some(signature.into());
    }

    /// The schema a node emits.
    pub fn schema(&self, node: NodeId) -> SchemaRef {
        self.nodes[node].schema.clone()
    }

    /// The mode of what a node emits.
    pub fn mode(&self, node: NodeId) -> &StreamMode {
        &self.nodes[node].mode
    }

    /// The nodes, in id order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Takes the nodes out (used by the runner).
    pub(crate) fn into_parts(self) -> (Vec<Node>, PipelineMetrics) {
        (self.nodes, self.metrics)
    }

    /// The pipeline's counters; clones share the same counters, so a caller can watch a run.
    pub fn metrics(&self) -> PipelineMetrics {
        self.metrics.clone()
    }

    /// A readable description of the graph, one node per line with its inputs.
    pub fn explain(&self) -> String {
        let mut s = String::new();
        for (id, n) in self.nodes.iter().enumerate() {
            let role = n.kind.role().name();
            let _ = write!(s, "[{id}] {role} {}: {}", n.name, n.description);
            if !n.inputs.is_empty() {
                let inputs: Vec<String> = n.inputs.iter().map(|i| format!("[{i}]")).collect();
                let _ = write!(s, "  <- {}", inputs.join(", "));
            }
            s.push('\n');
            if let StreamMode::Updating { key } = &n.mode
                && !matches!(n.kind, NodeKind::Sink(_))
            {
                let names: Vec<&str> = key
                    .iter()
                    .map(|k| n.schema.field(*k).name().as_str())
                    .collect();
                let _ = writeln!(s, "      updating, key: [{}]", names.join(", "));
            }
            if !matches!(n.kind, NodeKind::Sink(_)) {
                let cols: Vec<String> = n
                    .schema
                    .fields()
                    .iter()
                    .map(|f| format!("{}: {}", f.name(), f.data_type()))
                    .collect();
                let _ = writeln!(s, "      schema: {}", cols.join(", "));
            }
        }
        s
    }
}

/// Checks that an updating node's schema ends with the change column and that its key columns
/// exist (and are not the change column).
fn check_mode(name: &str, schema: &SchemaRef, mode: &StreamMode) -> Result<()> {
    if let StreamMode::Updating { key } = mode {
        if !has_change_column(schema) {
            return Err(EngineError::Internal(format!(
                "{name} declares an updating output without the change column last"
            )));
        }
        if let Some(k) = key.iter().find(|k| **k + 1 >= schema.fields().len()) {
            return Err(EngineError::Internal(format!(
                "{name} declares key column {k}, which its output does not have"
            )));
        }
    }
    Ok(())
}
