//! `run_javascript` through the API: what scripts can do, and hostile scripts that must each end
//! in a clean step failure with the server healthy and the next script running normally.

use std::time::Duration;

use flowline_core::role::Role;
use serde_json::{Value, json};

use crate::api_test;
use crate::support::TestApp;

/// Publishes a one-step flow running `code` with `extra` config fields, runs it for `contact`
/// with `input` as its trigger payload, and returns the finished run.
async fn script(app: &TestApp, code: &str, extra: Value, contact: Option<&str>) -> Value {
    let flow = app
        .post(
            "/api/flows",
            &app.owner,
            json!({"name": "js", "graph": {"nodes": [{"id": "n", "position": {"x": 0, "y": 0}}], "edges": []}}),
        )
        .await
        .expect(201);
    let flow = flow["id"].as_str().unwrap().to_owned();
    let mut config = json!({"code": code});
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    app.post(
        &format!("/api/actions/flows/{flow}"),
        &app.owner,
        json!({"nodeId": "n", "actionType": "run_javascript", "actionConfig": config, "retry": {"maxAttempts": 3}}),
    )
    .await
    .expect(201);
    app.post(&format!("/api/flows/{flow}/publish"), &app.owner, json!({}))
        .await
        .expect(200);
    let mut body = json!({"input": {"source": "test"}});
    if let Some(contact) = contact {
        body["contactId"] = json!(contact);
    }
    let run = app
        .post(&format!("/api/flows/{flow}/executions"), &app.owner, body)
        .await
        .expect(202);
    app.engine.drain().await.unwrap();
    app.get(
        &format!("/api/executions/{}", run["id"].as_str().unwrap()),
        &app.owner,
    )
    .await
    .expect(200)
}

/// The run completed and the script returned `expected`.
async fn returns(app: &TestApp, code: &str, expected: Value) {
    let run = script(app, code, json!({}), None).await;
    assert_eq!(run["status"], "completed", "{code}: {run}");
    assert_eq!(run["steps"][0]["output"]["result"], expected, "{code}");
}

api_test! {
    async fn scripts_see_plain_data_set_typed_variables_log_and_return_json(app: TestApp) {
        let contact = app
            .post("/api/contacts", &app.owner, json!({"name": "Ada", "email": "ada@example.com", "attributes": {"score": 41}}))
            .await
            .expect(201);
        let contact = contact["id"].as_str().unwrap().to_owned();
        let code = "console.log('scoring', contact.name, {score: contact.attributes.score});\n\
                    setVariable('score', contact.attributes.score + 1);\n\
                    setVariable('tags', contact.tags);\n\
                    setVariable('vip', true);\n\
                    return {hello: contact.name, source: trigger.source === undefined ? null : trigger.source, n: Object.keys(vars).length};";
        let run = script(&app, code, json!({"outputVariable": "result"}), Some(&contact)).await;
        assert_eq!(run["status"], "completed", "{run}");
        let step = &run["steps"][0];
        assert_eq!(step["output"]["result"], json!({"hello": "Ada", "source": "test", "n": 0}));
        assert_eq!(step["output"]["logs"], json!(["scoring Ada {\"score\":41}"]));
        assert_eq!(step["input"]["timeoutMs"], 1000);
        assert_eq!(step["input"]["memoryLimitMb"], 32);
        let vars: Vec<(String, String, Value)> = run["variables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["name"].as_str().unwrap().to_owned(), v["type"].as_str().unwrap().to_owned(), v["value"].clone()))
            .collect();
        for expected in [
            ("score".to_owned(), "number".to_owned(), json!(42)),
            ("tags".to_owned(), "array".to_owned(), json!([])),
            ("vip".to_owned(), "boolean".to_owned(), json!(true)),
            ("result".to_owned(), "object".to_owned(), json!({"hello": "Ada", "source": "test", "n": 0})),
        ] {
            assert!(vars.contains(&expected), "{expected:?} in {vars:?}");
        }
        // Async code and promises are awaited.
        returns(&app, "return (async () => { const x = await Promise.resolve(20); return x + 1; })();", json!(21)).await;
        // A script error fails `sandbox` with its line, and is not retried.
        let run = script(&app, "const a = 1;\nconst b = a.nothing.deeper;\nreturn b;", json!({}), None).await;
        assert_eq!(run["status"], "failed");
        let step = &run["steps"][0];
        assert_eq!(step["error"]["category"], "sandbox");
        assert_eq!(step["error"]["retryable"], false);
        assert!(step["error"]["message"].as_str().unwrap().starts_with("line 2: TypeError"), "{step}");
        assert_eq!(step["attempt"], 1);
        // A globalThis write does not survive into the next script.
        returns(&app, "globalThis.leak = 42; return typeof globalThis.leak;", json!("number")).await;
        returns(&app, "return typeof globalThis.leak;", json!("undefined")).await;
        // A finite flood of logs is capped.
        let run = script(&app, "for (let i = 0; i < 100000; i++) console.log('line ' + i); return 'done';", json!({}), None).await;
        assert_eq!(run["steps"][0]["output"]["result"], "done");
        assert_eq!(run["steps"][0]["output"]["logs"].as_array().unwrap().len(), 100);
        assert_eq!(run["steps"][0]["output"]["logsTruncated"], true);
        // Only admins add or change scripts.
        let editor = app.token(Role::Editor).await;
        let flow = app.flow(&app.owner).await;
        app.post(
            &format!("/api/actions/flows/{flow}"),
            &editor,
            json!({"nodeId": "start", "actionType": "run_javascript", "actionConfig": {"code": "return 1"}}),
        )
        .await
        .problem(403, "forbidden");
        // Limits above the caps are refused when saved.
        let refused = app
            .post(
                &format!("/api/actions/flows/{flow}"),
                &app.owner,
                json!({"nodeId": "start", "actionType": "run_javascript", "actionConfig": {"code": "return 1", "timeoutMs": 10001, "memoryLimitMb": 129}}),
            )
            .await
            .invalid_fields();
        assert_eq!(refused, vec!["actionConfig.memoryLimitMb", "actionConfig.timeoutMs"]);
        let pool = app.engine.sandbox().unwrap();
        assert!(pool.seccomp(), "the seccomp filter is in force on this machine");
        assert!(pool.network_blocked(), "a sandboxed process cannot open a socket");
    }
}

api_test! {
    async fn hostile_scripts_end_in_clean_failures_and_the_next_script_runs(app: TestApp) {
        let short = json!({"timeoutMs": 300});
        let cases: Vec<(&str, &str, Value)> = vec![
            ("while (true) {}", "timeout", short.clone()),
            ("(async () => { for (;;) await null })();", "timeout", short.clone()),
            ("return Array.prototype.indexOf.call({length: 4294967295}, 1);", "timeout", short.clone()),
            ("return 'x'.repeat(2 ** 29);", "sandbox", json!({})),
            ("return new Array(1e9).join('x');", "sandbox|timeout", short.clone()),
            ("function f() { return f() + 1; }\nreturn f();", "sandbox", json!({})),
            ("return this.constructor.constructor('return process')();", "sandbox", json!({})),
            ("return require('fs');", "sandbox", json!({})),
            ("return import('os');", "sandbox", json!({})),
            ("return std.loadFile('/etc/passwd');", "sandbox", json!({})),
            ("return eval('1 + 1');", "sandbox", json!({})),
            ("const a = {}; a.self = a; return a;", "sandbox", json!({})),
            ("return 'x'.repeat(1024 * 1024);", "sandbox", json!({})),
            ("for (;;) console.log('spam');", "timeout", short.clone()),
            ("return /^(a+)+$/.test('a'.repeat(40) + 'b');", "timeout", short.clone()),
            (
                "const out = (typeof os !== 'undefined' && os) || (typeof std !== 'undefined' && std) || (typeof print !== 'undefined' && print);\n\
                 console.log('\\u0000\\u0000\\u0000\\u0010{\"value\":1}');\n\
                 if (!out) throw new Error('no way to reach the protocol pipe');\n\
                 out.write(1, '\\u0000\\u0000\\u0000\\u0002{}');",
                "sandbox",
                json!({}),
            ),
        ];
        for (code, expected, extra) in cases {
            let run = script(&app, code, extra, None).await;
            assert_eq!(run["status"], "failed", "{code}: {run}");
            let step = &run["steps"][0];
            let category = step["error"]["category"].as_str().unwrap();
            assert!(expected.split('|').any(|e| e == category), "{code}: {category} {}", step["error"]);
            assert_eq!(step["attempt"], 1, "{code} is not retried");
            assert!(step["error"]["message"].as_str().unwrap().len() < 2000);
            // The server answers and the next script runs normally.
            app.get("/readyz", &app.owner).await.expect(200);
            returns(&app, "return 6 * 7;", json!(42)).await;
        }
        let stats = app.engine.sandbox().unwrap().stats();
        assert!(stats.killed >= 1, "the watchdog killed at least one child: {stats:?}");
    }
}

api_test! {
    async fn a_sandbox_killed_mid_script_fails_the_step_cleanly_and_the_pool_recovers(app: TestApp) {
        let pool = app.engine.sandbox().unwrap().clone();
        let engine = app.engine.clone();
        let flow = app
            .post("/api/flows", &app.owner, json!({"name": "js", "graph": {"nodes": [{"id": "n", "position": {"x": 0, "y": 0}}], "edges": []}}))
            .await
            .expect(201);
        let flow = flow["id"].as_str().unwrap().to_owned();
        app.post(
            &format!("/api/actions/flows/{flow}"),
            &app.owner,
            json!({"nodeId": "n", "actionType": "run_javascript", "actionConfig": {"code": "while (true) {}", "timeoutMs": 10000}, "retry": {"maxAttempts": 1}}),
        )
        .await
        .expect(201);
        app.post(&format!("/api/flows/{flow}/publish"), &app.owner, json!({})).await.expect(200);
        let run = app.post(&format!("/api/flows/{flow}/executions"), &app.owner, json!({})).await.expect(202);
        let drained = tokio::spawn(async move { engine.drain().await });
        // Wait for the script to be running in a child, then kill that child from outside.
        let pid = tokio::time::timeout(Duration::from_secs(30), pool.running())
            .await
            .expect("the script started");
        let status = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
        assert!(status.success());
        drained.await.unwrap().unwrap();
        let run = app.get(&format!("/api/executions/{}", run["id"].as_str().unwrap()), &app.owner).await.expect(200);
        assert_eq!(run["status"], "failed", "{run}");
        let error = &run["steps"][0]["error"];
        assert_eq!(error["category"], "sandbox");
        assert!(error["message"].as_str().unwrap().contains("died"), "{error}");
        assert_eq!(error["retryable"], true, "a crash is not the script's fault: retried when the policy allows");
        assert_eq!(pool.stats().died, 1);
        returns(&app, "return 'still here';", json!("still here")).await;
    }
}
