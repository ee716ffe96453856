//! Bearer tokens and roles.

use flowline_core::role::Role;
use reqwest::Method;
use serde_json::json;

use crate::api_test;
use crate::support::flow_body;

api_test! {
    async fn requests_without_a_valid_single_bearer_token_get_401(app: TestApp) {
        let unknown = format!("Bearer {}", flowline_core::token::ClearToken::generate().expose());
        let owner = format!("Bearer {}", app.owner);
        let cases: Vec<Vec<(&str, &str)>> = vec![
            vec![],
            vec![("authorization", "")],
            vec![("authorization", "Bearer")],
            vec![("authorization", "Bearer not-a-token")],
            vec![("authorization", "Basic dXNlcjpwYXNz")],
            vec![("authorization", "Bearer flw_%%%")],
            vec![("authorization", unknown.as_str())],
            vec![("authorization", owner.as_str()), ("authorization", owner.as_str())],
        ];
        for headers in cases {
            let reply = app.raw(Method::GET, "/api/flows", &headers, None).await;
            assert_eq!(reply.headers.get("www-authenticate").unwrap(), "Bearer", "{headers:?}");
            reply.problem(401, "unauthorized");
        }
        // A header value that is not text.
        let garbled = reqwest::Client::new()
            .get(format!("{}/api/flows", app.base))
            .header("authorization", reqwest::header::HeaderValue::from_bytes(b"Bearer flw_\xff\xfe").unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(garbled.status(), 401);
        assert_eq!(garbled.headers()["content-type"], "application/problem+json");
        app.get("/api/flows", &app.owner).await.expect(200);
        // The scheme is case-insensitive.
        let lower = format!("bearer {}", app.owner);
        app.raw(Method::GET, "/api/flows", &[("authorization", lower.as_str())], None).await.expect(200);
    }
}

api_test! {
    async fn viewers_read_editors_write_flows_admins_manage_tokens(app: TestApp) {
        let viewer = app.token(Role::Viewer).await;
        let editor = app.token(Role::Editor).await;
        let admin = app.token(Role::Admin).await;
        app.get("/api/flows", &viewer).await.expect(200);
        app.get("/api/actions/types", &viewer).await.expect(200);
        app.post("/api/flows", &viewer, flow_body("x")).await.problem(403, "forbidden");
        let flow = app.flow(&editor).await;
        app.get(&format!("/api/flows/{flow}"), &viewer).await.expect(200);
        let action = json!({"nodeId": "start", "actionType": "add_tag", "actionConfig": {"tagName": "lead"}});
        app.post(&format!("/api/actions/flows/{flow}"), &viewer, action.clone()).await.problem(403, "forbidden");
        let created = app.post(&format!("/api/actions/flows/{flow}"), &editor, action).await.expect(201);
        let path = format!("/api/actions/flows/{flow}/actions/{}", created["id"].as_str().unwrap());
        app.put(&path, &viewer, json!({"name": "x"})).await.problem(403, "forbidden");
        app.delete(&path, &viewer).await.problem(403, "forbidden");
        app.put(&format!("/api/flows/{flow}"), &viewer, json!({"name": "y"})).await.problem(403, "forbidden");
        app.delete(&format!("/api/flows/{flow}"), &viewer).await.problem(403, "forbidden");
        // Tokens and the audit log are for admins.
        app.get("/api/tokens", &editor).await.problem(403, "forbidden");
        app.post("/api/tokens", &editor, json!({"name": "x"})).await.problem(403, "forbidden");
        app.get("/api/audit", &editor).await.problem(403, "forbidden");
        app.get("/api/tokens", &admin).await.expect(200);
        app.get("/api/audit", &admin).await.expect(200);
        // Members are managed by owners.
        app.post("/api/members", &admin, json!({"name": "N", "role": "viewer"})).await.problem(403, "forbidden");
        app.post("/api/members", &app.owner, json!({"name": "N", "role": "viewer"})).await.expect(201);
        // Everyone can ask who they are.
        let me = app.get("/api/me", &viewer).await.expect(200);
        assert_eq!(me["role"], "viewer");
        assert_eq!(me["workspaceName"], "Acme");
    }
}

api_test! {
    async fn only_admins_add_or_change_javascript_and_delete_contact_actions(app: TestApp) {
        let editor = app.token(Role::Editor).await;
        let admin = app.token(Role::Admin).await;
        let flow = app.flow(&editor).await;
        let js = json!({"nodeId": "start", "actionType": "run_javascript", "actionConfig": {"code": "return 1"}});
        let del = json!({"nodeId": "start", "actionType": "delete_contact", "actionConfig": {}});
        let path = format!("/api/actions/flows/{flow}");
        app.post(&path, &editor, js.clone()).await.problem(403, "forbidden");
        app.post(&path, &editor, del).await.problem(403, "forbidden");
        let created = app.post(&path, &admin, js).await.expect(201);
        let action_path = format!("{path}/actions/{}", created["id"].as_str().unwrap());
        app.put(&action_path, &editor, json!({"enabled": false})).await.problem(403, "forbidden");
        app.delete(&action_path, &editor).await.problem(403, "forbidden");
        // Nor may an editor turn a plain action into a restricted one.
        let tag = app.tag_action(&flow, "start", "x").await;
        app.put(
            &format!("{path}/actions/{tag}"),
            &editor,
            json!({"actionType": "run_javascript", "actionConfig": {"code": "return 2"}}),
        )
        .await
        .problem(403, "forbidden");
        app.put(&action_path, &admin, json!({"enabled": false})).await.expect(200);
        // Deleting the whole flow would delete the restricted action too.
        app.delete(&format!("/api/flows/{flow}"), &editor).await.problem(403, "forbidden");
        app.delete(&format!("/api/flows/{flow}"), &admin).await.expect(204);
        let log = app.get("/api/audit?entityType=action&limit=200", &app.owner).await.expect(200);
        let deleted = log["items"].as_array().unwrap().iter().filter(|e| e["action"] == "action.delete").count();
        assert_eq!(deleted, 2, "each action deleted with its flow is audited");
    }
}

api_test! {
    async fn a_revoked_token_stops_working_at_once(app: TestApp) {
        let created = app.post("/api/tokens", &app.owner, json!({"name": "ci"})).await.expect(201);
        let token = created["token"].as_str().unwrap().to_owned();
        assert!(token.starts_with("flw_"));
        app.get("/api/flows", &token).await.expect(200);
        app.delete(&format!("/api/tokens/{}", created["id"].as_str().unwrap()), &app.owner).await.expect(204);
        app.get("/api/flows", &token).await.problem(401, "unauthorized");
    }
}
