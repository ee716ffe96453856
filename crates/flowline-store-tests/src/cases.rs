//! The cases. Each takes a fresh, migrated, empty store.

use flowline_core::action::ActionType;
use flowline_core::id::{ActionId, FlowId, MemberId};
use flowline_core::retry::RetryPolicy;
use flowline_core::role::Role;
use flowline_core::status::FlowStatus;
use flowline_core::token::ClearToken;
use flowline_store::audit::AuditFilter;
use flowline_store::flow::{ActionUpdate, FlowFilter, FlowUpdate, NewAction, NewFlow};
use flowline_store::page::PageRequest;
use flowline_store::tenancy::{Actor, MemberUpdate, NewMember, NewToken};
use flowline_store::{Store, StoreError};
use serde_json::json;

use crate::fixtures::{new_workspace, simple_graph, workspace_with_flow, ws};

fn actor() -> Actor {
    Actor::system("test")
}

fn tag_action(flow: FlowId, node: &str, tag: &str, position: Option<i32>) -> NewAction {
    NewAction {
        flow_id: flow,
        node_id: node.to_owned(),
        action_type: ActionType::AddTag,
        action_config: json!({"tagName": tag}),
        name: Some(tag.to_owned()),
        position,
        enabled: true,
        retry: None,
        timeout_ms: None,
    }
}

fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(
        matches!(result, Err(StoreError::NotFound(_))),
        "expected not found, got {result:?}"
    );
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(
        matches!(result, Err(StoreError::Conflict(_))),
        "expected a conflict, got {result:?}"
    );
}

/// The first workspace is created on an empty database, and never again.
pub async fn bootstrap_creates_the_first_workspace_once(store: &dyn Store) {
    let (params, token) = new_workspace("first");
    let created = store
        .bootstrap(params)
        .await
        .unwrap()
        .expect("an empty database bootstraps");
    let principal = store
        .authenticate(&token.hash())
        .await
        .unwrap()
        .expect("owner token works");
    assert_eq!(principal.workspace_id, created.workspace.id);
    assert_eq!(principal.role, Role::Owner);
    let (again, _) = new_workspace("second");
    assert!(store.bootstrap(again).await.unwrap().is_none());
}

/// A workspace made by the CLI counts as the first: bootstrap then does nothing.
pub async fn created_workspace_owner_token_authenticates(store: &dyn Store) {
    let (params, token) = new_workspace("acme");
    let created = store.create_workspace(params).await.unwrap();
    assert_eq!(created.owner.role, Role::Owner);
    assert_eq!(created.token.member_id, created.owner.id);
    let principal = store.authenticate(&token.hash()).await.unwrap().unwrap();
    assert_eq!(principal.member_id, created.owner.id);
    assert_eq!(principal.token_id, created.token.id);
    assert_eq!(principal.member_name, "acme owner");
    let used = store
        .get_token(ws(&created), created.token.id)
        .await
        .unwrap();
    assert!(used.last_used_at.is_some(), "use is recorded");
    assert_eq!(
        store.get_workspace(ws(&created)).await.unwrap().name,
        "acme"
    );
    let (later, _) = new_workspace("later");
    assert!(store.bootstrap(later).await.unwrap().is_none());
}

/// Unknown and revoked tokens speak for nobody; revoking twice changes nothing.
pub async fn revoked_and_unknown_tokens_do_not_authenticate(store: &dyn Store) {
    let (params, token) = new_workspace("acme");
    let created = store.create_workspace(params).await.unwrap();
    assert!(
        store
            .authenticate(&ClearToken::generate().hash())
            .await
            .unwrap()
            .is_none()
    );
    let revoked = store
        .revoke_token(ws(&created), &actor(), created.token.id)
        .await
        .unwrap();
    let at = revoked.revoked_at.expect("revoked");
    assert!(store.authenticate(&token.hash()).await.unwrap().is_none());
    let again = store
        .revoke_token(ws(&created), &actor(), created.token.id)
        .await
        .unwrap();
    assert_eq!(again.revoked_at, Some(at));
}

/// Another workspace's ids answer exactly like missing ones, for every kind of entity.
pub async fn workspaces_never_see_each_others_rows(store: &dyn Store) {
    let (a, flow_a) = workspace_with_flow(store, "a").await;
    let (b, _) = workspace_with_flow(store, "b").await;
    let action = store
        .create_action(ws(&a), &actor(), tag_action(flow_a.id, "start", "x", None))
        .await
        .unwrap();
    let b_id = ws(&b);
    assert_not_found(store.get_flow(b_id, flow_a.id).await);
    assert_not_found(
        store
            .update_flow(b_id, &actor(), flow_a.id, FlowUpdate::default())
            .await,
    );
    assert_not_found(store.delete_flow(b_id, &actor(), flow_a.id).await);
    assert_not_found(store.list_actions(b_id, flow_a.id).await);
    assert_not_found(store.get_action(b_id, action.id).await);
    assert_not_found(
        store
            .create_action(b_id, &actor(), tag_action(flow_a.id, "start", "y", None))
            .await,
    );
    assert_not_found(
        store
            .update_action(
                b_id,
                &actor(),
                flow_a.id,
                action.id,
                ActionUpdate::default(),
            )
            .await,
    );
    assert_not_found(
        store
            .delete_action(b_id, &actor(), flow_a.id, action.id, None)
            .await,
    );
    assert_not_found(
        store
            .list_action_executions(b_id, action.id, PageRequest::default())
            .await,
    );
    assert_not_found(store.get_member(b_id, a.owner.id).await);
    assert_not_found(store.get_token(b_id, a.token.id).await);
    assert_not_found(store.revoke_token(b_id, &actor(), a.token.id).await);
    assert_not_found(store.delete_member(b_id, &actor(), a.owner.id).await);
    assert_not_found(
        store
            .create_token(
                b_id,
                &actor(),
                NewToken {
                    member_id: a.owner.id,
                    name: "x".into(),
                    hash: ClearToken::generate().hash(),
                },
            )
            .await,
    );
    let flows = store
        .list_flows(b_id, FlowFilter::default(), PageRequest::default())
        .await
        .unwrap();
    assert!(flows.items.iter().all(|f| f.workspace_id == b_id));
    let members = store
        .list_members(b_id, PageRequest::default())
        .await
        .unwrap();
    assert_eq!(members.items.len(), 1);
    let tokens = store
        .list_tokens(b_id, PageRequest::default())
        .await
        .unwrap();
    assert_eq!(tokens.items.len(), 1);
    let audit = store
        .list_audit(b_id, AuditFilter::default(), PageRequest::first(200))
        .await
        .unwrap();
    assert!(audit.items.iter().all(|e| e.workspace_id == b_id));
    // A's action is untouched by B's attempts.
    assert_eq!(store.get_action(ws(&a), action.id).await.unwrap(), action);
}

/// A workspace always keeps an owner.
pub async fn the_last_owner_cannot_be_demoted_or_removed(store: &dyn Store) {
    let (params, _) = new_workspace("acme");
    let created = store.create_workspace(params).await.unwrap();
    let w = ws(&created);
    let demote = MemberUpdate {
        role: Some(Role::Admin),
        ..Default::default()
    };
    assert_conflict(
        store
            .update_member(w, &actor(), created.owner.id, demote.clone())
            .await,
    );
    assert_conflict(store.delete_member(w, &actor(), created.owner.id).await);
    let second = store
        .create_member(
            w,
            &actor(),
            NewMember {
                name: "Second".into(),
                email: Some("s@example.com".into()),
                role: Role::Owner,
            },
        )
        .await
        .unwrap();
    let demoted = store
        .update_member(w, &actor(), created.owner.id, demote)
        .await
        .unwrap();
    assert_eq!(demoted.role, Role::Admin);
    assert_eq!(
        store.get_member(w, created.owner.id).await.unwrap().role,
        Role::Admin
    );
    assert_conflict(store.delete_member(w, &actor(), second.id).await);
    assert_not_found(store.get_member(w, MemberId::new()).await);
}

/// A removed member's tokens stop working.
pub async fn deleting_a_member_removes_its_tokens(store: &dyn Store) {
    let (params, _) = new_workspace("acme");
    let created = store.create_workspace(params).await.unwrap();
    let w = ws(&created);
    let editor = store
        .create_member(
            w,
            &actor(),
            NewMember {
                name: "Ed".into(),
                email: None,
                role: Role::Editor,
            },
        )
        .await
        .unwrap();
    let clear = ClearToken::generate();
    let token = store
        .create_token(
            w,
            &actor(),
            NewToken {
                member_id: editor.id,
                name: "ci".into(),
                hash: clear.hash(),
            },
        )
        .await
        .unwrap();
    assert_eq!(token.role, Role::Editor);
    assert_eq!(
        store
            .authenticate(&clear.hash())
            .await
            .unwrap()
            .unwrap()
            .role,
        Role::Editor
    );
    store.delete_member(w, &actor(), editor.id).await.unwrap();
    assert!(store.authenticate(&clear.hash()).await.unwrap().is_none());
    assert_not_found(store.get_token(w, token.id).await);
    assert_not_found(
        store
            .create_token(
                w,
                &actor(),
                NewToken {
                    member_id: editor.id,
                    name: "x".into(),
                    hash: ClearToken::generate().hash(),
                },
            )
            .await,
    );
}

/// Flows list newest first, filter by status and page by cursor without gaps or repeats.
pub async fn flows_are_created_listed_filtered_and_paged(store: &dyn Store) {
    let (params, _) = new_workspace("acme");
    let created = store.create_workspace(params).await.unwrap();
    let w = ws(&created);
    let mut ids = Vec::new();
    for i in 0..5 {
        let flow = store
            .create_flow(
                w,
                &actor(),
                NewFlow {
                    name: format!("flow {i}"),
                    description: Some("d".into()),
                    graph: simple_graph(),
                    schedule: None,
                    triggers: Vec::new(),
                },
            )
            .await
            .unwrap();
        assert_eq!(flow.status, FlowStatus::Draft);
        assert_eq!(flow.version, 0);
        assert_eq!(store.get_flow(w, flow.id).await.unwrap(), flow);
        ids.push(flow.id);
    }
    ids.reverse();
    let first = store
        .list_flows(w, FlowFilter::default(), PageRequest::first(2))
        .await
        .unwrap();
    assert_eq!(
        first.items.iter().map(|f| f.id).collect::<Vec<_>>(),
        ids[..2]
    );
    let second = store
        .list_flows(
            w,
            FlowFilter::default(),
            PageRequest {
                limit: 2,
                cursor: first.next_cursor,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        second.items.iter().map(|f| f.id).collect::<Vec<_>>(),
        ids[2..4]
    );
    let third = store
        .list_flows(
            w,
            FlowFilter::default(),
            PageRequest {
                limit: 2,
                cursor: second.next_cursor,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        third.items.iter().map(|f| f.id).collect::<Vec<_>>(),
        ids[4..]
    );
    assert!(third.next_cursor.is_none());
    store
        .update_flow(
            w,
            &actor(),
            ids[1],
            FlowUpdate {
                status: Some(FlowStatus::Archived),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let archived = store
        .list_flows(
            w,
            FlowFilter {
                status: Some(FlowStatus::Archived),
            },
            PageRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        archived.items.iter().map(|f| f.id).collect::<Vec<_>>(),
        [ids[1]]
    );
    let drafts = store
        .list_flows(
            w,
            FlowFilter {
                status: Some(FlowStatus::Draft),
            },
            PageRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(drafts.items.len(), 4);
}

/// An update changes only what it names, and the audit log holds before and after.
pub async fn flow_updates_are_partial_and_audited(store: &dyn Store) {
    let (created, flow) = workspace_with_flow(store, "acme").await;
    let w = ws(&created);
    let renamed = store
        .update_flow(
            w,
            &actor(),
            flow.id,
            FlowUpdate {
                name: Some("Renamed".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.name, "Renamed");
    assert_eq!(renamed.graph, flow.graph);
    assert_eq!(renamed.description, flow.description);
    assert!(renamed.updated_at >= flow.updated_at);
    let cleared = store
        .update_flow(
            w,
            &actor(),
            flow.id,
            FlowUpdate {
                description: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(cleared.description, None);
    assert_eq!(store.get_flow(w, flow.id).await.unwrap(), cleared);
    let log = store
        .list_audit(
            w,
            AuditFilter {
                entity_type: Some("flow".into()),
                entity_id: Some(flow.id.to_string()),
                ..Default::default()
            },
            PageRequest::default(),
        )
        .await
        .unwrap();
    let actions: Vec<_> = log.items.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["flow.update", "flow.update", "flow.create"]);
    assert_eq!(log.items[1].before.as_ref().unwrap()["name"], "acme flow");
    assert_eq!(log.items[1].after.as_ref().unwrap()["name"], "Renamed");
}

/// The graph cannot lose a node that still holds actions.
pub async fn a_graph_that_drops_a_node_with_actions_is_a_conflict(store: &dyn Store) {
    let (created, flow) = workspace_with_flow(store, "acme").await;
    let w = ws(&created);
    store
        .create_action(w, &actor(), tag_action(flow.id, "next", "t", None))
        .await
        .unwrap();
    let mut smaller = simple_graph();
    smaller.nodes.retain(|n| n.id == "start");
    smaller.edges.clear();
    assert_conflict(
        store
            .update_flow(
                w,
                &actor(),
                flow.id,
                FlowUpdate {
                    graph: Some(smaller.clone()),
                    ..Default::default()
                },
            )
            .await,
    );
    assert_eq!(
        store.get_flow(w, flow.id).await.unwrap().graph,
        flow.graph,
        "nothing changed"
    );
    let mut bigger = simple_graph();
    bigger.nodes.push(
        serde_json::from_value(json!({"id": "third", "position": {"x": 1, "y": 1}})).unwrap(),
    );
    let updated = store
        .update_flow(
            w,
            &actor(),
            flow.id,
            FlowUpdate {
                graph: Some(bigger.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.graph, bigger);
}

/// Deleting a flow takes its actions with it.
pub async fn deleting_a_flow_removes_its_actions(store: &dyn Store) {
    let (created, flow) = workspace_with_flow(store, "acme").await;
    let w = ws(&created);
    let action = store
        .create_action(w, &actor(), tag_action(flow.id, "start", "t", None))
        .await
        .unwrap();
    store.delete_flow(w, &actor(), flow.id).await.unwrap();
    assert_not_found(store.get_flow(w, flow.id).await);
    assert_not_found(store.get_action(w, action.id).await);
    assert_not_found(store.delete_flow(w, &actor(), flow.id).await);
}

/// An action's node must exist in its flow's graph, on create and on move.
pub async fn actions_need_a_node_of_their_flows_graph(store: &dyn Store) {
    let (created, flow) = workspace_with_flow(store, "acme").await;
    let w = ws(&created);
    let result = store
        .create_action(w, &actor(), tag_action(flow.id, "nowhere", "t", None))
        .await;
    match result {
        Err(StoreError::Invalid(errors)) => assert_eq!(errors.0[0].field, "nodeId"),
        other => panic!("expected invalid, got {other:?}"),
    }
    assert_not_found(
        store
            .create_action(w, &actor(), tag_action(FlowId::new(), "start", "t", None))
            .await,
    );
    let action = store
        .create_action(w, &actor(), tag_action(flow.id, "start", "t", None))
        .await
        .unwrap();
    let moved = store
        .update_action(
            w,
            &actor(),
            flow.id,
            action.id,
            ActionUpdate {
                node_id: Some("nowhere".into()),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(moved, Err(StoreError::Invalid(_))), "{moved:?}");
    assert_eq!(store.get_action(w, action.id).await.unwrap(), action);
}

fn names(actions: &[flowline_store::flow::FlowAction], node: &str) -> Vec<(String, i32)> {
    actions
        .iter()
        .filter(|a| a.node_id == node)
        .map(|a| (a.name.clone().unwrap_or_default(), a.position))
        .collect()
}

/// Positions stay 0..n per node through inserts in the middle, moves and deletes.
pub async fn actions_keep_dense_positions_through_insert_move_and_delete(store: &dyn Store) {
    let (created, flow) = workspace_with_flow(store, "acme").await;
    let w = ws(&created);
    let a = store
        .create_action(w, &actor(), tag_action(flow.id, "start", "a", None))
        .await
        .unwrap();
    let c = store
        .create_action(w, &actor(), tag_action(flow.id, "start", "c", None))
        .await
        .unwrap();
    let b = store
        .create_action(w, &actor(), tag_action(flow.id, "start", "b", Some(1)))
        .await
        .unwrap();
    let first = store
        .create_action(w, &actor(), tag_action(flow.id, "start", "first", Some(-5)))
        .await
        .unwrap();
    assert_eq!(first.position, 0);
    let list = store.list_actions(w, flow.id).await.unwrap();
    let expect = |v: &[(&str, i32)]| {
        v.iter()
            .map(|(n, p)| (n.to_string(), *p))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&list, "start"),
        expect(&[("first", 0), ("a", 1), ("b", 2), ("c", 3)])
    );

    // Move `a` to the end of the same node.
    store
        .update_action(
            w,
            &actor(),
            flow.id,
            a.id,
            ActionUpdate {
                position: Some(99),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let list = store.list_actions(w, flow.id).await.unwrap();
    assert_eq!(
        names(&list, "start"),
        expect(&[("first", 0), ("b", 1), ("c", 2), ("a", 3)])
    );

    // Move `b` to the other node, and change its config, retry and timeout on the way.
    let retry = RetryPolicy {
        max_attempts: Some(5),
        ..Default::default()
    };
    let moved = store
        .update_action(
            w,
            &actor(),
            flow.id,
            b.id,
            ActionUpdate {
                node_id: Some("next".into()),
                action_type: Some(ActionType::SetVariable),
                action_config: Some(json!({"name": "x", "type": "number", "value": 1})),
                retry: Some(Some(retry.clone())),
                timeout_ms: Some(Some(5_000)),
                enabled: Some(false),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((moved.node_id.as_str(), moved.position), ("next", 0));
    assert_eq!(moved.action_type, ActionType::SetVariable);
    assert_eq!(moved.retry, Some(retry));
    assert_eq!(moved.timeout_ms, Some(5_000));
    assert!(!moved.enabled);
    assert_eq!(store.get_action(w, b.id).await.unwrap(), moved);
    let list = store.list_actions(w, flow.id).await.unwrap();
    assert_eq!(
        names(&list, "start"),
        expect(&[("first", 0), ("c", 1), ("a", 2)])
    );
    assert_eq!(names(&list, "next"), expect(&[("b", 0)]));

    store
        .delete_action(w, &actor(), flow.id, c.id, None)
        .await
        .unwrap();
    let list = store.list_actions(w, flow.id).await.unwrap();
    assert_eq!(names(&list, "start"), expect(&[("first", 0), ("a", 1)]));
    assert_not_found(store.get_action(w, c.id).await);
}

/// An action id with another flow's id is not found.
pub async fn an_action_is_reached_only_through_its_own_flow(store: &dyn Store) {
    let (created, flow) = workspace_with_flow(store, "acme").await;
    let w = ws(&created);
    let other = store
        .create_flow(
            w,
            &actor(),
            NewFlow {
                name: "other".into(),
                description: None,
                graph: simple_graph(),
                schedule: None,
                triggers: Vec::new(),
            },
        )
        .await
        .unwrap();
    let action = store
        .create_action(w, &actor(), tag_action(flow.id, "start", "t", None))
        .await
        .unwrap();
    assert_not_found(
        store
            .update_action(w, &actor(), other.id, action.id, ActionUpdate::default())
            .await,
    );
    assert_not_found(
        store
            .delete_action(w, &actor(), other.id, action.id, None)
            .await,
    );
    assert_not_found(
        store
            .delete_action(w, &actor(), flow.id, ActionId::new(), None)
            .await,
    );
    assert_eq!(store.list_actions(w, other.id).await.unwrap(), vec![]);
}

/// The history of an action that never ran is an empty page; unknown actions are not found.
pub async fn action_execution_history_is_scoped_to_its_action(store: &dyn Store) {
    let (created, flow) = workspace_with_flow(store, "acme").await;
    let w = ws(&created);
    let action = store
        .create_action(w, &actor(), tag_action(flow.id, "start", "t", None))
        .await
        .unwrap();
    let page = store
        .list_action_executions(w, action.id, PageRequest::default())
        .await
        .unwrap();
    assert!(page.items.is_empty());
    assert!(page.next_cursor.is_none());
    assert_not_found(
        store
            .list_action_executions(w, ActionId::new(), PageRequest::default())
            .await,
    );
}

/// Every change lands in the audit log with its actor, newest first; filters narrow it.
pub async fn every_change_is_audited_newest_first_with_filters(store: &dyn Store) {
    let (created, flow) = workspace_with_flow(store, "acme").await;
    let w = ws(&created);
    let member = Actor {
        member_id: Some(created.owner.id),
        token_id: Some(created.token.id),
        label: "acme owner".into(),
    };
    let action = store
        .create_action(w, &member, tag_action(flow.id, "start", "t", None))
        .await
        .unwrap();
    store
        .delete_action(w, &member, flow.id, action.id, None)
        .await
        .unwrap();
    store
        .revoke_token(w, &member, created.token.id)
        .await
        .unwrap();
    let all = store
        .list_audit(w, AuditFilter::default(), PageRequest::default())
        .await
        .unwrap();
    let actions: Vec<_> = all.items.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "token.revoke",
            "action.delete",
            "action.create",
            "flow.create",
            "token.create",
            "member.create",
            "workspace.create"
        ]
    );
    let deleted = &all.items[1];
    assert_eq!(deleted.actor_member_id, Some(created.owner.id));
    assert_eq!(deleted.actor_token_id, Some(created.token.id));
    assert_eq!(deleted.actor_label, "acme owner");
    assert_eq!(
        deleted.entity_id.as_deref(),
        Some(action.id.to_string().as_str())
    );
    assert_eq!(
        deleted.before.as_ref().unwrap()["actionConfig"]["tagName"],
        "t"
    );
    assert!(deleted.after.is_none());
    let by_member = store
        .list_audit(
            w,
            AuditFilter {
                actor_member_id: Some(created.owner.id),
                ..Default::default()
            },
            PageRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(by_member.items.len(), 3);
    let page = store
        .list_audit(w, AuditFilter::default(), PageRequest::first(4))
        .await
        .unwrap();
    let rest = store
        .list_audit(
            w,
            AuditFilter::default(),
            PageRequest {
                limit: 4,
                cursor: page.next_cursor,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len() + rest.items.len(), 7);
    assert!(rest.next_cursor.is_none());
    assert_eq!(rest.items[0].id, all.items[4].id);
}
