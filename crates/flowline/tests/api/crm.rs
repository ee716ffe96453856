//! Contacts, tags, agents, campaigns, boards and backups through the API, and the five actions
//! that change them, run by the engine.

use std::collections::HashMap;

use flowline_core::role::Role;
use serde_json::{Value, json};

use crate::api_test;
use crate::support::TestApp;

fn node(id: &str) -> Value {
    json!({"id": id, "position": {"x": 0, "y": 0}})
}

/// Creates and publishes a one-node flow running `actions` (type, config) in order, with
/// `triggers`; returns its id.
async fn flow_of(app: &TestApp, actions: Vec<(&str, Value)>, triggers: Value) -> String {
    let flow = app
        .post(
            "/api/flows",
            &app.owner,
            json!({"name": "crm", "graph": {"nodes": [node("start")], "edges": []}, "triggers": triggers}),
        )
        .await
        .expect(201);
    let id = flow["id"].as_str().unwrap().to_owned();
    for (action_type, config) in actions {
        app.post(
            &format!("/api/actions/flows/{id}"),
            &app.owner,
            json!({"nodeId": "start", "actionType": action_type, "actionConfig": config, "retry": {"maxAttempts": 1}}),
        )
        .await
        .expect(201);
    }
    app.post(&format!("/api/flows/{id}/publish"), &app.owner, json!({}))
        .await
        .expect(200);
    id
}

async fn contact(app: &TestApp, name: &str, email: &str) -> String {
    let body = app
        .post(
            "/api/contacts",
            &app.owner,
            json!({"name": name, "email": email, "company": "Acme", "attributes": {"plan": "pro"}}),
        )
        .await
        .expect(201);
    body["id"].as_str().unwrap().to_owned()
}

/// Runs `flow` for `contact` to its end; returns the run.
async fn run(app: &TestApp, flow: &str, contact: &str) -> Value {
    let accepted = app
        .post(
            &format!("/api/flows/{flow}/executions"),
            &app.owner,
            json!({"contactId": contact}),
        )
        .await
        .expect(202);
    app.engine.drain().await.unwrap();
    let id = accepted["id"].as_str().unwrap();
    app.get(&format!("/api/executions/{id}"), &app.owner)
        .await
        .expect(200)
}

async fn detail(app: &TestApp, contact: &str) -> Value {
    app.get(&format!("/api/contacts/{contact}"), &app.owner)
        .await
        .expect(200)
}

fn ids(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

api_test! {
    async fn contacts_are_validated_unique_by_email_and_filterable(app: TestApp) {
        let ada = contact(&app, "Ada", "ada@example.com").await;
        let bob = contact(&app, "Bob", "bob@example.com").await;
        // The same email in another case is taken.
        let taken = app
            .post("/api/contacts", &app.owner, json!({"email": "ADA@example.com"}))
            .await
            .problem(409, "conflict");
        assert!(taken["detail"].as_str().unwrap().contains("ada@example.com") || taken["detail"].as_str().unwrap().contains("ADA"));
        let bad = app
            .post("/api/contacts", &app.owner, json!({"email": "not an email", "attributes": [1]}))
            .await
            .invalid_fields();
        assert_eq!(bad, vec!["email", "attributes"]);
        // A viewer reads but may not write.
        let viewer = app.token(Role::Viewer).await;
        app.get("/api/contacts", &viewer).await.expect(200);
        app.post("/api/contacts", &viewer, json!({"name": "x"})).await.problem(403, "forbidden");

        let by_email = app.get("/api/contacts?email=BOB@example.com", &app.owner).await.expect(200);
        assert_eq!(ids(&by_email), vec![bob.clone()]);
        let all = app.get("/api/contacts?limit=1", &app.owner).await.expect(200);
        assert_eq!(ids(&all), vec![bob.clone()]);
        let cursor = all["nextCursor"].as_str().unwrap();
        let rest = app.get(&format!("/api/contacts?limit=1&cursor={cursor}"), &app.owner).await.expect(200);
        assert_eq!(ids(&rest), vec![ada.clone()]);

        // Partial update: null clears, absent keeps; an email taken by another is a conflict.
        let updated = app
            .put(&format!("/api/contacts/{ada}"), &app.owner, json!({"company": null, "phone": "+44 20 7946 0000"}))
            .await
            .expect(200);
        assert_eq!(updated["company"], Value::Null);
        assert_eq!(updated["name"], "Ada");
        assert_eq!(updated["phone"], "+44 20 7946 0000");
        app.put(&format!("/api/contacts/{ada}"), &app.owner, json!({"email": "bob@EXAMPLE.com"}))
            .await
            .problem(409, "conflict");

        // Tag filter and the tag's own listing.
        let tag = app.post("/api/tags", &app.owner, json!({"name": "VIP", "color": "#ff0000"})).await.expect(201);
        let tag_id = tag["id"].as_str().unwrap();
        app.put(&format!("/api/contacts/{ada}/tags/{tag_id}"), &app.owner, json!({})).await.expect(201);
        app.put(&format!("/api/contacts/{ada}/tags/{tag_id}"), &app.owner, json!({})).await.expect(200);
        let tagged = app.get(&format!("/api/contacts?tagId={tag_id}"), &app.owner).await.expect(200);
        assert_eq!(ids(&tagged), vec![ada.clone()]);
        assert_eq!(detail(&app, &ada).await["tags"][0]["name"], "VIP");
        app.delete(&format!("/api/contacts/{ada}/tags/{tag_id}"), &app.owner).await.expect(204);
        app.delete(&format!("/api/contacts/{ada}/tags/{tag_id}"), &app.owner).await.problem(404, "not_found");
        let none = app.get(&format!("/api/contacts?tagId={tag_id}"), &app.owner).await.expect(200);
        assert!(ids(&none).is_empty());
        app.get("/api/contacts?tagId=nope", &app.owner).await.expect(400);
        app.get("/api/contacts?colour=red", &app.owner).await.expect(400);

        // Another workspace sees none of it.
        let (_, other) = app.other_workspace().await;
        app.get(&format!("/api/contacts/{ada}"), &other).await.problem(404, "not_found");
        assert!(ids(&app.get("/api/contacts", &other).await.expect(200)).is_empty());
    }
}

api_test! {
    async fn tags_agents_campaigns_and_boards_refuse_bad_input_and_unsafe_deletes(app: TestApp) {
        // Tags: colors, names unique ignoring case; deleting one detaches it (a documented cascade).
        assert_eq!(
            app.post("/api/tags", &app.owner, json!({"name": "", "color": "red"})).await.invalid_fields(),
            vec!["name", "color"]
        );
        let tag = app.post("/api/tags", &app.owner, json!({"name": "Lead"})).await.expect(201);
        assert_eq!(tag["color"], "#6b7280");
        app.post("/api/tags", &app.owner, json!({"name": "LEAD"})).await.problem(409, "conflict");
        let tag_id = tag["id"].as_str().unwrap();
        let renamed = app.put(&format!("/api/tags/{tag_id}"), &app.owner, json!({"color": "#00aa00"})).await.expect(200);
        assert_eq!(renamed["color"], "#00aa00");
        let ada = contact(&app, "Ada", "ada@example.com").await;
        app.put(&format!("/api/contacts/{ada}/tags/{tag_id}"), &app.owner, json!({})).await.expect(201);
        app.delete(&format!("/api/tags/{tag_id}"), &app.owner).await.expect(204);
        assert_eq!(detail(&app, &ada).await["tags"], json!([]));

        // Agents: capacity bounds; one with assignment history cannot be deleted.
        assert_eq!(
            app.post("/api/agents", &app.owner, json!({"name": "Zed", "capacity": -1, "email": "x"})).await.invalid_fields(),
            vec!["email", "capacity"]
        );
        let agent = app.post("/api/agents", &app.owner, json!({"name": "Ann", "email": "ann@example.com"})).await.expect(201);
        assert_eq!(agent["capacity"], 100);
        assert_eq!(agent["load"], 0);
        let agent_id = agent["id"].as_str().unwrap();
        let flow = flow_of(&app, vec![("assign_agent", json!({"agentId": agent_id, "priority": "high"}))], json!([])).await;
        let ran = run(&app, &flow, &ada).await;
        assert_eq!(ran["status"], "completed", "{ran}");
        assert_eq!(app.get(&format!("/api/agents/{agent_id}"), &app.owner).await.expect(200)["load"], 1);
        app.delete(&format!("/api/agents/{agent_id}"), &app.owner).await.problem(409, "conflict");
        let idle = app.post("/api/agents", &app.owner, json!({"name": "Idle"})).await.expect(201);
        app.delete(&format!("/api/agents/{}", idle["id"].as_str().unwrap()), &app.owner).await.expect(204);

        // Campaigns: one with subscribers cannot be deleted.
        let campaign = app.post("/api/campaigns", &app.owner, json!({"name": "Spring"})).await.expect(201);
        let campaign_id = campaign["id"].as_str().unwrap();
        app.post("/api/campaigns", &app.owner, json!({"name": "Bad", "status": "paused"})).await.expect(422);
        let subscribe = flow_of(&app, vec![("subscribe_campaign", json!({"campaignId": campaign_id}))], json!([])).await;
        assert_eq!(run(&app, &subscribe, &ada).await["status"], "completed");
        app.delete(&format!("/api/campaigns/{campaign_id}"), &app.owner).await.problem(409, "conflict");
        let empty = app.post("/api/campaigns", &app.owner, json!({"name": "Empty"})).await.expect(201);
        app.delete(&format!("/api/campaigns/{}", empty["id"].as_str().unwrap()), &app.owner).await.expect(204);

        // Boards: ordered columns; a column holding contacts cannot be dropped.
        app.post("/api/boards", &app.owner, json!({"name": "Sales", "columns": ["", "ok"]})).await.expect(422);
        let board = app.post("/api/boards", &app.owner, json!({"name": "Sales", "columns": ["New", "Qualified", "Won"]})).await.expect(201);
        let board_id = board["id"].as_str().unwrap();
        let columns: Vec<String> = board["columns"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_owned()).collect();
        assert_eq!(board["columns"][1]["name"], "Qualified");
        assert_eq!(board["columns"][2]["position"], 2);
        app.post(&format!("/api/boards/{board_id}/cards"), &app.owner, json!({"contactId": ada, "columnId": columns[1]})).await.expect(200);
        let dropped = app
            .put(&format!("/api/boards/{board_id}"), &app.owner, json!({"columns": [{"id": columns[0], "name": "New"}, {"id": columns[2], "name": "Won"}]}))
            .await
            .problem(409, "conflict");
        assert!(dropped["detail"].as_str().unwrap().contains("Qualified"), "{dropped}");
        // Reorder, rename, add, and drop the empty one.
        let reordered = app
            .put(&format!("/api/boards/{board_id}"), &app.owner, json!({"columns": [
                {"id": columns[1], "name": "Hot"}, {"id": columns[0], "name": "New"}, {"name": "Lost"}
            ]}))
            .await
            .expect(200);
        let names: Vec<&str> = reordered["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["Hot", "New", "Lost"]);
        app.put(&format!("/api/boards/{board_id}"), &app.owner, json!({"columns": [{"id": ada, "name": "x"}]}))
            .await
            .expect(422);
        let cards = app.get(&format!("/api/boards/{board_id}/cards"), &app.owner).await.expect(200);
        assert_eq!(cards["cards"][0]["contactId"], ada.as_str());
        assert_eq!(cards["cards"][0]["columnId"], columns[1].as_str());
        let in_column = app.get(&format!("/api/contacts?columnId={}", columns[1]), &app.owner).await.expect(200);
        assert_eq!(ids(&in_column), vec![ada.clone()]);
        app.delete(&format!("/api/boards/{board_id}"), &app.owner).await.expect(204);
        assert_eq!(detail(&app, &ada).await["cards"], json!([]));
    }
}

api_test! {
    async fn add_tag_finds_or_creates_and_is_idempotent(app: TestApp) {
        let ada = contact(&app, "Ada", "ada@example.com").await;
        let flow = flow_of(
            &app,
            vec![
                ("add_tag", json!({"tagName": "{{ contact.attributes.plan }}-customer", "tagColor": "#22c55e"})),
                ("set_variable", json!({"name": "tags", "type": "array", "value": "{{ contact.tags }}"})),
            ],
            json!([]),
        )
        .await;
        let first = run(&app, &flow, &ada).await;
        assert_eq!(first["status"], "completed", "{first}");
        let output = &first["steps"][0]["output"];
        assert_eq!(output["created"], true);
        assert_eq!(output["alreadyTagged"], false);
        // The next step saw the tag: the contact is read fresh at each step.
        assert_eq!(first["variables"][0]["value"], json!(["pro-customer"]));
        let second = run(&app, &flow, &ada).await;
        let output = &second["steps"][0]["output"];
        assert_eq!(output["created"], false);
        assert_eq!(output["alreadyTagged"], true);
        assert_eq!(output["tagId"], first["steps"][0]["output"]["tagId"]);
        let tags = app.get("/api/tags", &app.owner).await.expect(200);
        assert_eq!(tags["items"].as_array().unwrap().len(), 1);
        assert_eq!(tags["items"][0]["color"], "#22c55e");
        // The tag is found ignoring case.
        let bob = contact(&app, "Bob", "bob@example.com").await;
        let upper = flow_of(&app, vec![("add_tag", json!({"tagName": "PRO-CUSTOMER"}))], json!([])).await;
        let third = run(&app, &upper, &bob).await;
        assert_eq!(third["steps"][0]["output"]["created"], false);
        assert_eq!(detail(&app, &bob).await["tags"][0]["name"], "pro-customer");
        // A run without a contact fails cleanly.
        let accepted = app.post(&format!("/api/flows/{flow}/executions"), &app.owner, json!({})).await.expect(202);
        app.engine.drain().await.unwrap();
        let lonely = app.get(&format!("/api/executions/{}", accepted["id"].as_str().unwrap()), &app.owner).await.expect(200);
        assert_eq!(lonely["status"], "failed");
        assert_eq!(lonely["steps"][0]["error"]["category"], "validation");
    }
}

api_test! {
    async fn assign_agent_rotates_balances_and_explains_when_nobody_is_free(app: TestApp) {
        let mut agents = Vec::new();
        for name in ["Ann", "Ben", "Cat"] {
            let a = app.post("/api/agents", &app.owner, json!({"name": name, "capacity": 3})).await.expect(201);
            agents.push(a["id"].as_str().unwrap().to_owned());
        }
        let rr = flow_of(&app, vec![("assign_agent", json!({"strategy": "round_robin", "priority": "urgent"}))], json!([])).await;
        let mut chosen = Vec::new();
        for i in 0..6 {
            let c = contact(&app, &format!("c{i}"), &format!("c{i}@example.com")).await;
            let ran = run(&app, &rr, &c).await;
            assert_eq!(ran["status"], "completed", "{ran}");
            chosen.push(ran["steps"][0]["output"]["agentId"].as_str().unwrap().to_owned());
            let d = detail(&app, &c).await;
            assert_eq!(d["assignedAgentId"], chosen[i].as_str());
            assert_eq!(d["assignments"][0]["priority"], "urgent");
            assert_eq!(d["assignments"][0]["strategy"], "round_robin");
            assert_eq!(d["assignments"][0]["executionId"], ran["id"]);
        }
        // Each agent in turn, twice.
        assert_eq!(chosen[..3], chosen[3..]);
        let mut distinct = chosen[..3].to_vec();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3);

        // Least loaded: Cat is deactivated, Ann gets one more; the next goes to Ben.
        app.put(&format!("/api/agents/{}", agents[2]), &app.owner, json!({"active": false})).await.expect(200);
        let extra = contact(&app, "extra", "extra@example.com").await;
        let given = flow_of(&app, vec![("assign_agent", json!({"agentId": agents[0]}))], json!([])).await;
        assert_eq!(run(&app, &given, &extra).await["status"], "completed");
        let ll = flow_of(&app, vec![("assign_agent", json!({"strategy": "least_loaded"}))], json!([])).await;
        let d = contact(&app, "d", "d@example.com").await;
        assert_eq!(run(&app, &ll, &d).await["steps"][0]["output"]["agentId"], agents[1].as_str());
        // Reassigning releases the previous assignment.
        assert_eq!(run(&app, &given, &d).await["status"], "completed");
        let history = detail(&app, &d).await["assignments"].clone();
        assert_eq!(history.as_array().unwrap().len(), 2);
        assert_eq!(history[0]["releasedAt"], Value::Null);
        assert!(history[1]["releasedAt"].is_string());

        // Ann and Ben are full (3 each); Cat is inactive: nobody is eligible.
        let e = contact(&app, "e", "e@example.com").await;
        let f = contact(&app, "f", "f@example.com").await;
        assert_eq!(run(&app, &rr, &e).await["status"], "completed");
        let full = run(&app, &rr, &f).await;
        assert_eq!(full["status"], "failed", "{full}");
        let error = &full["steps"][0]["error"];
        assert_eq!(error["category"], "not_found");
        assert_eq!(error["retryable"], false);
        assert!(error["suggestion"].as_str().unwrap().contains("capacity"), "{error}");
        // The failed step shows the config it was given.
        assert_eq!(full["steps"][0]["input"], json!({"strategy": "round_robin", "priority": "urgent"}));
        assert_eq!(detail(&app, &f).await["assignments"], json!([]));
        // An unknown agent in a config is refused when it is saved.
        let flow = app.flow(&app.owner).await;
        let refused = app
            .post(&format!("/api/actions/flows/{flow}"), &app.owner, json!({"nodeId": "start", "actionType": "assign_agent",
                "actionConfig": {"agentId": "0190f7a0-0000-7000-8000-000000000000"}}))
            .await
            .invalid_fields();
        assert_eq!(refused, vec!["actionConfig.agentId"]);
    }
}

api_test! {
    async fn subscribe_campaign_is_idempotent_resubscribes_and_refuses_archived(app: TestApp) {
        let ada = contact(&app, "Ada", "ada@example.com").await;
        let campaign = app.post("/api/campaigns", &app.owner, json!({"name": "Spring"})).await.expect(201);
        let id = campaign["id"].as_str().unwrap();
        let flow = flow_of(&app, vec![("subscribe_campaign", json!({"campaignId": id}))], json!([])).await;
        let first = run(&app, &flow, &ada).await;
        assert_eq!(first["steps"][0]["output"]["alreadySubscribed"], false);
        let second = run(&app, &flow, &ada).await;
        assert_eq!(second["steps"][0]["output"]["alreadySubscribed"], true);
        assert_eq!(second["steps"][0]["output"]["subscriptionId"], first["steps"][0]["output"]["subscriptionId"]);
        let left = app.delete(&format!("/api/campaigns/{id}/subscriptions/{ada}"), &app.owner).await.expect(200);
        assert_eq!(left["status"], "unsubscribed");
        let third = run(&app, &flow, &ada).await;
        assert_eq!(third["steps"][0]["output"]["resubscribed"], true);
        let subs = app.get(&format!("/api/campaigns/{id}/subscriptions"), &app.owner).await.expect(200);
        assert_eq!(subs["items"].as_array().unwrap().len(), 1);
        assert_eq!(subs["items"][0]["status"], "subscribed");
        assert_eq!(subs["items"][0]["unsubscribedAt"], Value::Null);

        app.put(&format!("/api/campaigns/{id}"), &app.owner, json!({"status": "archived"})).await.expect(200);
        let bob = contact(&app, "Bob", "bob@example.com").await;
        let archived = run(&app, &flow, &bob).await;
        assert_eq!(archived["status"], "failed");
        assert_eq!(archived["steps"][0]["error"]["category"], "validation");
        assert!(archived["steps"][0]["error"]["message"].as_str().unwrap().contains("archived"));
        // A templated id that renders to nothing of the kind fails `not_found`.
        let templated = flow_of(&app, vec![("subscribe_campaign", json!({"campaignId": "{{ contact.id }}"}))], json!([])).await;
        let missing = run(&app, &templated, &bob).await;
        assert_eq!(missing["steps"][0]["error"]["category"], "not_found");
    }
}

api_test! {
    async fn move_to_board_places_moves_and_records_history(app: TestApp) {
        let ada = contact(&app, "Ada", "ada@example.com").await;
        let board = app.post("/api/boards", &app.owner, json!({"name": "Sales", "columns": ["New", "Qualified"]})).await.expect(201);
        let board_id = board["id"].as_str().unwrap();
        let new = board["columns"][0]["id"].as_str().unwrap();
        let qualified = board["columns"][1]["id"].as_str().unwrap();
        let place = flow_of(&app, vec![("move_to_board", json!({"boardId": board_id}))], json!([])).await;
        let placed = run(&app, &place, &ada).await;
        assert_eq!(placed["status"], "completed", "{placed}");
        assert_eq!(placed["steps"][0]["output"], json!({"boardId": board_id, "from": null, "to": new}));
        let advance = flow_of(&app, vec![("move_to_board", json!({"boardId": board_id, "columnId": qualified}))], json!([])).await;
        let moved = run(&app, &advance, &ada).await;
        assert_eq!(moved["steps"][0]["output"]["from"], new);
        assert_eq!(moved["steps"][0]["output"]["to"], qualified);
        // Still one card: a contact sits in one column per board.
        let cards = detail(&app, &ada).await["cards"].clone();
        assert_eq!(cards.as_array().unwrap().len(), 1);
        assert_eq!(cards[0]["columnId"], qualified);
        let history = app.get(&format!("/api/boards/{board_id}/history"), &app.owner).await.expect(200);
        let moves = history["items"].as_array().unwrap();
        assert_eq!(moves.len(), 2);
        assert_eq!(moves[0]["fromColumnId"], new);
        assert_eq!(moves[0]["toColumnId"], qualified);
        assert_eq!(moves[0]["executionId"], moved["id"]);
        assert_eq!(moves[1]["fromColumnId"], Value::Null);
        // Unknown ids: 422 at save time when literal.
        let flow = app.flow(&app.owner).await;
        let refused = app
            .post(&format!("/api/actions/flows/{flow}"), &app.owner, json!({"nodeId": "start", "actionType": "move_to_board",
                "actionConfig": {"boardId": board_id, "columnId": ada}}))
            .await
            .invalid_fields();
        assert_eq!(refused, vec!["actionConfig.columnId"]);
    }
}

api_test! {
    async fn a_deleted_contact_is_restored_exactly_and_later_steps_fail_cleanly(app: TestApp) {
        let ada = contact(&app, "Ada", "ada@example.com").await;
        app.post("/api/tags", &app.owner, json!({"name": "VIP", "color": "#aa0000"})).await.expect(201);
        let agent = app.post("/api/agents", &app.owner, json!({"name": "Ann"})).await.expect(201);
        let campaign = app.post("/api/campaigns", &app.owner, json!({"name": "Spring"})).await.expect(201);
        let board = app.post("/api/boards", &app.owner, json!({"name": "Sales", "columns": ["New", "Won"]})).await.expect(201);
        let setup = flow_of(
            &app,
            vec![
                ("add_tag", json!({"tagName": "VIP"})),
                ("add_tag", json!({"tagName": "Newsletter", "tagColor": "#00ff00"})),
                ("assign_agent", json!({"agentId": agent["id"]})),
                ("subscribe_campaign", json!({"campaignId": campaign["id"]})),
                ("move_to_board", json!({"boardId": board["id"], "columnId": board["columns"][1]["id"]})),
            ],
            json!([]),
        )
        .await;
        assert_eq!(run(&app, &setup, &ada).await["status"], "completed");
        let original = detail(&app, &ada).await;
        assert_eq!(original["tags"].as_array().unwrap().len(), 2);

        for mode in ["soft", "permanent"] {
            let delete = flow_of(
                &app,
                vec![
                    ("delete_contact", json!({"mode": mode})),
                    ("add_tag", json!({"tagName": "after"})),
                ],
                json!([]),
            )
            .await;
            let ran = run(&app, &delete, &ada).await;
            assert_eq!(ran["status"], "failed", "{ran}");
            assert_eq!(ran["steps"][0]["status"], "completed");
            let backup_id = ran["steps"][0]["output"]["backupId"].as_str().unwrap().to_owned();
            assert_eq!(ran["steps"][1]["error"]["category"], "not_found");
            assert!(ran["steps"][1]["error"]["message"].as_str().unwrap().contains("deleted"));
            app.get(&format!("/api/contacts/{ada}"), &app.owner).await.problem(404, "not_found");
            assert!(ids(&app.get("/api/contacts", &app.owner).await.expect(200)).is_empty());
            // The email is free while the contact is deleted.
            let backup = app.get(&format!("/api/contact-backups/{backup_id}"), &app.owner).await.expect(200);
            assert_eq!(backup["mode"], mode);
            assert_eq!(backup["snapshot"], original);
            if mode == "permanent" {
                // A tag deleted since is recreated by the restore.
                let vip = original["tags"].as_array().unwrap().iter().find(|t| t["name"] == "VIP").unwrap();
                app.delete(&format!("/api/tags/{}", vip["id"].as_str().unwrap()), &app.owner).await.expect(204);
            }
            let restored = app.post(&format!("/api/contact-backups/{backup_id}/restore"), &app.owner, json!({})).await.expect(200);
            assert_eq!(restored, original);
            assert_eq!(detail(&app, &ada).await, original);
            app.post(&format!("/api/contact-backups/{backup_id}/restore"), &app.owner, json!({})).await.problem(409, "conflict");
        }
        let backups = app.get("/api/contact-backups", &app.owner).await.expect(200);
        assert_eq!(backups["items"].as_array().unwrap().len(), 2);

        // Through the API: admins only, always with a backup.
        let editor = app.token(Role::Editor).await;
        app.delete(&format!("/api/contacts/{ada}"), &editor).await.problem(403, "forbidden");
        let backup = app.delete(&format!("/api/contacts/{ada}?mode=permanent"), &app.owner).await.expect(200);
        app.delete(&format!("/api/contacts/{ada}?mode=later"), &app.owner).await.expect(400);
        // Another contact took the email meanwhile: restoring would duplicate it.
        contact(&app, "Impostor", "ADA@example.com").await;
        app.post(&format!("/api/contact-backups/{}/restore", backup["id"].as_str().unwrap()), &app.owner, json!({}))
            .await
            .problem(409, "conflict");
        // A contact's runs are listed, deleted or not; an unknown contact is not found.
        app.get(&format!("/api/contacts/{}/executions", board["id"].as_str().unwrap()), &app.owner)
            .await
            .problem(404, "not_found");
        let runs = app.get(&format!("/api/contacts/{ada}/executions"), &app.owner).await.expect(200);
        assert_eq!(runs["items"].as_array().unwrap().len(), 3);
    }
}

api_test! {
    async fn events_start_flows_in_the_same_transaction_and_self_triggering_stops(app: TestApp) {
        let tag = app.post("/api/tags", &app.owner, json!({"name": "Hot"})).await.expect(201);
        let tag_id = tag["id"].as_str().unwrap();
        let board = app.post("/api/boards", &app.owner, json!({"name": "Sales", "columns": ["New", "Won"]})).await.expect(201);
        let won = board["columns"][1]["id"].as_str().unwrap();
        let on_created = flow_of(&app, vec![("set_variable", json!({"name": "e", "type": "string", "value": "{{ trigger.type }}"}))],
            json!([{"event": "contact.created"}])).await;
        let on_updated = flow_of(&app, vec![("set_variable", json!({"name": "e", "type": "string", "value": "{{ trigger.type }}"}))],
            json!([{"event": "contact.updated"}])).await;
        let on_hot = flow_of(&app, vec![("set_variable", json!({"name": "t", "type": "string", "value": "{{ trigger.tagName }}"}))],
            json!([{"event": "tag.added", "tagId": tag_id}])).await;
        let on_won = flow_of(&app, vec![("set_variable", json!({"name": "c", "type": "string", "value": "{{ trigger.columnId }}"}))],
            json!([{"event": "contact.moved", "boardId": board["id"], "columnId": won}])).await;
        // Bad triggers are refused when saved.
        let bad = app
            .post("/api/flows", &app.owner, json!({"name": "x", "triggers": [
                {"event": "tag.added", "tagId": "0190f7a0-0000-7000-8000-000000000000"},
                {"event": "contact.created", "tagId": tag_id},
                {"event": "contact.moved", "columnId": won},
                {"event": "contact.exploded"}
            ]}))
            .await;
        assert_eq!(bad.status, 422);

        let runs_of = |flow: String| {
            let app = &app;
            async move {
                app.get(&format!("/api/flows/{flow}/executions"), &app.owner).await.expect(200)["items"]
                    .as_array()
                    .unwrap()
                    .clone()
            }
        };
        // The run exists as soon as the change is answered: same transaction, nothing to wait for.
        let ada = contact(&app, "Ada", "ada@example.com").await;
        let created = runs_of(on_created.clone()).await;
        assert_eq!(created.len(), 1);
        assert_eq!(created[0]["triggerKind"], "event");
        assert_eq!(created[0]["contactId"], ada.as_str());
        assert!(runs_of(on_updated.clone()).await.is_empty());
        app.put(&format!("/api/contacts/{ada}"), &app.owner, json!({"name": "Ada L."})).await.expect(200);
        // An update that changes nothing raises nothing.
        app.put(&format!("/api/contacts/{ada}"), &app.owner, json!({"name": "Ada L."})).await.expect(200);
        assert_eq!(runs_of(on_updated.clone()).await.len(), 1);

        // tag.added, narrowed to one tag: another tag starts nothing.
        let tagger = flow_of(&app, vec![("add_tag", json!({"tagName": "Cold"})), ("add_tag", json!({"tagName": "hot"}))], json!([])).await;
        run(&app, &tagger, &ada).await;
        let hot = runs_of(on_hot.clone()).await;
        assert_eq!(hot.len(), 1);
        // contact.moved, narrowed to a column.
        app.post(&format!("/api/boards/{}/cards", board["id"].as_str().unwrap()), &app.owner, json!({"contactId": ada})).await.expect(200);
        assert!(runs_of(on_won.clone()).await.is_empty());
        app.post(&format!("/api/boards/{}/cards", board["id"].as_str().unwrap()), &app.owner, json!({"contactId": ada, "columnId": won}))
            .await
            .expect(200);
        assert_eq!(runs_of(on_won.clone()).await.len(), 1);
        app.engine.drain().await.unwrap();
        for (flow, name, value) in [
            (on_created, "e", json!("contact.created")),
            (on_updated, "e", json!("contact.updated")),
            (on_hot, "t", json!("Hot")),
            (on_won, "c", json!(won)),
        ] {
            let id = runs_of(flow).await[0]["id"].as_str().unwrap().to_owned();
            let ran = app.get(&format!("/api/executions/{id}"), &app.owner).await.expect(200);
            assert_eq!(ran["status"], "completed", "{ran}");
            assert_eq!(ran["variables"][0]["name"], name);
            assert_eq!(ran["variables"][0]["value"], value);
        }

        // A flow that adds a tag on every tag it sees: each run's new tag starts it again, and
        // the chain stops at the depth limit with a failed run that says why.
        let looping = flow_of(
            &app,
            vec![("add_tag", json!({"tagName": "loop-{{ trigger.depth }}"}))],
            json!([{"event": "tag.added"}]),
        )
        .await;
        let seed = app.post("/api/tags", &app.owner, json!({"name": "seed"})).await.expect(201);
        let looper = contact(&app, "Looper", "looper@example.com").await;
        app.put(&format!("/api/contacts/{looper}/tags/{}", seed["id"].as_str().unwrap()), &app.owner, json!({}))
            .await
            .expect(201);
        app.engine.drain().await.unwrap();
        let runs = runs_of(looping).await;
        let limit = flowline_core::crm::MAX_EVENT_DEPTH as usize;
        assert_eq!(runs.len(), limit + 1);
        let mut statuses: HashMap<String, usize> = HashMap::new();
        for r in &runs {
            *statuses.entry(r["status"].as_str().unwrap().to_owned()).or_default() += 1;
        }
        assert_eq!(statuses["completed"], limit);
        assert_eq!(statuses["failed"], 1);
        let stopped = &runs[0];
        assert_eq!(stopped["status"], "failed");
        assert_eq!(stopped["depth"], limit as i64 + 1);
        let message = stopped["error"]["message"].as_str().unwrap();
        assert!(message.contains("limit"), "{message}");
        assert!(stopped["error"]["suggestion"].as_str().unwrap().contains("triggers itself"));
        assert_eq!(detail(&app, &looper).await["tags"].as_array().unwrap().len(), limit + 1);
    }
}

api_test! {
    async fn another_workspaces_crm_ids_answer_like_missing_ones_and_bad_input_writes_nothing(app: TestApp) {
        let ada = contact(&app, "Ada", "ada@example.com").await;
        let gone = contact(&app, "Gone", "gone@example.com").await;
        let backup = app.delete(&format!("/api/contacts/{gone}"), &app.owner).await.expect(200);
        let backup = backup["id"].as_str().unwrap().to_owned();
        let tag = app.post("/api/tags", &app.owner, json!({"name": "VIP"})).await.expect(201)["id"].as_str().unwrap().to_owned();
        let agent = app.post("/api/agents", &app.owner, json!({"name": "Ann"})).await.expect(201)["id"].as_str().unwrap().to_owned();
        let campaign = app.post("/api/campaigns", &app.owner, json!({"name": "Spring"})).await.expect(201)["id"].as_str().unwrap().to_owned();
        let board = app.post("/api/boards", &app.owner, json!({"name": "Sales", "columns": ["New"]})).await.expect(201);
        let board = board["id"].as_str().unwrap().to_owned();
        let (_, other) = app.other_workspace().await;
        let missing = "0190f7a0-0000-7000-8000-00000000beef";
        let rename = json!({"name": "hijacked"});
        let cases: Vec<(reqwest::Method, String, Option<Value>)> = vec![
            (reqwest::Method::GET, "/api/contacts/{contact}".into(), None),
            (reqwest::Method::PUT, "/api/contacts/{contact}".into(), Some(rename.clone())),
            (reqwest::Method::DELETE, "/api/contacts/{contact}".into(), None),
            (reqwest::Method::GET, "/api/contacts/{contact}/executions".into(), None),
            (reqwest::Method::PUT, "/api/contacts/{contact}/tags/{tag}".into(), Some(json!({}))),
            (reqwest::Method::GET, "/api/tags/{tag}".into(), None),
            (reqwest::Method::PUT, "/api/tags/{tag}".into(), Some(rename.clone())),
            (reqwest::Method::DELETE, "/api/tags/{tag}".into(), None),
            (reqwest::Method::GET, "/api/agents/{agent}".into(), None),
            (reqwest::Method::PUT, "/api/agents/{agent}".into(), Some(rename.clone())),
            (reqwest::Method::DELETE, "/api/agents/{agent}".into(), None),
            (reqwest::Method::GET, "/api/campaigns/{campaign}".into(), None),
            (reqwest::Method::PUT, "/api/campaigns/{campaign}".into(), Some(rename.clone())),
            (reqwest::Method::DELETE, "/api/campaigns/{campaign}".into(), None),
            (reqwest::Method::GET, "/api/campaigns/{campaign}/subscriptions".into(), None),
            (reqwest::Method::GET, "/api/boards/{board}".into(), None),
            (reqwest::Method::PUT, "/api/boards/{board}".into(), Some(rename.clone())),
            (reqwest::Method::DELETE, "/api/boards/{board}".into(), None),
            (reqwest::Method::GET, "/api/boards/{board}/cards".into(), None),
            (reqwest::Method::GET, "/api/boards/{board}/history".into(), None),
            (reqwest::Method::GET, "/api/contact-backups/{backup}".into(), None),
            (reqwest::Method::POST, "/api/contact-backups/{backup}/restore".into(), Some(json!({}))),
        ];
        let fill = |path: &str, id: Option<&str>| {
            let pick = |real: &str| id.unwrap_or(real).to_owned();
            path.replace("{contact}", &pick(&ada))
                .replace("{tag}", &pick(&tag))
                .replace("{agent}", &pick(&agent))
                .replace("{campaign}", &pick(&campaign))
                .replace("{board}", &pick(&board))
                .replace("{backup}", &pick(&backup))
        };
        for (method, path, body) in cases {
            let foreign = app.call(method.clone(), &fill(&path, None), &other, body.clone()).await;
            let absent = app.call(method.clone(), &fill(&path, Some(missing)), &other, body).await;
            assert_eq!(foreign.status.as_u16(), 404, "{method} {path}: {}", foreign.body);
            assert_eq!(foreign.body, absent.body, "{method} {path} differs from a missing id");
        }
        // Moving another workspace's contact onto one's own board, or naming another
        // workspace's records in configs and triggers, finds nothing.
        let own_board = app.post("/api/boards", &other, json!({"name": "Mine", "columns": ["A"]})).await.expect(201);
        app.post(&format!("/api/boards/{}/cards", own_board["id"].as_str().unwrap()), &other, json!({"contactId": ada}))
            .await
            .problem(404, "not_found");
        let flow = app.post("/api/flows", &other, json!({"name": "x", "graph": {"nodes": [node("start")], "edges": []}})).await.expect(201);
        let flow = flow["id"].as_str().unwrap();
        let refused = app
            .post(&format!("/api/actions/flows/{flow}"), &other, json!({"nodeId": "start", "actionType": "subscribe_campaign", "actionConfig": {"campaignId": campaign}}))
            .await
            .invalid_fields();
        assert_eq!(refused, vec!["actionConfig.campaignId"]);
        let refused = app
            .put(&format!("/api/flows/{flow}"), &other, json!({"triggers": [{"event": "tag.added", "tagId": tag}]}))
            .await
            .invalid_fields();
        assert_eq!(refused, vec!["triggers[0].tagId"]);
        let leaked = app.get("/api/contacts", &other).await.expect(200).to_string()
            + &app.get("/api/tags", &other).await.expect(200).to_string()
            + &app.get("/api/agents", &other).await.expect(200).to_string()
            + &app.get("/api/contact-backups", &other).await.expect(200).to_string();
        for id in [&ada, &tag, &agent, &backup] {
            assert!(!leaked.contains(id.as_str()), "{id} leaked");
        }

        // Bad input: 4xx problem+json, nothing written.
        let before = app.audit_count().await;
        let invalid: Vec<(&str, Value, Vec<&str>)> = vec![
            ("/api/contacts", json!({"name": "a\u{0000}b"}), vec!["name"]),
            ("/api/contacts", json!({"phone": "1".repeat(51), "company": "x".repeat(201)}), vec!["phone", "company"]),
            ("/api/contacts", json!({"email": "a@b@c", "attributes": "plan"}), vec!["email", "attributes"]),
            ("/api/contacts", json!({"attributes": {"big": "x".repeat(70_000)}}), vec!["attributes"]),
            ("/api/tags", json!({"name": "x".repeat(101), "color": "#12345"}), vec!["name", "color"]),
            ("/api/agents", json!({"name": " ", "capacity": 1_000_001}), vec!["name", "capacity"]),
            ("/api/boards", json!({"name": "b", "columns": vec!["c"; 51]}), vec!["columns"]),
        ];
        for (path, body, fields) in invalid {
            assert_eq!(app.post(path, &app.owner, body.clone()).await.invalid_fields(), fields, "{path} {body}");
        }
        for (path, body) in [
            ("/api/contacts", json!({"nickname": "x"})),
            ("/api/agents", json!({"name": "a", "capacity": "ten"})),
            ("/api/boards", json!({"name": "b", "columns": "New"})),
            ("/api/campaigns", json!({"name": 7})),
            (&format!("/api/boards/{board}/cards") as &str, json!({"contactId": "not-an-id"})),
        ] {
            app.post(path, &app.owner, body).await.problem(422, "validation_failed");
        }
        app.get("/api/contacts/not-an-id", &app.owner).await.problem(400, "invalid_path");
        app.get("/api/contacts?agentId=x", &app.owner).await.problem(400, "invalid_query");
        app.get("/api/contacts?limit=500", &app.owner).await.problem(400, "invalid_limit");
        app.put(&format!("/api/contacts/{ada}/tags/{missing}"), &app.owner, json!({})).await.problem(404, "not_found");
        app.post(&format!("/api/boards/{board}/cards"), &app.owner, json!({"contactId": ada, "columnId": missing}))
            .await
            .problem(404, "not_found");
        assert_eq!(app.audit_count().await, before, "nothing was written");
    }
}

api_test! {
    async fn a_stale_worker_cannot_open_or_end_an_internal_step_whose_lease_was_taken(app: TestApp) {
        use flowline_store::execution::{ClaimParams, FinishOutcome, FinishStep, Next, StepResult};
        let ada = contact(&app, "Ada", "ada@example.com").await;
        let flow = app
            .post("/api/flows", &app.owner, json!({"name": "stale", "graph": {"nodes": [node("start")], "edges": []}}))
            .await
            .expect(201);
        let flow = flow["id"].as_str().unwrap().to_owned();
        app.post(&format!("/api/actions/flows/{flow}"), &app.owner,
            json!({"nodeId": "start", "actionType": "add_tag", "actionConfig": {"tagName": "stale"}, "retry": {"maxAttempts": 3}}))
            .await
            .expect(201);
        app.post(&format!("/api/flows/{flow}/publish"), &app.owner, json!({})).await.expect(200);
        let run = app
            .post(&format!("/api/flows/{flow}/executions"), &app.owner, json!({"contactId": ada}))
            .await
            .expect(202);
        let run = run["id"].as_str().unwrap().to_owned();
        // Worker A claims the step and stalls past its lease; the rescuer gives it back to the
        // queue and worker B (the engine) runs it.
        let claimed = app
            .store
            .claim_steps(&ClaimParams {
                queue: flowline_core::status::Queue::Basic,
                limit: 10,
                owner: "worker-a".into(),
                lease: std::time::Duration::ZERO,
                per_workspace_limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        let stale = &claimed[0];
        assert_eq!(app.store.rescue_expired(100).await.unwrap(), 1);
        app.engine.drain().await.unwrap();
        let done = app.get(&format!("/api/executions/{run}"), &app.owner).await.expect(200);
        assert_eq!(done["status"], "completed", "{done}");
        let outcomes: Vec<&str> = done["steps"][0]["attempts"].as_array().unwrap().iter()
            .map(|a| a["outcome"].as_str().unwrap()).collect();
        assert_eq!(outcomes, vec!["worker_lost", "completed"]);

        // A wakes: its token no longer opens the step's transaction ...
        let planner: std::sync::Arc<dyn flowline_store::crm::RunPlanner> = app.engine.clone();
        let begun = app
            .store
            .begin_step(app.workspace, stale.execution_id, stale.id, stale.lease_token, &planner)
            .await
            .unwrap();
        assert!(begun.is_none(), "a stale lease token opened the step's transaction");
        // ... nor ends the step, nor writes what it would have.
        let outcome = app
            .store
            .finish_step(FinishStep {
                workspace_id: app.workspace,
                execution_id: stale.execution_id,
                step_id: stale.id,
                lease_token: stale.lease_token,
                input: None,
                result: StepResult::Completed {
                    output: json!({"from": "worker-a"}),
                    variables: Vec::new(),
                    next: Next::Complete,
                },
                hand_on: None,
            })
            .await
            .unwrap();
        assert!(matches!(outcome, FinishOutcome::LeaseLost), "{outcome:?}");
        let after = app.get(&format!("/api/executions/{run}"), &app.owner).await.expect(200);
        assert_eq!(after["steps"], done["steps"]);
        let ada = detail(&app, &ada).await;
        let tags: Vec<&str> = ada["tags"].as_array().unwrap().iter()
            .map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(tags, vec!["stale"]);
    }
}
