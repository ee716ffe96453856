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
