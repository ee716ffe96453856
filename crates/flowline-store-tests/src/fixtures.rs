//! Small builders the cases share.

use flowline_core::graph::FlowGraph;
use flowline_core::id::WorkspaceId;
use flowline_core::token::ClearToken;
use flowline_store::Store;
use flowline_store::flow::{Flow, NewFlow};
use flowline_store::tenancy::{Actor, CreatedWorkspace, NewWorkspace};

/// Parameters for a workspace named `name`, with a fresh owner token.
pub fn new_workspace(name: &str) -> (NewWorkspace, ClearToken) {
    let token = ClearToken::generate();
    let params = NewWorkspace {
        name: name.to_owned(),
        owner_name: format!("{name} owner"),
        token_name: "first".to_owned(),
        token_hash: token.hash(),
        actor: Actor::system("test"),
    };
    (params, token)
}

/// A graph with nodes `start` and `next` joined by one edge.
pub fn simple_graph() -> FlowGraph {
    serde_json::from_value(serde_json::json!({
        "nodes": [
            {"id": "start", "position": {"x": 0, "y": 0}},
            {"id": "next", "label": "Next", "position": {"x": 200, "y": 0}}
        ],
        "edges": [{"source": "start", "target": "next"}]
    }))
    .expect("a valid graph")
}

/// A new workspace holding one draft flow with [`simple_graph`].
pub async fn workspace_with_flow(store: &dyn Store, name: &str) -> (CreatedWorkspace, Flow) {
    let (params, _) = new_workspace(name);
    let created = store.create_workspace(params).await.expect("workspace");
    let flow = store
        .create_flow(
            created.workspace.id,
            &Actor::system("test"),
            NewFlow {
                name: format!("{name} flow"),
                description: None,
                graph: simple_graph(),
                schedule: None,
                triggers: Vec::new(),
            },
        )
        .await
        .expect("flow");
    (created, flow)
}

/// The workspace id of a created workspace.
pub fn ws(created: &CreatedWorkspace) -> WorkspaceId {
    created.workspace.id
}
