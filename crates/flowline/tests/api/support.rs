//! `TestApp`: the real router on a real port over a fresh database, and an HTTP client.

use std::sync::Arc;

use flowline_api::AppState;
use flowline_core::id::WorkspaceId;
use flowline_core::role::Role;
use flowline_core::token::ClearToken;
use flowline_store::Store;
use flowline_store::tenancy::{Actor, NewMember, NewToken, NewWorkspace};
use flowline_store_postgres::PgStore;
use flowline_store_postgres::scratch::ScratchDatabase;
use flowline_store_sqlite::{SqliteSettings, SqliteStore};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Runs an async test body once on SQLite and once on PostgreSQL, each on a fresh database.
#[macro_export]
macro_rules! api_test {
    ($(#[$meta:meta])* async fn $name:ident($app:ident: TestApp) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn case($app: $crate::support::TestApp) $body
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                case($crate::support::TestApp::sqlite().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                case($crate::support::TestApp::postgres().await).await
            }
        }
    };
}

/// The PostgreSQL URL tests create scratch databases through.
pub fn pg_admin_url() -> String {
    std::env::var("FLOWLINE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A server over a fresh database with one workspace and its owner's token.
pub struct TestApp {
    /// The store behind the server.
    pub store: Arc<dyn Store>,
    /// The engine; tests drive it step by step with `drain`.
    pub engine: Arc<flowline_engine::Engine>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The first workspace.
    pub workspace: WorkspaceId,
    /// Its owner's token.
    pub owner: String,
    /// The PostgreSQL database's URL, on PostgreSQL.
    pub pg_url: Option<String>,
    /// The SQLite file, on SQLite.
    pub sqlite_path: Option<std::path::PathBuf>,
    /// The engine's settings (its secret key included), for tests that build another engine
    /// over the same store.
    pub config: flowline_engine::EngineConfig,
    client: reqwest::Client,
    _guard: Box<dyn std::any::Any + Send>,
}

/// A response: status, content type and JSON body (or `Value::Null`).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: String,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// Asserts the status, returning the body.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        self.body
    }

    /// Asserts a problem+json answer with this status and code, returning the body.
    #[track_caller]
    pub fn problem(self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.body
        );
        assert_eq!(
            self.content_type, "application/problem+json",
            "body: {}",
            self.body
        );
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].is_string() && self.body["detail"].is_string());
        assert_eq!(self.body["type"], format!("urn:flowline:problem:{code}"));
        self.body
    }

    /// The fields named in a 422's `errors`.
    #[track_caller]
    pub fn invalid_fields(self) -> Vec<String> {
        let body = self.problem(422, "validation_failed");
        body["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| {
                assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
                e["field"].as_str().unwrap().to_owned()
            })
            .collect()
    }
}

impl TestApp {
    /// On a fresh SQLite file.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&SqliteSettings::new(dir.path().join("flowline.db")))
            .await
            .expect("open SQLite");
        store.migrate().await.expect("migrate");
        let path = dir.path().join("flowline.db");
        let mut app = Self::start(Arc::new(store), Box::new(dir), None).await;
        app.sqlite_path = Some(path);
        app
    }

    /// On a fresh PostgreSQL database.
    pub async fn postgres() -> Self {
        let db = ScratchDatabase::create(&pg_admin_url())
            .await
            .expect("scratch database");
        PgStore::migrate(&db.settings()).await.expect("migrate");
        let store = PgStore::connect(&db.settings()).await.expect("connect");
        let url = db.url().to_owned();
        Self::start(Arc::new(store), Box::new(db), Some(url)).await
    }

    async fn start(
        store: Arc<dyn Store>,
        guard: Box<dyn std::any::Any + Send>,
        pg_url: Option<String>,
    ) -> Self {
        let token = ClearToken::generate();
        let created = store
            .create_workspace(NewWorkspace {
                name: "Acme".into(),
                owner_name: "Olive Owner".into(),
                token_name: "owner".into(),
                token_hash: token.hash(),
                actor: Actor::system("test"),
            })
            .await
            .expect("workspace");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let config = flowline_engine::EngineConfig {
            secret_key: Some(flowline_engine::secrets::SecretKey::generate().0),
            // Outside services in tests are real servers on 127.0.0.1.
            outbound: flowline_engine::outbound::OutboundPolicy {
                allow: vec!["127.0.0.0/8".parse().unwrap()],
            },
            ..Default::default()
        };
        let engine = flowline_engine::Engine::new(store.clone(), config.clone());
        let state = AppState::new(engine.clone());
        tokio::spawn(flowline_api::serve(listener, state, std::future::pending()));
        Self {
            store,
            engine,
            base,
            workspace: created.workspace.id,
            owner: token.expose().to_owned(),
            pg_url,
            sqlite_path: None,
            config,
            client: reqwest::Client::new(),
            _guard: guard,
        }
    }

    /// A token of a new member with `role` in this app's workspace.
    pub async fn token(&self, role: Role) -> String {
        self.token_in(self.workspace, role).await
    }

    /// A token of a new member with `role` in `workspace`.
    pub async fn token_in(&self, workspace: WorkspaceId, role: Role) -> String {
        let actor = Actor::system("test");
        let member = self
            .store
            .create_member(
                workspace,
                &actor,
                NewMember {
                    name: format!("A {role}"),
                    email: None,
                    role,
                },
            )
            .await
            .unwrap();
        let token = ClearToken::generate();
        self.store
            .create_token(
                workspace,
                &actor,
                NewToken {
                    member_id: member.id,
                    name: "t".into(),
                    hash: token.hash(),
                },
            )
            .await
            .unwrap();
        token.expose().to_owned()
    }

    /// A second workspace and its owner's token.
    pub async fn other_workspace(&self) -> (WorkspaceId, String) {
        let token = ClearToken::generate();
        let created = self
            .store
            .create_workspace(NewWorkspace {
                name: "Other".into(),
                owner_name: "Other owner".into(),
                token_name: "owner".into(),
                token_hash: token.hash(),
                actor: Actor::system("test"),
            })
            .await
            .unwrap();
        (created.workspace.id, token.expose().to_owned())
    }

    /// Sends a request with a raw body and headers.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let content_type = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let bytes = response.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            content_type,
            body,
            headers,
        }
    }

    /// Sends a request as `token`, with an optional JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Reply {
        let auth = format!("Bearer {token}");
        let mut headers = vec![("authorization", auth.as_str())];
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        self.raw(
            method,
            path,
            &headers,
            body.map(|b| serde_json::to_vec(&b).unwrap()),
        )
        .await
    }

    /// GET as `token`.
    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, token, None).await
    }

    /// POST JSON as `token`.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// PUT JSON as `token`.
    pub async fn put(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::PUT, path, token, Some(body)).await
    }

    /// DELETE as `token`.
    pub async fn delete(&self, path: &str, token: &str) -> Reply {
        self.call(Method::DELETE, path, token, None).await
    }

    /// Creates a draft flow with nodes `start` and `next`, returning its id.
    pub async fn flow(&self, token: &str) -> String {
        let body = self
            .post("/api/flows", token, flow_body("Welcome"))
            .await
            .expect(201);
        body["id"].as_str().unwrap().to_owned()
    }

    /// Adds an add_tag action to `node` of `flow`, returning its id.
    pub async fn tag_action(&self, flow: &str, node: &str, tag: &str) -> String {
        let body = self
            .post(
                &format!("/api/actions/flows/{flow}"),
                &self.owner,
                json!({"nodeId": node, "actionType": "add_tag", "actionConfig": {"tagName": tag}}),
            )
            .await
            .expect(201);
        body["id"].as_str().unwrap().to_owned()
    }

    /// Runs `sql` with `binds` (timestamps and ids) directly on the database, as its owner: for
    /// tests that must backdate rows.
    pub async fn execute(&self, sql: &str, binds: Vec<SqlValue>) {
        macro_rules! run {
            ($conn:expr) => {{
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
                for bind in binds {
                    query = match bind {
                        SqlValue::Time(t) => query.bind(t),
                        SqlValue::Id(id) => query.bind(id),
                    };
                }
                query.execute($conn).await.expect("sql");
            }};
        }
        use sqlx::Connection;
        match (&self.pg_url, &self.sqlite_path) {
            (Some(url), _) => {
                let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
                run!(&mut conn);
            }
            (None, Some(path)) => {
                let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
                let mut conn = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .expect("connect");
                run!(&mut conn);
            }
            (None, None) => panic!("no database"),
        }
    }

    /// The number of audit entries in this app's workspace.
    pub async fn audit_count(&self) -> usize {
        let page = flowline_store::page::PageRequest::first(200);
        self.store
            .list_audit(self.workspace, Default::default(), page)
            .await
            .unwrap()
            .items
            .len()
    }
}

/// A value bound to raw SQL in tests.
pub enum SqlValue {
    /// A timestamp.
    Time(chrono::DateTime<chrono::Utc>),
    /// An id.
    Id(uuid::Uuid),
}

/// A flow body with nodes `start` and `next`.
pub fn flow_body(name: &str) -> Value {
    json!({
        "name": name,
        "description": "When a contact fills the form",
        "graph": {
            "nodes": [
                {"id": "start", "label": "Form filled", "position": {"x": 0, "y": 0}},
                {"id": "next", "position": {"x": 240, "y": 0}}
            ],
            "edges": [{"source": "start", "target": "next"}]
        }
    })
}
