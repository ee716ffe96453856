//! Secrets and the actions that reach the outside world, against real servers on 127.0.0.1.

use std::sync::Arc;

use base64::Engine as _;
use flowline_core::role::Role;
use flowline_engine::{Engine, EngineConfig};
use serde_json::{Value, json};

use crate::api_test;
use crate::fake::{FakeHttp, FakeSmtp, json_answer};
use crate::support::TestApp;

const SECRET: &str = "sk_live_7hQ2pL9xZ4vB8nM3";

async fn put_secret(app: &TestApp, name: &str, value: &str) {
    app.put(
        &format!("/api/secrets/{name}"),
        &app.owner,
        json!({"value": value}),
    )
    .await
    .expect(201);
}

/// Publishes a one-action flow and runs it for `contact` on `engine`, returning the run.
async fn run_on(
    app: &TestApp,
    engine: &Arc<Engine>,
    action_type: &str,
    config: Value,
    retry: Value,
    contact: Option<&str>,
) -> Value {
    let flow = app
        .post("/api/flows", &app.owner, json!({"name": "out", "graph": {"nodes": [{"id": "n", "position": {"x": 0, "y": 0}}], "edges": []}}))
        .await
        .expect(201);
    let flow = flow["id"].as_str().unwrap().to_owned();
    app.post(
        &format!("/api/actions/flows/{flow}"),
        &app.owner,
        json!({"nodeId": "n", "actionType": action_type, "actionConfig": config, "retry": retry}),
    )
    .await
    .expect(201);
    app.post(&format!("/api/flows/{flow}/publish"), &app.owner, json!({}))
        .await
        .expect(200);
    let mut body = json!({"input": {"plan": "pro", "evil": "x@example.com\r\nBcc: all@evil.test"}});
    if let Some(c) = contact {
        body["contactId"] = json!(c);
    }
    let run = app
        .post(&format!("/api/flows/{flow}/executions"), &app.owner, body)
        .await
        .expect(202);
    engine.drain().await.unwrap();
    app.get(
        &format!("/api/executions/{}", run["id"].as_str().unwrap()),
        &app.owner,
    )
    .await
    .expect(200)
}

async fn run(app: &TestApp, action_type: &str, config: Value, contact: Option<&str>) -> Value {
    run_on(
        app,
        &app.engine,
        action_type,
        config,
        json!({"maxAttempts": 1}),
        contact,
    )
    .await
}

async fn ada(app: &TestApp) -> String {
    let c = app
        .post(
            "/api/contacts",
            &app.owner,
            json!({"name": "Ada", "email": "ada@example.com", "company": "Acme"}),
        )
        .await
        .expect(201);
    c["id"].as_str().unwrap().to_owned()
}

/// Every form a secret could leak in.
fn leaks(text: &str, secret: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    text.contains(secret) || text.contains(b64.trim_end_matches('='))
}

api_test! {
    async fn secrets_are_sealed_listed_by_name_only_and_admins_write_them(app: TestApp) {
        let reply = app.put("/api/secrets/crm_token", &app.owner, json!({"value": SECRET})).await;
        assert_eq!(reply.status, 201);
        assert!(!reply.body.to_string().contains(SECRET));
        assert_eq!(reply.body["name"], "crm_token");
        app.put("/api/secrets/crm_token", &app.owner, json!({"value": "another-value-1"})).await.expect(200);
        let editor = app.token(Role::Editor).await;
        let viewer = app.token(Role::Viewer).await;
        app.put("/api/secrets/x_key", &editor, json!({"value": "v"})).await.problem(403, "forbidden");
        app.get("/api/secrets", &viewer).await.problem(403, "forbidden");
        let list = app.get("/api/secrets", &editor).await.expect(200);
        assert_eq!(list["items"][0]["name"], "crm_token");
        assert!(list["items"][0].get("value").is_none());
        assert!(!list.to_string().contains("another-value-1"));
        app.put("/api/secrets/1bad", &app.owner, json!({"value": "v"})).await.problem(422, "validation_failed");
        app.put("/api/secrets/ok", &app.owner, json!({"value": ""})).await.problem(422, "validation_failed");
        app.put("/api/secrets/ok", &app.owner, json!({"value": "v", "extra": 1})).await.problem(422, "validation_failed");
        // Stored sealed: the value is not in the row.
        let sealed = app.store.sealed_secrets(app.workspace, &["crm_token".to_owned()]).await.unwrap();
        assert!(!String::from_utf8_lossy(&sealed[0].ciphertext).contains("another-value-1"));
        assert_eq!(sealed[0].nonce.len(), 24);
        // Audited by name, never by value.
        let audit = app.get("/api/audit?entityType=secret", &app.owner).await.expect(200);
        assert_eq!(audit["items"].as_array().unwrap().len(), 2);
        assert!(!audit.to_string().contains(SECRET) && !audit.to_string().contains("another-value-1"));
        app.delete("/api/secrets/crm_token", &app.owner).await.expect(204);
        app.delete("/api/secrets/crm_token", &app.owner).await.problem(404, "not_found");
        // A step naming a missing secret fails `validation`, naming it.
        let r = run(&app, "run_api_request", json!({"url": "http://127.0.0.1:9/", "authentication": {"type": "bearer", "token": "{{ secrets.crm_token }}"}}), None).await;
        assert_eq!(r["steps"][0]["error"]["category"], "validation");
        assert!(r["steps"][0]["error"]["message"].as_str().unwrap().contains("crm_token"));
    }
}

api_test! {
    async fn run_api_request_sends_auth_mapping_and_idempotency_and_maps_the_response(app: TestApp) {
        put_secret(&app, "api_token", SECRET).await;
        let contact = ada(&app).await;
        let peer = FakeHttp::start().await;
        peer.answer([json_answer(201, json!({"data": {"id": "cus_42", "score": "17"}}))]);
        let config = json!({
            "url": format!("{}/v1/customers", peer.url),
            "method": "POST",
            "headers": {"X-Plan": "{{ trigger.plan }}"},
            "query": {"source": "flowline", "who": "{{ contact.name }}"},
            "authentication": {"type": "bearer", "token": "{{ secrets.api_token }}"},
            "fieldMapping": {"email": "contact.email", "company.name": "contact.company", "plan": "{{ trigger.plan | upper }}"},
            "responseMapping": [
                {"path": "body.data.id", "variable": "customer_id"},
                {"path": "body.data.score", "variable": "score", "type": "number"},
                {"path": "status", "variable": "status"}
            ]
        });
        let r = run(&app, "run_api_request", config, Some(&contact)).await;
        assert_eq!(r["status"], "completed", "{r}");
        let got = &peer.received()[0];
        assert_eq!(got.method, "POST");
        assert_eq!(got.path, "/v1/customers");
        assert_eq!(got.query, "source=flowline&who=Ada");
        assert_eq!(got.header("authorization").unwrap(), format!("Bearer {SECRET}"));
        assert_eq!(got.header("x-plan").unwrap(), "pro");
        assert_eq!(got.header("idempotency-key").unwrap(), r["steps"][0]["id"].as_str().unwrap());
        assert_eq!(got.json(), json!({"email": "ada@example.com", "company": {"name": "Acme"}, "plan": "PRO"}));
        let step = &r["steps"][0];
        assert_eq!(step["output"]["status"], 201);
        assert_eq!(step["output"]["body"]["data"]["id"], "cus_42");
        assert!(!step["input"].to_string().contains(SECRET), "{}", step["input"]);
        assert_eq!(step["input"]["authentication"], "bearer");
        let vars: Vec<(String, Value)> = r["variables"].as_array().unwrap().iter()
            .map(|v| (v["name"].as_str().unwrap().to_owned(), v["value"].clone())).collect();
        assert!(vars.contains(&("customer_id".into(), json!("cus_42"))));
        assert!(vars.contains(&("score".into(), json!(17))));
        assert!(vars.contains(&("status".into(), json!(201))));
        // Basic and api_key (query) authentication.
        peer.answer([json_answer(200, json!({}))]);
        run(&app, "run_api_request", json!({"url": format!("{}/b", peer.url), "authentication": {"type": "basic", "username": "u", "password": "{{ secrets.api_token }}"}}), None).await;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("u:{SECRET}"));
        assert_eq!(peer.received()[1].header("authorization").unwrap(), format!("Basic {basic}"));
        run(&app, "run_api_request", json!({"url": format!("{}/k", peer.url), "authentication": {"type": "api_key", "name": "key", "value": "{{ secrets.api_token }}", "in": "query"}}), None).await;
        assert_eq!(peer.received()[2].query, format!("key={SECRET}"));
    }
}

api_test! {
    async fn a_secret_echoed_back_by_a_failing_peer_is_found_nowhere(app: TestApp) {
        put_secret(&app, "api_token", SECRET).await;
        let peer = FakeHttp::start().await;
        let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET);
        peer.answer([(500, vec![("x-echo", SECRET.to_owned())], format!("boom: your token {SECRET} ({b64}) is wrong"))]);
        let r = run_on(&app, &app.engine, "run_api_request",
            json!({"url": format!("{}/x?t={{{{ secrets.api_token }}}}", peer.url), "headers": {"X-Token": "{{ secrets.api_token }}"}}),
            json!({"maxAttempts": 1}), None).await;
        assert_eq!(r["status"], "failed");
        let error = &r["steps"][0]["error"];
        assert_eq!(error["category"], "upstream");
        assert_eq!(error["retryable"], true);
        assert!(error["message"].as_str().unwrap().contains("[secret]"), "{error}");
        // The failed attempt shows what it sent, its secrets masked.
        let input = &r["steps"][0]["input"];
        assert_eq!(input["headers"]["X-Token"], "[secret]", "{input}");
        assert_eq!(input["method"], "GET", "{input}");
        assert!(input["url"].as_str().unwrap().starts_with(&format!("{}/x", peer.url)), "{input}");
        // Nowhere in the API's answers, nor in what is stored for the run, nor the audit log.
        assert!(!leaks(&r.to_string(), SECRET), "{r}");
        let stored = app.store.get_execution(app.workspace, r["id"].as_str().unwrap().parse().unwrap()).await.unwrap();
        assert!(!leaks(&serde_json::to_string(&stored).unwrap(), SECRET));
        let history = app.get(&format!("/api/actions/{}/executions", r["steps"][0]["actionId"].as_str().unwrap()), &app.owner).await.expect(200);
        assert!(!leaks(&history.to_string(), SECRET));
        let audit = app.get("/api/audit?limit=200", &app.owner).await.expect(200);
        assert!(!leaks(&audit.to_string(), SECRET));
        // The peer did receive it: it was used.
        assert_eq!(peer.received()[0].header("x-token").unwrap(), SECRET);
    }
}

api_test! {
    async fn statuses_sort_into_categories_and_retry_after_is_honoured(app: TestApp) {
        let peer = FakeHttp::start().await;
        let url = format!("{}/x", peer.url);
        for (status, category, retryable) in [
            (401, "permission", false),
            (403, "permission", false),
            (404, "not_found", false),
            (422, "validation", false),
            (503, "upstream", true),
        ] {
            peer.answer([json_answer(status, json!({"error": "no"}))]);
            let r = run(&app, "run_api_request", json!({"url": url}), None).await;
            let error = &r["steps"][0]["error"];
            assert_eq!(error["category"], category, "{status}: {error}");
            assert_eq!(error["retryable"], retryable, "{status}");
        }
        // 429 waits as long as the peer asks before the next attempt.
        peer.answer([(429, vec![("retry-after", "120".into())], "slow down".into())]);
        let before = chrono::Utc::now();
        let r = run_on(&app, &app.engine, "run_api_request", json!({"url": url}), json!({"maxAttempts": 3, "initialDelayMs": 1}), None).await;
        let step = &r["steps"][0];
        assert_eq!(step["status"], "pending", "{step}");
        assert_eq!(step["attempts"][0]["error"]["category"], "rate_limited");
        let run_at: chrono::DateTime<chrono::Utc> = step["runAt"].as_str().unwrap().parse().unwrap();
        assert!(run_at >= before + chrono::Duration::seconds(119), "{run_at} vs {before}");
        // Nothing listens on port 9 of 127.0.0.1: a network failure, retried.
        let r = run(&app, "run_api_request", json!({"url": "http://127.0.0.1:9/"}), None).await;
        assert_eq!(r["steps"][0]["error"]["category"], "network");
        assert_eq!(r["steps"][0]["error"]["retryable"], true);
        // A response over the cap is cut, and says so.
        peer.answer([(200, vec![], "x".repeat(2 * 1024 * 1024))]);
        let r = run(&app, "run_api_request", json!({"url": url}), None).await;
        assert_eq!(r["steps"][0]["output"]["truncated"], true);
    }
}

/// A TCP listener that counts the connections it accepts: it must see none.
struct Untouchable {
    port: u16,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl Untouchable {
    async fn bind(ip: &str) -> Self {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while listener.accept().await.is_ok() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        Self { port, accepted }
    }

    fn touched(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

api_test! {
    async fn the_ssrf_guard_refuses_loopback_forms_names_redirects_and_credentials(app: TestApp) {
        // Without the allowlist, every loopback form and a name that resolves to loopback are
        // refused inside the connector: the listener behind them sees no connection. (Private,
        // shared, link-local and metadata ranges are refused at the same decision; those are
        // checked without any connection in the engine's own tests.)
        let guarded = Engine::new(app.store.clone(), EngineConfig { secret_key: app.config.secret_key.clone(), ..Default::default() });
        let target = Untouchable::bind("127.0.0.1").await;
        let port = target.port;
        for url in [
            format!("http://127.0.0.1:{port}/"),
            format!("http://2130706433:{port}/"),
            format!("http://0x7f000001:{port}/"),
            format!("http://0177.0.0.1:{port}/"),
            format!("http://127.1:{port}/"),
            format!("http://[::ffff:127.0.0.1]:{port}/"),
            format!("http://localhost:{port}/"),
        ] {
            let r = run_on(&app, &guarded, "run_api_request", json!({"url": url}), json!({"maxAttempts": 1}), None).await;
            let error = &r["steps"][0]["error"];
            assert_eq!(error["category"], "permission", "{url}: {error}");
            assert!(error["suggestion"].as_str().unwrap().contains("outbound_allow"));
        }
        assert_eq!(target.touched(), 0, "no connection reached the listener");

        // An allowed peer that redirects to a blocked address: refused before the second
        // connection. Here only 127.0.0.1 is open; 127.0.0.2 is not.
        let mut narrow = app.config.clone();
        narrow.outbound.allow = vec!["127.0.0.1/32".parse().unwrap()];
        let narrow = Engine::new(app.store.clone(), narrow);
        let blocked = Untouchable::bind("127.0.0.2").await;
        let peer = FakeHttp::start().await;
        peer.answer([(302, vec![("location", format!("http://127.0.0.2:{}/steal", blocked.port))], String::new())]);
        let r = run_on(&app, &narrow, "run_api_request", json!({"url": format!("{}/go", peer.url)}), json!({"maxAttempts": 1}), None).await;
        assert_eq!(r["steps"][0]["error"]["category"], "permission", "{r}");
        assert_eq!(blocked.touched(), 0);

        // Redirects within what is allowed are followed; credentials do not cross origins.
        put_secret(&app, "api_token", SECRET).await;
        let other = FakeHttp::start().await;
        peer.answer([(307, vec![("location", "/same".into())], String::new())]);
        peer.answer([(307, vec![("location", format!("{}/elsewhere", other.url))], String::new())]);
        other.answer([json_answer(200, json!({"here": true}))]);
        let r = run(&app, "run_api_request", json!({"url": format!("{}/go", peer.url), "method": "POST", "body": {"a": 1},
            "headers": {"X-Api-Token": "{{ secrets.api_token }}", "X-Plain": "kept"},
            "authentication": {"type": "bearer", "token": "{{ secrets.api_token }}"}}), None).await;
        assert_eq!(r["steps"][0]["output"]["body"], json!({"here": true}), "{r}");
        let same = peer.received().into_iter().find(|g| g.path == "/same").unwrap();
        assert_eq!(same.header("authorization").unwrap(), format!("Bearer {SECRET}"));
        let crossed = &other.received()[0];
        assert_eq!(crossed.path, "/elsewhere");
        assert!(crossed.header("authorization").is_none(), "Authorization was dropped");
        assert!(crossed.header("x-api-token").is_none(), "a header carrying a secret was dropped");
        assert_eq!(crossed.header("x-plain").unwrap(), "kept");
        assert_eq!(crossed.json(), json!({"a": 1}), "307 keeps the method and body");

        // Credentials in the URL, and schemes other than http(s), are refused.
        let r = run(&app, "run_api_request", json!({"url": format!("http://user:pw@127.0.0.1:{port}/")}), None).await;
        assert_eq!(r["steps"][0]["error"]["category"], "validation");
        let flow = app.flow(&app.owner).await;
        let refused = app
            .post(&format!("/api/actions/flows/{flow}"), &app.owner,
                json!({"nodeId": "start", "actionType": "run_api_request", "actionConfig": {"url": "ftp://example.com/"}}))
            .await
            .invalid_fields();
        assert_eq!(refused, vec!["actionConfig.url"]);
        let r = run(&app, "run_api_request", json!({"url": "{{ 'file' }}:///etc/passwd"}), None).await;
        assert_eq!(r["steps"][0]["error"]["category"], "validation", "{r}");
        let r = run(&app, "send_webhook", json!({"url": "{{ 'gopher' }}://127.0.0.1/"}), None).await;
        assert_eq!(r["steps"][0]["error"]["category"], "validation", "{r}");
        assert_eq!(target.touched(), 0);
    }
}

/// Verifies a Standard Webhooks signature with Python's own hmac, not Flowline's code.
fn python_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let script = "import base64, hashlib, hmac, sys\n\
                  secret, msg_id, ts = sys.argv[1], sys.argv[2], sys.argv[3]\n\
                  body = sys.stdin.buffer.read()\n\
                  key = base64.b64decode(secret.split('_', 1)[1])\n\
                  mac = hmac.new(key, msg_id.encode() + b'.' + ts.encode() + b'.' + body, hashlib.sha256)\n\
                  print('v1,' + base64.b64encode(mac.digest()).decode())";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, secret, id, timestamp])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

api_test! {
    async fn webhooks_are_signed_per_standard_webhooks_and_retried_with_the_same_id(app: TestApp) {
        let whsec = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode("a-receiver-signing-key-32-bytes!"));
        put_secret(&app, "hook_secret", &whsec).await;
        let contact = ada(&app).await;
        let receiver = FakeHttp::start().await;
        receiver.answer([json_answer(503, json!({})), json_answer(200, json!({"ok": true}))]);
        let config = json!({"url": format!("{}/hooks/in", receiver.url), "signingSecret": "{{ secrets.hook_secret }}",
                            "eventType": "lead.qualified", "headers": {"X-Source": "flowline"}});
        let r = run_on(&app, &app.engine, "send_webhook", config, json!({"maxAttempts": 3, "initialDelayMs": 1, "jitter": false}), Some(&contact)).await;
        let id = r["id"].as_str().unwrap().to_owned();
        // The retry is due a millisecond later: run until the run ends.
        let mut run = r;
        for _ in 0..1000 {
            if run["status"] != "running" && run["status"] != "pending" {
                break;
            }
            app.engine.drain().await.unwrap();
            run = app.get(&format!("/api/executions/{id}"), &app.owner).await.expect(200);
        }
        assert_eq!(run["status"], "completed", "{run}");
        let got = receiver.received();
        assert_eq!(got.len(), 2);
        let ids: Vec<String> = got.iter().map(|g| g.header("webhook-id").unwrap()).collect();
        assert_eq!(ids[0], ids[1], "the same webhook-id on every attempt");
        for g in &got {
            let ts = g.header("webhook-timestamp").unwrap();
            let expected = python_signature(&whsec, &g.header("webhook-id").unwrap(), &ts, &g.body);
            assert_eq!(g.header("webhook-signature").unwrap(), expected);
            assert_eq!(g.header("x-source").unwrap(), "flowline");
            assert_eq!(g.header("content-type").unwrap(), "application/json");
        }
        let envelope = got[1].json();
        assert_eq!(envelope["type"], "lead.qualified");
        assert!(envelope["timestamp"].is_string());
        assert_eq!(envelope["data"]["contact"]["email"], "ada@example.com");
        assert!(envelope["data"]["execution"]["id"].is_string());
        assert!(!run.to_string().contains("a-receiver-signing-key"));
        // 410 Gone: failed for good.
        receiver.answer([json_answer(410, json!({}))]);
        let gone = run_on(&app, &app.engine, "send_webhook", json!({"url": format!("{}/gone", receiver.url), "payload": {"custom": "{{ contact.name }}"}}),
            json!({"maxAttempts": 5}), Some(&contact)).await;
        assert_eq!(gone["status"], "failed");
        assert_eq!(gone["steps"][0]["attempt"], 1);
        assert!(gone["steps"][0]["error"]["message"].as_str().unwrap().contains("410"));
        assert_eq!(receiver.received().last().unwrap().json(), json!({"custom": "Ada"}));
        // Webhooks retry on a longer schedule than other actions by default.
        assert!(app.config.webhook_retry.max_attempts > app.config.retry.max_attempts);
        assert!(app.config.webhook_retry.max_delay >= std::time::Duration::from_secs(3600));
    }
}

api_test! {
    async fn email_goes_out_over_smtp_sendgrid_and_mailgun_in_their_shapes(app: TestApp) {
        put_secret(&app, "smtp_pass", "smtp-password-9").await;
        put_secret(&app, "sg_key", "SG.sendgrid-key-123").await;
        put_secret(&app, "mg_key", "key-mailgun-456").await;
        let contact = ada(&app).await;
        let smtp = FakeSmtp::start().await;
        let sendgrid = FakeHttp::start().await;
        let mailgun = FakeHttp::start().await;
        let mut config = app.config.clone();
        config.email.sendgrid_url = sendgrid.url.clone();
        config.email.mailgun_url = mailgun.url.clone();
        let engine = Engine::new(app.store.clone(), config);

        let r = run_on(&app, &engine, "email_integration", json!({
            "provider": "smtp", "from": "Flowline Team <team@flowline.test>",
            "subject": "Welcome, {{ contact.name }} ✓", "text": "Hello {{ contact.name }}!\n.leading dot line", "html": "<p>Hello</p>",
            "smtp": {"host": "127.0.0.1", "port": smtp.port, "security": "none", "username": "mailer", "password": "{{ secrets.smtp_pass }}"}
        }), json!({"maxAttempts": 1}), Some(&contact)).await;
        assert_eq!(r["status"], "completed", "{r}");
        let mail = &smtp.mails()[0];
        assert_eq!(mail.from, "team@flowline.test");
        assert_eq!(mail.to, vec!["ada@example.com"]);
        let auth = base64::engine::general_purpose::STANDARD.decode(mail.auth.as_ref().unwrap()).unwrap();
        assert_eq!(auth, b"\0mailer\0smtp-password-9");
        assert!(mail.data.contains("To: ada@example.com"));
        assert!(mail.data.contains("From: Flowline Team <team@flowline.test>"));
        assert!(mail.data.contains("Subject: =?UTF-8?B?"));
        assert!(mail.data.contains("multipart/alternative"));
        let text_part = base64::engine::general_purpose::STANDARD.encode("Hello Ada!\n.leading dot line");
        assert!(mail.data.contains(&text_part), "{}", mail.data);
        assert_eq!(r["steps"][0]["output"]["messageId"], format!("<{}@flowline>", r["steps"][0]["id"].as_str().unwrap()));
        assert!(!r.to_string().contains("smtp-password-9"));

        sendgrid.answer([(202, vec![("x-message-id", "sg-msg-1".into())], String::new())]);
        let r = run_on(&app, &engine, "email_integration", json!({
            "provider": "sendgrid", "from": "team@flowline.test", "apiKey": "{{ secrets.sg_key }}",
            "templateId": "d-123", "customizations": {"first_name": "{{ contact.name }}", "plan": "{{ trigger.plan }}"}
        }), json!({"maxAttempts": 1}), Some(&contact)).await;
        assert_eq!(r["steps"][0]["output"]["messageId"], "sg-msg-1", "{r}");
        let got = &sendgrid.received()[0];
        assert_eq!(got.path, "/v3/mail/send");
        assert_eq!(got.header("authorization").unwrap(), "Bearer SG.sendgrid-key-123");
        let body = got.json();
        assert_eq!(body["personalizations"][0]["to"], json!([{"email": "ada@example.com"}]));
        assert_eq!(body["personalizations"][0]["dynamic_template_data"], json!({"first_name": "Ada", "plan": "pro"}));
        assert_eq!(body["from"], json!({"email": "team@flowline.test"}));
        assert_eq!(body["template_id"], "d-123");

        mailgun.answer([json_answer(200, json!({"id": "<mg-1@mg.example.com>", "message": "Queued. Thank you."}))]);
        let r = run_on(&app, &engine, "email_integration", json!({
            "provider": "mailgun", "from": "team@flowline.test", "to": "bob@example.com", "apiKey": "{{ secrets.mg_key }}",
            "domain": "mg.example.com", "subject": "Hi", "text": "Plain & simple"
        }), json!({"maxAttempts": 1}), Some(&contact)).await;
        assert_eq!(r["steps"][0]["output"]["messageId"], "<mg-1@mg.example.com>", "{r}");
        let got = &mailgun.received()[0];
        assert_eq!(got.path, "/v3/mg.example.com/messages");
        let basic = base64::engine::general_purpose::STANDARD.encode("api:key-mailgun-456");
        assert_eq!(got.header("authorization").unwrap(), format!("Basic {basic}"));
        assert_eq!(got.header("content-type").unwrap(), "application/x-www-form-urlencoded");
        let form = String::from_utf8(got.body.clone()).unwrap();
        for field in ["from=team%40flowline.test", "to=bob%40example.com", "subject=Hi", "text=Plain%20%26%20simple"] {
            assert!(form.contains(field), "{form}");
        }

        // Header injection in any address or the subject fails `validation`, nothing is sent.
        let sent = smtp.mails().len();
        // (Literal line breaks are refused when the action is saved; these come from data.)
        for (field, value) in [("subject", "Hi {{ trigger.evil }}"), ("to", "{{ trigger.evil }}"), ("from", "{{ trigger.evil }}")] {
            let mut config = json!({"provider": "smtp", "from": "team@flowline.test", "subject": "s", "text": "t",
                "smtp": {"host": "127.0.0.1", "port": smtp.port, "security": "none"}});
            config[field] = json!(value);
            let r = run_on(&app, &engine, "email_integration", config, json!({"maxAttempts": 1}), Some(&contact)).await;
            assert_eq!(r["steps"][0]["error"]["category"], "validation", "{field}: {r}");
        }
        assert_eq!(smtp.mails().len(), sent);
        // TLS against a server that does not speak it fails the handshake cleanly (`network`,
        // retried); STARTTLS against one that does not offer it is refused (`validation`).
        for (security, category) in [("tls", "network"), ("starttls", "validation")] {
            let r = run_on(&app, &engine, "email_integration", json!({"provider": "smtp", "from": "team@flowline.test", "subject": "s", "text": "t",
                "smtp": {"host": "localhost", "port": smtp.port, "security": security}}), json!({"maxAttempts": 1}), Some(&contact)).await;
            assert_eq!(r["steps"][0]["error"]["category"], category, "{security}: {r}");
        }
        assert_eq!(smtp.mails().len(), sent);
    }
}

api_test! {
    async fn contacts_are_upserted_into_hubspot_and_salesforce_in_their_api_shapes(app: TestApp) {
        put_secret(&app, "hubspot_token", "pat-na1-hubspot").await;
        put_secret(&app, "sf_token", "00Dxx!salesforce").await;
        let contact = ada(&app).await;
        let hubspot = FakeHttp::start().await;
        let salesforce = FakeHttp::start().await;
        let mut config = app.config.clone();
        config.hubspot_url = hubspot.url.clone();
        let engine = Engine::new(app.store.clone(), config);
        hubspot.answer([json_answer(200, json!({"status": "COMPLETE", "results": [{"id": "501", "new": true, "properties": {}}]}))]);
        let r = run_on(&app, &engine, "crm_integration", json!({
            "provider": "hubspot", "operation": "upsert_contact", "accessToken": "{{ secrets.hubspot_token }}",
            "fieldMapping": {"email": "contact.email", "firstname": "contact.name", "company": "contact.company", "plan": "{{ trigger.plan }}"},
            "outputVariable": "hubspot_id"
        }), json!({"maxAttempts": 1}), Some(&contact)).await;
        assert_eq!(r["status"], "completed", "{r}");
        assert_eq!(r["steps"][0]["output"]["recordId"], "501");
        assert_eq!(r["variables"][0]["value"], "501");
        let got = &hubspot.received()[0];
        assert_eq!(got.path, "/crm/v3/objects/contacts/batch/upsert");
        assert_eq!(got.header("authorization").unwrap(), "Bearer pat-na1-hubspot");
        assert_eq!(got.json(), json!({"inputs": [{"idProperty": "email", "id": "ada@example.com",
            "properties": {"email": "ada@example.com", "firstname": "Ada", "company": "Acme", "plan": "pro"}}]}));

        salesforce.answer([json_answer(201, json!({"id": "003XX0001", "success": true, "created": true, "errors": []}))]);
        let r = run_on(&app, &engine, "crm_integration", json!({
            "provider": "salesforce", "operation": "upsert_contact", "accessToken": "{{ secrets.sf_token }}",
            "instanceUrl": salesforce.url, "externalIdField": "Email",
            "fieldMapping": {"Email": "contact.email", "LastName": "contact.name", "Company__c": "contact.company"}
        }), json!({"maxAttempts": 1}), Some(&contact)).await;
        assert_eq!(r["status"], "completed", "{r}");
        assert_eq!(r["steps"][0]["output"]["recordId"], "003XX0001");
        assert_eq!(r["steps"][0]["output"]["created"], true);
        let got = &salesforce.received()[0];
        assert_eq!(got.method, "PATCH");
        assert_eq!(got.path, "/services/data/v60.0/sobjects/Contact/Email/ada%40example.com");
        assert_eq!(got.header("authorization").unwrap(), "Bearer 00Dxx!salesforce");
        assert_eq!(got.json(), json!({"LastName": "Ada", "Company__c": "Acme"}));
        // A rejected token is a permission failure that names no token.
        salesforce.answer([json_answer(401, json!([{"message": "Session expired or invalid 00Dxx!salesforce", "errorCode": "INVALID_SESSION_ID"}]))]);
        let r = run_on(&app, &engine, "crm_integration", json!({
            "provider": "salesforce", "operation": "upsert_contact", "accessToken": "{{ secrets.sf_token }}",
            "instanceUrl": salesforce.url, "externalIdField": "Email", "fieldMapping": {"Email": "contact.email"}
        }), json!({"maxAttempts": 1}), Some(&contact)).await;
        assert_eq!(r["steps"][0]["error"]["category"], "permission");
        assert!(!r.to_string().contains("00Dxx!salesforce"), "{r}");
    }
}

api_test! {
    async fn a_dry_run_shows_the_exact_request_with_secrets_masked_and_sends_nothing(app: TestApp) {
        put_secret(&app, "api_token", SECRET).await;
        let contact = ada(&app).await;
        let peer = FakeHttp::start().await;
        let smtp = FakeSmtp::start().await;
        let flow = app.flow(&app.owner).await;
        let add = |action_type: &str, config: Value| {
            let (app, flow) = (&app, flow.clone());
            let body = json!({"nodeId": "start", "actionType": action_type, "actionConfig": config});
            async move {
                app.post(&format!("/api/actions/flows/{flow}"), &app.owner, body).await.expect(201)["id"]
                    .as_str().unwrap().to_owned()
            }
        };
        let api = add("run_api_request", json!({"url": format!("{}/v1/leads", peer.url), "method": "POST",
            "authentication": {"type": "bearer", "token": "{{ secrets.api_token }}"},
            "fieldMapping": {"email": "contact.email", "plan": "{{ vars.plan }}"}})).await;
        let test = |action: String, body: Value| {
            let (app, flow) = (&app, flow.clone());
            async move { app.post(&format!("/api/actions/flows/{flow}/actions/{action}/test"), &app.owner, body).await }
        };
        let report = test(api.clone(), json!({"contactId": contact, "vars": {"plan": "pro"}, "dryRun": true})).await.expect(200);
        assert_eq!(report["ok"], true, "{report}");
        let request = &report["requests"][0];
        assert_eq!(request["method"], "POST");
        assert_eq!(request["url"], format!("{}/v1/leads", peer.url));
        assert_eq!(request["headers"]["Authorization"], "Bearer [secret]");
        assert!(request["headers"]["Idempotency-Key"].is_string());
        assert_eq!(request["body"], json!({"email": "ada@example.com", "plan": "pro"}));
        assert!(!report.to_string().contains(SECRET));
        // A template naming a missing variable: reported, not sent.
        let report = test(api.clone(), json!({"contactId": contact, "dryRun": true})).await.expect(200);
        assert_eq!(report["ok"], false);
        assert_eq!(report["error"]["category"], "validation");
        let hook = add("send_webhook", json!({"url": format!("{}/hook", peer.url), "signingSecret": "{{ secrets.api_token }}"})).await;
        let report = test(hook, json!({"contactId": contact, "dryRun": true})).await.expect(200);
        assert!(report["requests"][0]["headers"]["webhook-signature"].as_str().unwrap().starts_with("v1,"));
        assert_eq!(report["requests"][0]["body"]["data"]["contact"]["email"], "ada@example.com");
        let mail = add("email_integration", json!({"provider": "smtp", "from": "team@flowline.test", "subject": "Hi {{ contact.name }}", "text": "x",
            "smtp": {"host": "127.0.0.1", "port": smtp.port, "security": "none"}})).await;
        let report = test(mail, json!({"contactId": contact, "dryRun": true})).await.expect(200);
        assert_eq!(report["requests"][0]["to"], "ada@example.com", "{report}");
        assert!(report["requests"][0]["message"].as_str().unwrap().contains("Subject: Hi Ada"));
        let set = add("set_variable", json!({"name": "score", "type": "number", "value": "{{ vars.base + 1 }}"})).await;
        let report = test(set, json!({"vars": {"base": 41}, "dryRun": true})).await.expect(200);
        assert_eq!(report["variables"][0]["value"], 42);
        let tag = add("add_tag", json!({"tagName": "{{ vars.kind }}-lead"})).await;
        let report = test(tag, json!({"contactId": contact, "vars": {"kind": "hot"}, "dryRun": true})).await.expect(200);
        assert_eq!(report["input"]["tagName"], "hot-lead");
        assert!(detail_tags_empty(&app, &contact).await, "nothing was changed");
        // Nothing was sent anywhere.
        assert!(peer.received().is_empty());
        assert!(smtp.mails().is_empty());
        test(api.clone(), json!({"dryRun": false})).await.problem(422, "validation_failed");
        let (_, other) = app.other_workspace().await;
        app.post(&format!("/api/actions/flows/{flow}/actions/{api}/test"), &other, json!({"dryRun": true}))
            .await
            .problem(404, "not_found");
    }
}

async fn detail_tags_empty(app: &TestApp, contact: &str) -> bool {
    app.get(&format!("/api/contacts/{contact}"), &app.owner)
        .await
        .expect(200)["tags"]
        == json!([])
}
