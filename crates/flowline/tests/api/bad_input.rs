//! Malformed requests: every one a 4xx problem+json, nothing written.

use reqwest::Method;
use serde_json::json;

use crate::api_test;

api_test! {
    async fn malformed_bodies_get_clear_errors_and_change_nothing(app: TestApp) {
        let flow = app.flow(&app.owner).await;
        let path = format!("/api/actions/flows/{flow}");
        let before = app.audit_count().await;
        let auth = format!("Bearer {}", app.owner);
        let json_headers = [("authorization", auth.as_str()), ("content-type", "application/json")];

        let cases: Vec<(Vec<u8>, u16, &str)> = vec![
            (b"{\"nodeId\": ".to_vec(), 400, "malformed_json"),
            (b"not json".to_vec(), 400, "malformed_json"),
            (b"{} {}".to_vec(), 400, "malformed_json"),
            (b"".to_vec(), 400, "malformed_json"),
            (format!("{}1{}", "[".repeat(100), "]".repeat(100)).into_bytes(), 400, "json_too_deep"),
            (
                format!(r#"{{"nodeId": "start", "actionType": "set_variable", "actionConfig": {{"name": "x", "type": "object", "value": {}1{}}}}}"#, "{\"a\":".repeat(70), "}".repeat(70)).into_bytes(),
                400,
                "json_too_deep",
            ),
            (br#"{"nodeId": "start", "actionType": "add_tag", "actionConfig": {"tagName": "x"}, "extra": true}"#.to_vec(), 422, "validation_failed"),
            (br#"{"nodeId": 42, "actionType": "add_tag", "actionConfig": {"tagName": "x"}}"#.to_vec(), 422, "validation_failed"),
            (br#"{"nodeId": "start", "actionType": "add_tag", "actionConfig": {"tagName": "x"}, "position": "first"}"#.to_vec(), 422, "validation_failed"),
            (br#"[1, 2]"#.to_vec(), 422, "validation_failed"),
            (br#"{"nodeId": "start", "actionType": "add_tag", "actionConfig": {"tagName": "x"}, "position": 99999999999}"#.to_vec(), 422, "validation_failed"),
        ];
        for (body, status, code) in cases {
            let reply = app.raw(Method::POST, &path, &json_headers, Some(body.clone())).await;
            reply.problem(status, code);
        }
        let unknown = app
            .raw(Method::POST, &path, &json_headers, Some(br#"{"nodeId": "start", "actionType": "add_tag", "actionConfig": {"tagName": "x"}, "extra": true}"#.to_vec()))
            .await
            .body;
        assert!(unknown["detail"].as_str().unwrap().contains("extra"), "{unknown}");
        let typed = app
            .raw(Method::POST, &path, &json_headers, Some(br#"{"nodeId": 42, "actionType": "add_tag", "actionConfig": {}}"#.to_vec()))
            .await
            .body;
        assert_eq!(typed["errors"][0]["field"], "nodeId");

        // Over a megabyte.
        let huge = format!(r#"{{"name": "{}"}}"#, "x".repeat(1024 * 1024 + 10));
        app.raw(Method::POST, "/api/flows", &json_headers, Some(huge.into_bytes())).await.problem(413, "payload_too_large");
        // Not JSON at all.
        let text_headers = [("authorization", auth.as_str()), ("content-type", "text/plain")];
        app.raw(Method::POST, "/api/flows", &text_headers, Some(b"{}".to_vec())).await.problem(415, "unsupported_media_type");
        app.raw(Method::POST, "/api/flows", &[("authorization", auth.as_str())], Some(b"{}".to_vec()))
            .await
            .problem(415, "unsupported_media_type");

        // NUL characters, which no text column can hold, anywhere in the document.
        let nul = app
            .raw(Method::POST, "/api/flows", &json_headers, Some(br#"{"name": "a\u0000b"}"#.to_vec()))
            .await
            .invalid_fields();
        assert_eq!(nul, ["name"]);
        let nul = app
            .raw(Method::POST, &path, &json_headers, Some(br#"{"nodeId": "start", "actionType": "add_tag", "actionConfig": {"tagName": "x\u0000"}}"#.to_vec()))
            .await
            .invalid_fields();
        assert_eq!(nul, ["actionConfig.tagName"]);

        assert_eq!(app.audit_count().await, before, "nothing was written");
        let list = app.get(&path, &app.owner).await.expect(200);
        assert_eq!(list["items"], json!([]));
    }
}

api_test! {
    async fn malformed_paths_queries_and_routes_get_problem_answers(app: TestApp) {
        app.get("/api/flows/not-a-uuid", &app.owner).await.problem(400, "invalid_path");
        app.get("/api/actions/%ZZ/executions", &app.owner).await.problem(400, "invalid_path");
        app.get("/api/flows?limit=1000", &app.owner).await.problem(400, "invalid_limit");
        app.get("/api/flows?limit=-1", &app.owner).await.problem(400, "invalid_query");
        app.get("/api/flows?limit=abc", &app.owner).await.problem(400, "invalid_query");
        app.get("/api/flows?status=sleeping", &app.owner).await.problem(400, "invalid_query");
        app.get("/api/flows?surprise=1", &app.owner).await.problem(400, "invalid_query");
        app.get("/api/audit?limit=201", &app.owner).await.problem(400, "invalid_limit");
        app.get("/api/audit?entityType=%00", &app.owner).await.problem(400, "invalid_query");
        app.get("/api/nowhere", &app.owner).await.problem(404, "no_route");
        app.call(Method::PATCH, "/api/flows", &app.owner, None).await.problem(405, "method_not_allowed");
        app.get("/api/flows?limit=200", &app.owner).await.expect(200);
    }
}
