//! A flow's graph: nodes on a canvas, edges between them with optional conditions.
//!
//! A run starts at the first node of `nodes`. After a node's actions, the walker follows the
//! first outgoing edge whose condition holds, else the node's unconditional edge; an `onError`
//! edge is followed instead when a step of the node fails.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::validation::ValidationErrors;

/// The most nodes a graph may have.
pub const MAX_NODES: usize = 500;
/// The most edges a graph may have.
pub const MAX_EDGES: usize = 2_000;
const MAX_ID_LEN: usize = 64;
const MAX_LABEL_LEN: usize = 200;
const MAX_CONDITION_LEN: usize = 2_000;

/// A flow's graph.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlowGraph {
    /// The nodes; the first one is where a run starts.
    #[serde(default)]
    pub nodes: Vec<Node>,
    /// The edges.
    #[serde(default)]
    pub edges: Vec<Edge>,
}

/// A node: a place on the canvas holding an ordered list of actions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Node {
    /// Unique within the graph: letters, digits, `_` and `-`.
    pub id: String,
    /// A label for the canvas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Where the node sits on the canvas.
    pub position: Position,
}

/// A point on the canvas.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Position {
    /// Horizontal.
    pub x: f64,
    /// Vertical.
    pub y: f64,
}

/// A directed edge between two nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Edge {
    /// The node the edge leaves.
    pub source: String,
    /// The node the edge enters.
    pub target: String,
    /// A template expression over the run's context; the edge is taken when it is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Taken when a step of the source node fails, instead of failing the run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_error: bool,
}

impl FlowGraph {
    /// Whether a node with this id exists.
    pub fn has_node(&self, id: &str) -> bool {
        self.nodes.iter().any(|n| n.id == id)
    }

    /// Checks ids, references, sizes and that each node has at most one unconditional and one
    /// error edge. Field paths are relative to the graph (`nodes[1].id`).
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        if self.nodes.len() > MAX_NODES {
            errors.push("nodes", format!("at most {MAX_NODES} nodes"));
        }
        if self.edges.len() > MAX_EDGES {
            errors.push("edges", format!("at most {MAX_EDGES} edges"));
        }
        let mut ids = HashSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if !is_node_id(&node.id) {
                errors.push(
                    format!("nodes[{i}].id"),
                    format!("1 to {MAX_ID_LEN} letters, digits, `_` or `-`"),
                );
            } else if !ids.insert(node.id.as_str()) {
                errors.push(
                    format!("nodes[{i}].id"),
                    format!("duplicate node id `{}`", node.id),
                );
            }
            if node
                .label
                .as_ref()
                .is_some_and(|l| l.chars().count() > MAX_LABEL_LEN)
            {
                errors.push(
                    format!("nodes[{i}].label"),
                    format!("at most {MAX_LABEL_LEN} characters"),
                );
            }
            if !node.position.x.is_finite() || !node.position.y.is_finite() {
                errors.push(format!("nodes[{i}].position"), "must be finite numbers");
            }
        }
        let mut unconditional = HashSet::new();
        let mut on_error = HashSet::new();
        for (i, edge) in self.edges.iter().enumerate() {
            for (name, end) in [("source", &edge.source), ("target", &edge.target)] {
                if !ids.contains(end.as_str()) {
                    errors.push(
                        format!("edges[{i}].{name}"),
                        format!("no node `{end}` in this graph"),
                    );
                }
            }
            match &edge.condition {
                Some(c) if c.trim().is_empty() || c.len() > MAX_CONDITION_LEN => errors.push(
                    format!("edges[{i}].condition"),
                    format!("1 to {MAX_CONDITION_LEN} characters, or leave it out"),
                ),
                Some(_) if edge.on_error => errors.push(
                    format!("edges[{i}].condition"),
                    "an onError edge takes no condition",
                ),
                Some(_) => {}
                None if edge.on_error => {
                    if !on_error.insert(edge.source.as_str()) {
                        errors.push(
                            format!("edges[{i}].onError"),
                            format!("node `{}` already has an onError edge", edge.source),
                        );
                    }
                }
                None => {
                    if !unconditional.insert(edge.source.as_str()) {
                        errors.push(
                            format!("edges[{i}]"),
                            format!("node `{}` already has an unconditional edge", edge.source),
                        );
                    }
                }
            }
        }
        errors.into_result()
    }
}

fn is_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn graph(v: serde_json::Value) -> FlowGraph {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_cyclic_graph_with_conditions_is_valid() {
        let g = graph(json!({
            "nodes": [{"id": "a", "position": {"x": 0, "y": 0}}, {"id": "b", "position": {"x": 1, "y": 0}}],
            "edges": [
                {"source": "a", "target": "b"},
                {"source": "b", "target": "a", "condition": "{{ vars.again }}"},
                {"source": "b", "target": "a", "onError": true}
            ]
        }));
        g.validate().unwrap();
        assert!(g.has_node("b") && !g.has_node("c"));
    }

    #[test]
    fn broken_references_and_duplicates_are_reported() {
        let g = graph(json!({
            "nodes": [{"id": "a", "position": {"x": 0, "y": 0}}, {"id": "a", "position": {"x": 0, "y": 0}}, {"id": "bad id", "position": {"x": 0, "y": 0}}],
            "edges": [{"source": "a", "target": "zz"}, {"source": "a", "target": "a"}]
        }));
        let fields: Vec<_> = g
            .validate()
            .unwrap_err()
            .0
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            ["nodes[1].id", "nodes[2].id", "edges[0].target", "edges[1]"]
        );
    }
}
