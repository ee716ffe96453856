//! The seed's six action endpoints.

use std::collections::BTreeSet;

use serde_json::json;

use crate::api_test;

api_test! {
    async fn the_catalogue_lists_eleven_types_with_generated_schemas(app: TestApp) {
        let body = app.get("/api/actions/types", &app.owner).await.expect(200);
        let types = body["types"].as_array().unwrap();
        assert_eq!(types.len(), 11);
        let mut seen = BTreeSet::new();
        for t in types {
            let name = t["type"].as_str().unwrap();
            seen.insert(name.to_owned());
            for field in ["label", "description"] {
                assert!(t[field].as_str().is_some_and(|s| !s.is_empty()), "{name} {field}");
            }
            let schema = &t["configSchema"];
            assert_eq!(schema["type"], "object", "{name}");
            assert_eq!(schema["additionalProperties"], false, "{name}");
            let expected = match name {
                "add_tag" | "set_variable" | "assign_agent" | "subscribe_campaign" | "delete_contact" => "basic",
                "run_api_request" | "run_javascript" | "move_to_board" => "advanced",
                _ => "integration",
            };
            assert_eq!(t["category"], expected, "{name}");
        }
        let all: BTreeSet<String> = [
            "add_tag", "set_variable", "assign_agent", "subscribe_campaign", "delete_contact", "run_api_request",
            "run_javascript", "move_to_board", "send_webhook", "email_integration", "crm_integration",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(seen, all);
        let add_tag = types.iter().find(|t| t["type"] == "add_tag").unwrap();
        assert_eq!(add_tag["configSchema"]["required"], json!(["tagName"]));
        assert!(add_tag["configSchema"]["properties"]["tagColor"]["pattern"].is_string());
    }
}

api_test! {
    async fn actions_are_created_listed_updated_and_deleted_in_node_order(app: TestApp) {
        let flow = app.flow(&app.owner).await;
        let path = format!("/api/actions/flows/{flow}");
        let tag = json!({"nodeId": "start", "actionType": "add_tag", "actionConfig": {"tagName": "lead", "tagColor": "#22aa88"}, "name": "Tag lead"});
        let first = app.post(&path, &app.owner, tag).await.expect(201);
        assert_eq!(first["position"], 0);
        assert_eq!(first["enabled"], true);
        assert_eq!(first["flowId"], flow.as_str());
        assert_eq!(first["actionConfig"]["tagColor"], "#22aa88");
        let set = json!({
            "nodeId": "start", "actionType": "set_variable", "position": 0,
            "actionConfig": {"name": "plan", "type": "string", "value": "{{ trigger.plan }}"},
            "retry": {"maxAttempts": 5, "initialDelayMs": 500, "factor": 3, "maxDelayMs": 60000, "jitter": false},
            "timeoutMs": 2000
        });
        let second = app.post(&path, &app.owner, set).await.expect(201);
        assert_eq!(second["position"], 0);
        assert_eq!(second["retry"]["maxAttempts"], 5);
        assert_eq!(second["timeoutMs"], 2000);
        let hook = json!({"nodeId": "next", "actionType": "send_webhook", "actionConfig": {"url": "https://hooks.example.com/x", "signingSecret": "{{ secrets.hook }}"}});
        app.post(&path, &app.owner, hook).await.expect(201);

        let list = app.get(&path, &app.owner).await.expect(200);
        let order: Vec<(String, i64)> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["actionType"].as_str().unwrap().to_owned(), a["position"].as_i64().unwrap()))
            .collect();
        assert_eq!(
            order,
            [("send_webhook".to_owned(), 0), ("set_variable".to_owned(), 0), ("add_tag".to_owned(), 1)],
            "ordered by node, then position"
        );
        let only_start = app.get(&format!("{path}?nodeId=start"), &app.owner).await.expect(200);
        assert_eq!(only_start["items"].as_array().unwrap().len(), 2);

        let action_path = format!("{path}/actions/{}", first["id"].as_str().unwrap());
        let updated = app
            .put(&action_path, &app.owner, json!({"actionConfig": {"tagName": "customer"}, "position": 0, "name": null}))
            .await
            .expect(200);
        assert_eq!(updated["actionConfig"], json!({"tagName": "customer"}));
        assert_eq!(updated["position"], 0);
        assert_eq!(updated["name"], serde_json::Value::Null);
        let retyped = app
            .put(&action_path, &app.owner, json!({"actionType": "subscribe_campaign", "actionConfig": {"campaignId": "{{ vars.campaign }}"}}))
            .await
            .expect(200);
        assert_eq!(retyped["actionType"], "subscribe_campaign");
        app.delete(&action_path, &app.owner).await.expect(204);
        app.delete(&action_path, &app.owner).await.problem(404, "not_found");
        let list = app.get(&path, &app.owner).await.expect(200);
        let start: Vec<_> = list["items"].as_array().unwrap().iter().filter(|a| a["nodeId"] == "start").collect();
        assert_eq!(start.len(), 1);
        assert_eq!(start[0]["position"], 0, "positions close up after a delete");
    }
}

api_test! {
    async fn invalid_configs_are_refused_with_every_field_named(app: TestApp) {
        let flow = app.flow(&app.owner).await;
        let path = format!("/api/actions/flows/{flow}");
        let before = app.audit_count().await;
        let fields = app
            .post(&path, &app.owner, json!({"nodeId": "start", "actionType": "add_tag", "actionConfig": {"tagColor": "red", "bogus": 1}}))
            .await
            .invalid_fields();
        assert!(fields.contains(&"actionConfig.tagName".to_owned()), "{fields:?}");
        assert!(fields.contains(&"actionConfig.tagColor".to_owned()), "{fields:?}");
        assert!(fields.contains(&"actionConfig.bogus".to_owned()), "{fields:?}");
        let fields = app
            .post(&path, &app.owner, json!({"nodeId": "start", "actionType": "teleport", "actionConfig": {}}))
            .await
            .invalid_fields();
        assert_eq!(fields, ["actionType"]);
        let fields = app
            .post(&path, &app.owner, json!({"nodeId": "nowhere", "actionType": "add_tag", "actionConfig": {"tagName": "x"}}))
            .await
            .invalid_fields();
        assert_eq!(fields, ["nodeId"]);
        let fields = app
            .post(
                &path,
                &app.owner,
                json!({"nodeId": "start", "actionType": "run_api_request", "actionConfig": {"url": "ftp://x", "method": "BREW"},
                       "position": -1, "timeoutMs": 0, "retry": {"maxAttempts": 0, "factor": 50}}),
            )
            .await
            .invalid_fields();
        for expected in ["actionConfig.method", "position", "timeoutMs", "retry.maxAttempts", "retry.factor"] {
            assert!(fields.contains(&expected.to_owned()), "{expected} missing from {fields:?}");
        }
        let fields = app
            .post(
                &path,
                &app.owner,
                json!({"nodeId": "start", "actionType": "email_integration",
                       "actionConfig": {"provider": "smtp", "from": "a@b.co", "subject": "Hi\r\nBcc: x@y.z", "text": "t",
                                        "smtp": {"host": "h", "port": 70000, "security": "none"}}}),
            )
            .await
            .invalid_fields();
        assert!(fields.contains(&"actionConfig.smtp.port".to_owned()), "{fields:?}");
        // Updates are checked against the current type, and a new type needs a new config.
        let action = app.tag_action(&flow, "start", "ok").await;
        let action_path = format!("{path}/actions/{action}");
        let fields = app.put(&action_path, &app.owner, json!({"actionConfig": {"tagName": ""}})).await.invalid_fields();
        assert_eq!(fields, ["actionConfig.tagName"]);
        let fields = app.put(&action_path, &app.owner, json!({"actionType": "set_variable"})).await.invalid_fields();
        assert_eq!(fields, ["actionConfig"]);
        let fields = app.put(&action_path, &app.owner, json!({"nodeId": "elsewhere"})).await.invalid_fields();
        assert_eq!(fields, ["nodeId"]);
        assert_eq!(app.audit_count().await, before + 1, "only the valid create was written");
        let list = app.get(&path, &app.owner).await.expect(200);
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        assert_eq!(list["items"][0]["actionConfig"], json!({"tagName": "ok"}));
    }
}

api_test! {
    async fn an_actions_execution_history_is_a_paginated_list(app: TestApp) {
        let flow = app.flow(&app.owner).await;
        let action = app.tag_action(&flow, "start", "x").await;
        let page = app.get(&format!("/api/actions/{action}/executions?limit=10"), &app.owner).await.expect(200);
        assert_eq!(page, json!({"items": [], "nextCursor": null}));
        app.get(&format!("/api/actions/{action}/executions?limit=0"), &app.owner).await.problem(400, "invalid_limit");
        app.get(&format!("/api/actions/{action}/executions?cursor=nope"), &app.owner).await.problem(400, "invalid_cursor");
    }
}
