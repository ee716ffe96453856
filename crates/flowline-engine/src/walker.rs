//! Walking a published flow: which action runs next.
//!
//! A node runs its actions in position order. After the last one, the walker takes the first
//! outgoing conditional edge whose condition holds, else the node's unconditional edge; with
//! neither, the run is done. When a step fails for good, the node's `onError` edge, if any, is
//! followed instead of failing the run. Nodes without actions are passed through.

use flowline_core::status::ErrorCategory;
use flowline_store::execution::{FlowVersion, VersionAction};

use crate::failure::Failure;
use crate::template::Conditions;

/// How many action-less nodes a walk may pass through before it is called a loop.
const MAX_EMPTY_HOPS: usize = 1_000;

/// Where a walk ends up.
#[derive(Debug, PartialEq)]
pub enum Walk<'a> {
    /// Run this action next.
    Run(&'a VersionAction),
    /// Nothing left: the run is done.
    Done,
}

/// The run's first action.
pub fn start<'a>(version: &'a FlowVersion, renderer: &dyn Conditions) -> Result<Walk<'a>, Failure> {
    match version.graph.nodes.first() {
        Some(node) => enter(version, &node.id, renderer, 0),
        None => Ok(Walk::Done),
    }
}

/// What follows `action` when it succeeded.
pub fn after_success<'a>(
    version: &'a FlowVersion,
    action: &VersionAction,
    renderer: &dyn Conditions,
) -> Result<Walk<'a>, Failure> {
    if let Some(next) = version
        .node_actions(&action.node_id)
        .find(|a| (a.position, a.id) > (action.position, action.id))
    {
        return Ok(Walk::Run(next));
    }
    leave(version, &action.node_id, renderer, 0)
}

/// Where `action`'s failure leads: the node's `onError` edge, if it has one.
pub fn after_failure<'a>(
    version: &'a FlowVersion,
    action: &VersionAction,
    renderer: &dyn Conditions,
) -> Option<Result<Walk<'a>, Failure>> {
    let edge = version
        .graph
        .edges
        .iter()
        .find(|e| e.source == action.node_id && e.on_error)?;
    Some(enter(version, &edge.target, renderer, 0))
}

fn enter<'a>(
    version: &'a FlowVersion,
    node: &str,
    renderer: &dyn Conditions,
    hops: usize,
) -> Result<Walk<'a>, Failure> {
    match version.node_actions(node).next() {
        Some(first) => Ok(Walk::Run(first)),
        None => leave(version, node, renderer, hops + 1),
    }
}

fn leave<'a>(
    version: &'a FlowVersion,
    node: &str,
    renderer: &dyn Conditions,
    hops: usize,
) -> Result<Walk<'a>, Failure> {
    if hops > MAX_EMPTY_HOPS {
        return Err(Failure::new(
            ErrorCategory::Validation,
            format!(
                "the walk passed {MAX_EMPTY_HOPS} nodes without actions: the graph loops through empty nodes"
            ),
            "give the loop an action, or a condition that ends it",
        ));
    }
    let outgoing = version
        .graph
        .edges
        .iter()
        .filter(|e| e.source == node && !e.on_error);
    let mut fallback = None;
    for edge in outgoing {
        match &edge.condition {
            Some(condition) => {
                let holds = renderer.condition(condition).map_err(|e| {
                    Failure::new(
                        ErrorCategory::Validation,
                        format!("the condition of the edge {} → {} failed: {}", edge.source, edge.target, e.message),
                        "fix the condition: it may use contact, vars, trigger, execution and workspace",
                    )
                })?;
                if holds {
                    return enter(version, &edge.target, renderer, hops);
                }
            }
            None => fallback = fallback.or(Some(edge)),
        }
    }
    match fallback {
        Some(edge) => enter(version, &edge.target, renderer, hops),
        None => Ok(Walk::Done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Renderer;
    use flowline_core::action::ActionType;
    use flowline_core::id::{ActionId, FlowId};
    use serde_json::json;

    fn action(node: &str, position: i32) -> VersionAction {
        VersionAction {
            id: ActionId::new(),
            node_id: node.into(),
            action_type: ActionType::SetVariable,
            action_config: json!({}),
            name: None,
            position,
            retry: None,
            timeout_ms: None,
        }
    }

    fn version(graph: serde_json::Value, actions: Vec<VersionAction>) -> FlowVersion {
        FlowVersion {
            flow_id: FlowId::new(),
            version: 1,
            graph: serde_json::from_value(graph).unwrap(),
            actions,
        }
    }

    fn node(id: &str) -> serde_json::Value {
        json!({"id": id, "position": {"x": 0, "y": 0}})
    }

    #[test]
    fn actions_run_in_position_order_then_conditions_pick_the_edge() {
        let (a0, a1, b, c) = (
            action("a", 0),
            action("a", 1),
            action("b", 0),
            action("c", 0),
        );
        let v = version(
            json!({"nodes": [node("a"), node("b"), node("c")], "edges": [
                {"source": "a", "target": "b", "condition": "vars.go == 'b'"},
                {"source": "a", "target": "c"}
            ]}),
            vec![a0.clone(), a1.clone(), b.clone(), c.clone()],
        );
        let to_b = Renderer::new(&json!({"vars": {"go": "b"}}));
        let to_c = Renderer::new(&json!({"vars": {"go": "x"}}));
        assert_eq!(start(&v, &to_b).unwrap(), Walk::Run(&v.actions[0]));
        assert_eq!(
            after_success(&v, &a0, &to_b).unwrap(),
            Walk::Run(&v.actions[1])
        );
        assert_eq!(
            after_success(&v, &a1, &to_b).unwrap(),
            Walk::Run(&v.actions[2])
        );
        assert_eq!(
            after_success(&v, &a1, &to_c).unwrap(),
            Walk::Run(&v.actions[3])
        );
        assert_eq!(after_success(&v, &c, &to_c).unwrap(), Walk::Done);
        assert!(after_failure(&v, &a0, &to_b).is_none());
    }

    #[test]
    fn empty_nodes_are_passed_through_and_error_edges_followed() {
        let (a, handler) = (action("a", 0), action("handler", 0));
        let v = version(
            json!({"nodes": [node("empty"), node("a"), node("handler")], "edges": [
                {"source": "empty", "target": "a"},
                {"source": "a", "target": "handler", "onError": true}
            ]}),
            vec![a.clone(), handler.clone()],
        );
        let r = Renderer::new(&json!({}));
        assert_eq!(start(&v, &r).unwrap(), Walk::Run(&v.actions[0]));
        assert_eq!(
            after_failure(&v, &a, &r).unwrap().unwrap(),
            Walk::Run(&v.actions[1])
        );
        assert_eq!(
            after_success(&v, &a, &r).unwrap(),
            Walk::Done,
            "an onError edge is not a success path"
        );
    }

    #[test]
    fn a_loop_of_empty_nodes_is_an_error_and_a_bad_condition_too() {
        let v = version(
            json!({"nodes": [node("x"), node("y")], "edges": [{"source": "x", "target": "y"}, {"source": "y", "target": "x"}]}),
            vec![],
        );
        let r = Renderer::new(&json!({}));
        assert_eq!(
            start(&v, &r).unwrap_err().error.category,
            ErrorCategory::Validation
        );
        let w = version(
            json!({"nodes": [node("x"), node("y")], "edges": [{"source": "x", "target": "y", "condition": "vars.nope"}]}),
            vec![],
        );
        let e = start(&w, &Renderer::new(&json!({"vars": {}}))).unwrap_err();
        assert!(e.error.message.contains("x → y"), "{}", e.error.message);
    }
}
