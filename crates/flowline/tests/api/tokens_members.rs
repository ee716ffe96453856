//! Tokens and members through the API.

use flowline_core::role::Role;
use serde_json::json;

use crate::api_test;

api_test! {
    async fn tokens_are_shown_once_listed_without_secrets_and_bounded_by_role(app: TestApp) {
        let admin = app.token(Role::Admin).await;
        let created = app.post("/api/tokens", &admin, json!({"name": "deploy"})).await.expect(201);
        let clear = created["token"].as_str().unwrap().to_owned();
        assert_eq!(created["role"], "admin");
        assert_eq!(created["name"], "deploy");
        let me = app.get("/api/me", &clear).await.expect(200);
        assert_eq!(me["role"], "admin");
        let list = app.get("/api/tokens", &admin).await.expect(200);
        let text = list.to_string();
        assert!(!text.contains(&clear) && !text.contains("flw_"), "a listing shows no token");
        assert!(list["items"].as_array().unwrap().iter().any(|t| t["id"] == created["id"]));
        // An admin cannot mint or revoke an owner's token.
        let owner_member = app.get("/api/me", &app.owner).await.expect(200)["memberId"].clone();
        app.post("/api/tokens", &admin, json!({"name": "x", "memberId": owner_member})).await.problem(403, "forbidden");
        let owner_token = app.get("/api/me", &app.owner).await.expect(200)["tokenId"].clone();
        app.delete(&format!("/api/tokens/{}", owner_token.as_str().unwrap()), &admin).await.problem(403, "forbidden");
        app.post("/api/tokens", &admin, json!({"name": ""})).await.invalid_fields();
        // Nor one for a peer admin: it would rise with the peer's next promotion.
        let peer = app.post("/api/members", &app.owner, json!({"name": "Peer", "role": "admin"})).await.expect(201);
        app.post("/api/tokens", &admin, json!({"name": "x", "memberId": peer["id"]})).await.problem(403, "forbidden");
        let editor = app.post("/api/members", &app.owner, json!({"name": "Ed", "role": "editor"})).await.expect(201);
        app.post("/api/tokens", &admin, json!({"name": "x", "memberId": editor["id"]})).await.expect(201);
    }
}

api_test! {
    async fn owners_manage_members_and_the_last_owner_stays(app: TestApp) {
        let member = app
            .post("/api/members", &app.owner, json!({"name": "Ada", "email": "ada@example.com", "role": "editor"}))
            .await
            .expect(201);
        let id = member["id"].as_str().unwrap();
        assert_eq!(member["role"], "editor");
        let fields = app
            .post("/api/members", &app.owner, json!({"name": "Bad", "email": "not-an-email", "role": "editor"}))
            .await
            .invalid_fields();
        assert_eq!(fields, ["email"]);
        let fields = app.post("/api/members", &app.owner, json!({"name": "Bad", "role": "root"})).await.invalid_fields();
        assert_eq!(fields, ["role"]);
        let promoted = app.put(&format!("/api/members/{id}"), &app.owner, json!({"role": "admin"})).await.expect(200);
        assert_eq!(promoted["role"], "admin");
        let token = app.post("/api/tokens", &app.owner, json!({"name": "ada", "memberId": id})).await.expect(201);
        let ada = token["token"].as_str().unwrap().to_owned();
        assert_eq!(app.get("/api/me", &ada).await.expect(200)["role"], "admin");
        let me = app.get("/api/me", &app.owner).await.expect(200);
        let owner_id = me["memberId"].as_str().unwrap();
        app.put(&format!("/api/members/{owner_id}"), &app.owner, json!({"role": "viewer"})).await.problem(409, "conflict");
        app.delete(&format!("/api/members/{owner_id}"), &app.owner).await.problem(409, "conflict");
        app.delete(&format!("/api/members/{id}"), &app.owner).await.expect(204);
        app.get("/api/me", &ada).await.problem(401, "unauthorized");
        let removed = app.get(&format!("/api/audit?entityType=token&entityId={}", token["id"].as_str().unwrap()), &app.owner).await.expect(200);
        assert_eq!(removed["items"][0]["action"], "token.delete", "a removed member's tokens are audited");
        let members = app.get("/api/members", &app.owner).await.expect(200);
        assert_eq!(members["items"].as_array().unwrap().len(), 1);
    }
}
