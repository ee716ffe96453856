//! Runs started by inbound webhooks and by cron schedules.

use chrono::Utc;
use flowline_core::schedule::Schedule;
use flowline_engine::{Engine, EngineConfig};
use flowline_store::flow::{FlowUpdate, PlannedSchedule};
use flowline_store::page::PageRequest;
use flowline_store::tenancy::Actor;
use reqwest::Method;
use serde_json::json;

use crate::api_test;

async fn flow_setting_email(app: &crate::support::TestApp) -> String {
    let flow = app.flow(&app.owner).await;
    app.post(
        &format!("/api/actions/flows/{flow}"),
        &app.owner,
        json!({"nodeId": "start", "actionType": "set_variable",
               "actionConfig": {"name": "email", "type": "string", "value": "{{ trigger.email }}"}}),
    )
    .await
    .expect(201);
    flow
}

api_test! {
    async fn a_webhook_delivery_starts_one_run_however_often_it_is_replayed(app: TestApp) {
        let flow = flow_setting_email(&app).await;
        let created = app.post(&format!("/api/flows/{flow}/webhook"), &app.owner, json!({})).await.expect(201);
        let token = created["token"].as_str().unwrap().to_owned();
        assert_eq!(created["url"], format!("/hooks/{flow}"));
        let hook = format!("/hooks/{flow}");
        let body = br#"{"email": "ada@example.com"}"#.to_vec();
        let json_only = [("content-type", "application/json")];
        app.raw(Method::POST, &hook, &json_only, Some(body.clone())).await.problem(401, "unauthorized");
        let wrong = flowline_core::token::ClearToken::generate();
        let with_wrong = [("content-type", "application/json"), ("x-flowline-token", wrong.expose())];
        app.raw(Method::POST, &hook, &with_wrong, Some(body.clone())).await.problem(401, "unauthorized");
        let headers = [("content-type", "application/json"), ("x-flowline-token", token.as_str()), ("webhook-id", "evt_1")];
        app.raw(Method::POST, &hook, &headers, Some(body.clone())).await.problem(409, "conflict");
        app.post(&format!("/api/flows/{flow}/publish"), &app.owner, json!({})).await.expect(200);

        let first = app.raw(Method::POST, &hook, &headers, Some(body.clone())).await.expect(202);
        assert_eq!(first["duplicate"], false);
        let replay = app.raw(Method::POST, &hook, &headers, Some(body.clone())).await.expect(200);
        assert_eq!(replay["duplicate"], true);
        assert_eq!(replay["id"], first["id"]);
        let other = [("content-type", "application/json"), ("x-flowline-token", token.as_str()), ("webhook-id", "evt_2")];
        let second = app.raw(Method::POST, &hook, &other, Some(br#"{"email": "bob@example.com"}"#.to_vec())).await.expect(202);
        assert_ne!(second["id"], first["id"]);
        let by_path = app
            .raw(Method::POST, &format!("{hook}/{token}"), &json_only, Some(br#"{"email": "cy@example.com"}"#.to_vec()))
            .await
            .expect(202);
        app.raw(Method::POST, &hook, &[("x-flowline-token", token.as_str()), ("content-type", "application/json")], Some(b"{oops".to_vec()))
            .await
            .problem(400, "malformed_json");
        // Eight copies of one delivery at once (a sender retrying on a timeout): one run.
        let burst = [("content-type", "application/json"), ("x-flowline-token", token.as_str()), ("webhook-id", "evt_3")];
        let copies = futures_util::future::join_all(
            (0..8).map(|_| app.raw(Method::POST, &hook, &burst, Some(br#"{"email": "di@example.com"}"#.to_vec()))),
        )
        .await;
        let mut statuses: Vec<u16> = copies.iter().map(|r| r.status.as_u16()).collect();
        statuses.sort();
        assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 200, 202]);
        assert!(copies.iter().all(|r| r.body["id"] == copies[0].body["id"]));
        app.engine.drain().await.unwrap();
        let run = app.get(&format!("/api/executions/{}", first["id"].as_str().unwrap()), &app.owner).await.expect(200);
        assert_eq!(run["status"], "completed");
        assert_eq!(run["triggerKind"], "webhook");
        assert_eq!(run["variables"][0]["value"], "ada@example.com");
        let run = app.get(&format!("/api/executions/{}", by_path["id"].as_str().unwrap()), &app.owner).await.expect(200);
        assert_eq!(run["variables"][0]["value"], "cy@example.com");
        let runs = app.get(&format!("/api/flows/{flow}/executions"), &app.owner).await.expect(200);
        assert_eq!(runs["items"].as_array().unwrap().len(), 4, "four deliveries, four runs");

        // A removed token is refused; a rotated one replaces the old.
        let rotated = app.post(&format!("/api/flows/{flow}/webhook"), &app.owner, json!({})).await.expect(201);
        app.raw(Method::POST, &hook, &headers, Some(body.clone())).await.problem(401, "unauthorized");
        let fresh = [("content-type", "application/json"), ("x-flowline-token", rotated["token"].as_str().unwrap())];
        app.raw(Method::POST, &hook, &fresh, Some(body.clone())).await.expect(202);
        app.delete(&format!("/api/flows/{flow}/webhook"), &app.owner).await.expect(204);
        app.raw(Method::POST, &hook, &fresh, Some(body)).await.problem(401, "unauthorized");
        let flow_now = app.get(&format!("/api/flows/{flow}"), &app.owner).await.expect(200);
        assert_eq!(flow_now["webhook"], false);
    }
}

api_test! {
    async fn each_schedule_slot_starts_one_run_even_with_two_schedulers(app: TestApp) {
        let flow = flow_setting_email(&app).await;
        let fields = app
            .put(&format!("/api/flows/{flow}"), &app.owner, json!({"schedule": {"cron": "every day", "timezone": "Mars/Base"}}))
            .await
            .invalid_fields();
        assert_eq!(fields, ["schedule.cron", "schedule.timezone"]);
        let scheduled = app
            .put(&format!("/api/flows/{flow}"), &app.owner, json!({"schedule": {"cron": "0 9 * * MON-FRI", "timezone": "Europe/Paris"}}))
            .await
            .expect(200);
        let next: chrono::DateTime<Utc> = scheduled["nextFireAt"].as_str().unwrap().parse().unwrap();
        assert!(next > Utc::now());
        app.post(&format!("/api/flows/{flow}/publish"), &app.owner, json!({})).await.expect(200);

        // The slot comes (as if the clock had reached it) and two processes' schedulers race for it.
        let flow_id = flow.parse().unwrap();
        let slot = chrono::SubsecRound::trunc_subsecs(Utc::now() - chrono::Duration::minutes(1), 0);
        let planned = PlannedSchedule {
            schedule: Schedule { cron: "0 9 * * MON-FRI".into(), timezone: "Europe/Paris".into() },
            next_fire_at: Some(slot),
        };
        let update = FlowUpdate { schedule: Some(Some(planned)), ..Default::default() };
        app.store.update_flow(app.workspace, &Actor::system("test"), flow_id, update).await.unwrap();
        let (a, b) = (
            Engine::new(app.store.clone(), EngineConfig::default()),
            Engine::new(app.store.clone(), EngineConfig::default()),
        );
        let (one, two) = tokio::join!(a.run_due_schedules(), b.run_due_schedules());
        assert_eq!(one.unwrap() + two.unwrap(), 1, "the slot started one run");
        assert_eq!(a.run_due_schedules().await.unwrap(), 0, "and the schedule moved on");
        let runs = app.store.list_executions(app.workspace, flow_id, PageRequest::default()).await.unwrap();
        assert_eq!(runs.items.len(), 1);
        let run = &runs.items[0];
        assert_eq!(run.trigger_kind, flowline_core::status::TriggerKind::Schedule);
        let at: chrono::DateTime<Utc> = run.trigger["scheduledAt"].as_str().unwrap().parse().unwrap();
        assert_eq!(at, slot);
        let moved = app.get(&format!("/api/flows/{flow}"), &app.owner).await.expect(200);
        let next: chrono::DateTime<Utc> = moved["nextFireAt"].as_str().unwrap().parse().unwrap();
        assert!(next > Utc::now(), "the next slot is in the future");
        let removed = app.put(&format!("/api/flows/{flow}"), &app.owner, json!({"schedule": null})).await.expect(200);
        assert_eq!(removed["schedule"], serde_json::Value::Null);
        assert_eq!(removed["nextFireAt"], serde_json::Value::Null);
    }
}
