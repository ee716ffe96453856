//! The audit log through the API.

use serde_json::json;

use crate::api_test;

api_test! {
    async fn api_changes_are_audited_with_actor_and_before_after(app: TestApp) {
        let me = app.get("/api/me", &app.owner).await.expect(200);
        let flow = app.flow(&app.owner).await;
        let action = app.tag_action(&flow, "start", "lead").await;
        app.put(
            &format!("/api/actions/flows/{flow}/actions/{action}"),
            &app.owner,
            json!({"actionConfig": {"tagName": "customer"}}),
        )
        .await
        .expect(200);
        let log = app.get("/api/audit?limit=3", &app.owner).await.expect(200);
        let items = log["items"].as_array().unwrap();
        let actions: Vec<_> = items.iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert_eq!(actions, ["action.update", "action.create", "flow.create"]);
        let update = &items[0];
        assert_eq!(update["actorMemberId"], me["memberId"]);
        assert_eq!(update["actorTokenId"], me["tokenId"]);
        assert_eq!(update["actorLabel"], "Olive Owner");
        assert_eq!(update["entityType"], "action");
        assert_eq!(update["entityId"], action.as_str());
        assert_eq!(update["before"]["actionConfig"]["tagName"], "lead");
        assert_eq!(update["after"]["actionConfig"]["tagName"], "customer");
        let cursor = log["nextCursor"].as_str().unwrap();
        let rest = app.get(&format!("/api/audit?cursor={cursor}"), &app.owner).await.expect(200);
        let rest_actions: Vec<_> = rest["items"].as_array().unwrap().iter().map(|e| e["action"].clone()).collect();
        assert_eq!(rest_actions, [json!("token.create"), json!("member.create"), json!("workspace.create")]);
        let for_action = app
            .get(&format!("/api/audit?entityType=action&entityId={action}"), &app.owner)
            .await
            .expect(200);
        assert_eq!(for_action["items"].as_array().unwrap().len(), 2);
        let by_owner = app
            .get(&format!("/api/audit?actor={}", me["memberId"].as_str().unwrap()), &app.owner)
            .await
            .expect(200);
        assert_eq!(by_owner["items"].as_array().unwrap().len(), 3);
    }
}
