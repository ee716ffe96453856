//! `/metrics`, read with an independent parser of the Prometheus text format.

use std::sync::Arc;

use flowline_api::AppState;
use flowline_engine::{Engine, EngineConfig};
use prometheus_parse::{Scrape, Value as Sample};
use serde_json::json;

use crate::api_test;
use crate::fake::{FakeHttp, json_answer};
use crate::support::TestApp;

async fn scrape(base: &str, token: Option<&str>) -> (u16, String) {
    let mut request = reqwest::Client::new().get(format!("{base}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    if status == 200 {
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
    }
    (status, response.text().await.unwrap())
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid exposition format")
}

/// The value of the sample `name` whose labels include all of `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match &s.value {
            Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => *v,
            Sample::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            Sample::Summary(_) => f64::NAN,
        })
}

async fn set_flow(app: &TestApp) -> String {
    let flow = app
        .post("/api/flows", &app.owner, json!({"name": "m", "graph": {"nodes": [{"id": "n", "position": {"x": 0, "y": 0}}], "edges": []}}))
        .await
        .expect(201);
    let flow = flow["id"].as_str().unwrap().to_owned();
    app.post(&format!("/api/actions/flows/{flow}"), &app.owner,
        json!({"nodeId": "n", "actionType": "set_variable", "actionConfig": {"name": "x", "type": "number", "value": 1}}))
        .await
        .expect(201);
    app.post(&format!("/api/flows/{flow}/publish"), &app.owner, json!({}))
        .await
        .expect(200);
    flow
}

api_test! {
    async fn metrics_count_steps_requests_queues_and_the_sandbox(app: TestApp) {
        let flow = set_flow(&app).await;
        for _ in 0..3 {
            app.post(&format!("/api/flows/{flow}/executions"), &app.owner, json!({})).await.expect(202);
        }
        app.engine.drain().await.unwrap();
        let peer = FakeHttp::start().await;
        peer.answer([json_answer(200, json!({}))]);
        let api = app.post("/api/flows", &app.owner, json!({"name": "a", "graph": {"nodes": [{"id": "n", "position": {"x": 0, "y": 0}}], "edges": []}})).await.expect(201);
        let api = api["id"].as_str().unwrap().to_owned();
        app.post(&format!("/api/actions/flows/{api}"), &app.owner,
            json!({"nodeId": "n", "actionType": "run_api_request", "actionConfig": {"url": format!("{}/x", peer.url)}})).await.expect(201);
        app.post(&format!("/api/flows/{api}/publish"), &app.owner, json!({})).await.expect(200);
        app.post(&format!("/api/flows/{api}/executions"), &app.owner, json!({})).await.expect(202);
        app.engine.drain().await.unwrap();
        // One run left waiting in its queue.
        app.post(&format!("/api/flows/{flow}/executions"), &app.owner, json!({})).await.expect(202);

        let (status, text) = scrape(&app.base, None).await;
        assert_eq!(status, 200);
        let m = parse(&text);
        assert_eq!(value(&m, "flowline_steps_started_total", &[("action_type", "set_variable")]), Some(3.0));
        assert_eq!(value(&m, "flowline_steps_finished_total", &[("action_type", "set_variable"), ("status", "completed")]), Some(3.0));
        assert_eq!(value(&m, "flowline_steps_finished_total", &[("action_type", "run_api_request"), ("status", "completed")]), Some(1.0));
        assert_eq!(value(&m, "flowline_step_duration_seconds", &[("action_type", "set_variable")]), Some(3.0));
        assert_eq!(value(&m, "flowline_outbound_requests_total", &[("kind", "run_api_request"), ("outcome", "2xx")]), Some(1.0));
        assert_eq!(value(&m, "flowline_queue_depth", &[("queue", "basic")]), Some(1.0));
        assert_eq!(value(&m, "flowline_queue_depth", &[("queue", "integration")]), Some(0.0));
        assert!(value(&m, "flowline_queue_oldest_due_age_seconds", &[("queue", "basic")]).unwrap() >= 0.0);
        assert_eq!(value(&m, "flowline_sandbox_processes_total", &[("event", "started")]), Some(0.0));
        assert_eq!(value(&m, "flowline_sandbox_idle_processes", &[]), Some(0.0));
        let http: Vec<&str> = text.lines().filter(|l| l.starts_with("flowline_http_requests_total")).collect();
        assert_eq!(value(&m, "flowline_http_requests_total", &[("method", "POST"), ("route", "/api/flows/:flowId/executions"), ("status", "202")]), Some(5.0), "{http:#?}");
        assert_eq!(value(&m, "flowline_http_requests_total", &[("route", "/api/flows"), ("status", "201")]), Some(2.0));
        assert!(value(&m, "flowline_http_request_duration_seconds", &[("route", "/api/flows")]).unwrap() >= 2.0);
        // The waiting run runs: its queue empties.
        app.engine.drain().await.unwrap();
        let (_, text) = scrape(&app.base, None).await;
        let m = parse(&text);
        assert_eq!(value(&m, "flowline_queue_depth", &[("queue", "basic")]), Some(0.0));
        assert_eq!(value(&m, "flowline_steps_started_total", &[("action_type", "set_variable")]), Some(4.0));

        // With a token configured, /metrics asks for it.
        let engine = Engine::new(app.store.clone(), EngineConfig { metrics_token: Some("scrape-me".into()), ..Default::default() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(flowline_api::serve(listener, AppState::new(Arc::clone(&engine)), std::future::pending()));
        assert_eq!(scrape(&base, None).await.0, 401);
        assert_eq!(scrape(&base, Some("wrong")).await.0, 401);
        let (status, text) = scrape(&base, Some("scrape-me")).await;
        assert_eq!(status, 200);
        parse(&text);
    }
}
