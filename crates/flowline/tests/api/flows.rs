//! Flows CRUD.

use serde_json::json;

use crate::api_test;
use crate::support::flow_body;

api_test! {
    async fn flows_are_created_read_updated_listed_and_deleted(app: TestApp) {
        let created = app.post("/api/flows", &app.owner, flow_body("Welcome")).await.expect(201);
        let id = created["id"].as_str().unwrap();
        assert_eq!(created["status"], "draft");
        assert_eq!(created["version"], 0);
        assert_eq!(created["graph"]["nodes"][0]["label"], "Form filled");
        let read = app.get(&format!("/api/flows/{id}"), &app.owner).await.expect(200);
        assert_eq!(read, created);
        let updated = app
            .put(&format!("/api/flows/{id}"), &app.owner, json!({"name": "Onboarding", "description": null}))
            .await
            .expect(200);
        assert_eq!(updated["name"], "Onboarding");
        assert_eq!(updated["description"], serde_json::Value::Null);
        assert_eq!(updated["graph"], created["graph"]);
        let archived = app.put(&format!("/api/flows/{id}"), &app.owner, json!({"status": "archived"})).await.expect(200);
        assert_eq!(archived["status"], "archived");
        let empty = app.post("/api/flows", &app.owner, json!({"name": "Empty"})).await.expect(201);
        assert_eq!(empty["graph"], json!({"nodes": [], "edges": []}));

        let all = app.get("/api/flows", &app.owner).await.expect(200);
        let names: Vec<_> = all["items"].as_array().unwrap().iter().map(|f| f["name"].clone()).collect();
        assert_eq!(names, [json!("Empty"), json!("Onboarding")], "newest first");
        let archived_only = app.get("/api/flows?status=archived", &app.owner).await.expect(200);
        assert_eq!(archived_only["items"].as_array().unwrap().len(), 1);
        let first = app.get("/api/flows?limit=1", &app.owner).await.expect(200);
        let cursor = first["nextCursor"].as_str().unwrap();
        let second = app.get(&format!("/api/flows?limit=1&cursor={cursor}"), &app.owner).await.expect(200);
        assert_eq!(second["items"][0]["name"], "Onboarding");
        assert_eq!(second["nextCursor"], serde_json::Value::Null);

        app.delete(&format!("/api/flows/{id}"), &app.owner).await.expect(204);
        app.get(&format!("/api/flows/{id}"), &app.owner).await.problem(404, "not_found");
    }
}

api_test! {
    async fn invalid_graphs_and_names_are_refused_with_their_fields(app: TestApp) {
        let fields = app
            .post(
                "/api/flows",
                &app.owner,
                json!({"name": "  ", "graph": {
                    "nodes": [{"id": "a", "position": {"x": 0, "y": 0}}, {"id": "a", "position": {"x": 1, "y": 1}}],
                    "edges": [{"source": "a", "target": "ghost"}]
                }}),
            )
            .await
            .invalid_fields();
        assert_eq!(fields, ["name", "graph.nodes[1].id", "graph.edges[0].target"]);
        let fields = app
            .post("/api/flows", &app.owner, json!({"name": "x", "graph": {"nodes": [{"id": "a"}]}}))
            .await
            .invalid_fields();
        assert_eq!(fields, ["graph.nodes[0]"], "a node needs a position");
        let flow = app.flow(&app.owner).await;
        let fields = app.put(&format!("/api/flows/{flow}"), &app.owner, json!({"status": "active"})).await.invalid_fields();
        assert_eq!(fields, ["status"]);
        assert_eq!(app.get("/api/flows", &app.owner).await.expect(200)["items"].as_array().unwrap().len(), 1);
    }
}

api_test! {
    async fn a_graph_edit_that_orphans_actions_is_a_conflict(app: TestApp) {
        let flow = app.flow(&app.owner).await;
        app.tag_action(&flow, "next", "x").await;
        let smaller = json!({"graph": {"nodes": [{"id": "start", "position": {"x": 0, "y": 0}}], "edges": []}});
        let problem = app.put(&format!("/api/flows/{flow}"), &app.owner, smaller).await.problem(409, "conflict");
        assert!(problem["detail"].as_str().unwrap().contains("`next`"), "{problem}");
        let kept = app.get(&format!("/api/flows/{flow}"), &app.owner).await.expect(200);
        assert_eq!(kept["graph"]["nodes"].as_array().unwrap().len(), 2);
    }
}
