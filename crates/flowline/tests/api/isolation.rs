//! Another workspace's ids answer 404 exactly like missing ones, on every resource.

use flowline_core::id::{ActionId, ExecutionId, FlowId, MemberId, TokenId};
use reqwest::Method;
use serde_json::{Value, json};

use crate::api_test;

api_test! {
    async fn another_workspaces_ids_answer_exactly_like_missing_ones(app: TestApp) {
        let flow = app.flow(&app.owner).await;
        let action = app.tag_action(&flow, "start", "lead").await;
        let me = app.get("/api/me", &app.owner).await.expect(200);
        let member = me["memberId"].as_str().unwrap().to_owned();
        let token = me["tokenId"].as_str().unwrap().to_owned();
        // A published flow with a run waiting in the queue.
        let live = app.flow(&app.owner).await;
        app.tag_action(&live, "start", "x").await;
        app.post(&format!("/api/flows/{live}/publish"), &app.owner, json!({})).await.expect(200);
        let run = app.post(&format!("/api/flows/{live}/executions"), &app.owner, json!({})).await.expect(202);
        let run = run["id"].as_str().unwrap().to_owned();
        let missing_run = ExecutionId::new().to_string();
        let (_, other) = app.other_workspace().await;
        let missing_flow = FlowId::new().to_string();
        let missing_action = ActionId::new().to_string();
        let missing_member = MemberId::new().to_string();
        let missing_token = TokenId::new().to_string();
        let update = json!({"name": "hijacked"});
        let action_body = json!({"nodeId": "start", "actionType": "add_tag", "actionConfig": {"tagName": "x"}});
        let cases: Vec<(Method, String, String, Option<Value>)> = vec![
            (Method::GET, format!("/api/flows/{flow}"), format!("/api/flows/{missing_flow}"), None),
            (Method::PUT, format!("/api/flows/{flow}"), format!("/api/flows/{missing_flow}"), Some(update.clone())),
            (Method::DELETE, format!("/api/flows/{flow}"), format!("/api/flows/{missing_flow}"), None),
            (Method::GET, format!("/api/actions/flows/{flow}"), format!("/api/actions/flows/{missing_flow}"), None),
            (Method::POST, format!("/api/actions/flows/{flow}"), format!("/api/actions/flows/{missing_flow}"), Some(action_body)),
            (
                Method::PUT,
                format!("/api/actions/flows/{flow}/actions/{action}"),
                format!("/api/actions/flows/{flow}/actions/{missing_action}"),
                Some(update.clone()),
            ),
            (
                Method::DELETE,
                format!("/api/actions/flows/{flow}/actions/{action}"),
                format!("/api/actions/flows/{flow}/actions/{missing_action}"),
                None,
            ),
            (Method::GET, format!("/api/actions/{action}/executions"), format!("/api/actions/{missing_action}/executions"), None),
            (Method::GET, format!("/api/members/{member}"), format!("/api/members/{missing_member}"), None),
            (Method::PUT, format!("/api/members/{member}"), format!("/api/members/{missing_member}"), Some(update.clone())),
            (Method::DELETE, format!("/api/members/{member}"), format!("/api/members/{missing_member}"), None),
            (Method::DELETE, format!("/api/tokens/{token}"), format!("/api/tokens/{missing_token}"), None),
            (Method::POST, format!("/api/flows/{flow}/publish"), format!("/api/flows/{missing_flow}/publish"), Some(json!({}))),
            (Method::POST, format!("/api/flows/{live}/executions"), format!("/api/flows/{missing_flow}/executions"), Some(json!({}))),
            (Method::GET, format!("/api/flows/{live}/executions"), format!("/api/flows/{missing_flow}/executions"), None),
            (Method::GET, format!("/api/executions/{run}"), format!("/api/executions/{missing_run}"), None),
            (Method::POST, format!("/api/executions/{run}/cancel"), format!("/api/executions/{missing_run}/cancel"), Some(json!({}))),
            (Method::POST, format!("/api/executions/{run}/retry"), format!("/api/executions/{missing_run}/retry"), Some(json!({}))),
        ];
        for (method, foreign, missing, body) in cases {
            let a = app.call(method.clone(), &foreign, &other, body.clone()).await;
            let b = app.call(method.clone(), &missing, &other, body).await;
            assert_eq!(a.status.as_u16(), 404, "{method} {foreign}: {}", a.body);
            assert_eq!(a.body, b.body, "{method} {foreign} differs from a missing id");
            assert_eq!(a.content_type, "application/problem+json");
        }
        // Nothing of the first workspace changed or leaked into the second one's lists.
        let kept = app.get(&format!("/api/flows/{flow}"), &app.owner).await.expect(200);
        assert_eq!(kept["name"], "Welcome");
        let actions = app.get(&format!("/api/actions/flows/{flow}"), &app.owner).await.expect(200);
        assert_eq!(actions["items"].as_array().unwrap().len(), 1);
        assert_eq!(kept["status"], "draft");
        let waiting = app.get(&format!("/api/executions/{run}"), &app.owner).await.expect(200);
        assert_eq!(waiting["status"], "pending", "{waiting}");
        let runs = app.get(&format!("/api/flows/{live}/executions"), &app.owner).await.expect(200);
        assert_eq!(runs["items"].as_array().unwrap().len(), 1, "{runs}");
        let lists = ["/api/flows", "/api/members", "/api/tokens", "/api/audit"];
        for path in lists {
            let page = app.get(path, &other).await.expect(200);
            let text = page.to_string();
            assert!(!text.contains(&flow) && !text.contains(&member) && !text.contains(&action) && !text.contains(&run), "{path} leaked");
        }
    }
}
