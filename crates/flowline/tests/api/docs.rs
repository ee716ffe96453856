//! OpenAPI, the browsable reference, health and readiness.

use reqwest::Method;

use crate::api_test;

api_test! {
    async fn the_openapi_document_describes_every_route(app: TestApp) {
        let doc = app.raw(Method::GET, "/api/openapi.json", &[], None).await.expect(200);
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let paths = doc["paths"].as_object().unwrap();
        for (path, method) in [
            ("/api/actions/types", "get"),
            ("/api/actions/flows/{flowId}", "get"),
            ("/api/actions/flows/{flowId}", "post"),
            ("/api/actions/flows/{flowId}/actions/{actionId}", "put"),
            ("/api/actions/flows/{flowId}/actions/{actionId}", "delete"),
            ("/api/actions/{actionId}/executions", "get"),
            ("/api/flows", "get"),
            ("/api/flows", "post"),
            ("/api/flows/{flowId}", "put"),
            ("/api/tokens", "post"),
            ("/api/audit", "get"),
            ("/healthz", "get"),
            ("/readyz", "get"),
        ] {
            assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing");
        }
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for name in ["CreateAction", "FlowAction", "Flow", "Problem", "FlowGraph"] {
            assert!(schemas.contains_key(name), "schema {name} missing");
        }
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        // The browsable reference is served from the binary, with no internet.
        let page = reqwest::get(format!("{}/api/docs/", app.base)).await.unwrap();
        assert_eq!(page.status(), 200);
        let html = page.text().await.unwrap();
        assert!(html.contains("swagger"), "{html}");
        let script = reqwest::get(format!("{}/api/docs/swagger-ui-bundle.js", app.base)).await.unwrap();
        assert_eq!(script.status(), 200);
        assert!(script.text().await.unwrap().len() > 100_000);
    }
}

api_test! {
    async fn health_and_readiness_answer_without_a_token(app: TestApp) {
        let health = app.raw(Method::GET, "/healthz", &[], None).await.expect(200);
        assert_eq!(health["status"], "ok");
        let ready = app.raw(Method::GET, "/readyz", &[], None).await.expect(200);
        assert_eq!(ready["status"], "ok");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_the_database_does_not_answer() {
    use sqlx::Connection;
    let app = crate::support::TestApp::postgres().await;
    let ready = app.raw(Method::GET, "/readyz", &[], None).await.expect(200);
    assert_eq!(ready["status"], "ok");
    // Refuse new connections to the app's database and drop the open ones.
    let mut admin = sqlx::PgConnection::connect(&crate::support::pg_admin_url())
        .await
        .unwrap();
    let url = app.pg_url.clone().unwrap();
    let database = url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let quoted = format!("\"{database}\"");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {quoted} ALLOW_CONNECTIONS false"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&database)
        .execute(&mut admin)
        .await
        .unwrap();
    let down = app.raw(Method::GET, "/readyz", &[], None).await;
    assert_eq!(down.status.as_u16(), 503, "{}", down.body);
    assert_eq!(down.body["code"], "unavailable");
    let health = app
        .raw(Method::GET, "/healthz", &[], None)
        .await
        .expect(200);
    assert_eq!(health["status"], "ok", "the process itself is still alive");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {quoted} ALLOW_CONNECTIONS true"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    app.raw(Method::GET, "/readyz", &[], None).await.expect(200);
}
