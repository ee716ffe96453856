//! Row-level security holds even for SQL that forgets the workspace filter.

use flowline_store::Store;
use flowline_store::flow::NewFlow;
use flowline_store::tenancy::Actor;
use flowline_store_postgres::PgStore;
use flowline_store_postgres::scratch::ScratchDatabase;
use flowline_store_tests::{new_workspace, simple_graph};
use sqlx::{Connection, PgConnection};

fn admin_url() -> String {
    std::env::var("FLOWLINE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A store with two workspaces, A and B, each holding one flow.
async fn two_workspaces() -> (ScratchDatabase, PgStore, uuid::Uuid, uuid::Uuid) {
    let db = ScratchDatabase::create(&admin_url()).await.unwrap();
    PgStore::migrate(&db.settings()).await.unwrap();
    let store = PgStore::connect(&db.settings()).await.unwrap();
    let mut ids = Vec::new();
    for name in ["a", "b"] {
        let created = store.create_workspace(new_workspace(name).0).await.unwrap();
        store
            .create_flow(
                created.workspace.id,
                &Actor::system("test"),
                NewFlow {
                    name: format!("{name} flow"),
                    description: None,
                    graph: simple_graph(),
                    schedule: None,
                    triggers: Vec::new(),
                },
            )
            .await
            .unwrap();
        ids.push(created.workspace.id.0);
    }
    (db, store, ids[0], ids[1])
}

const TENANT_TABLES: &[&str] = &[
    "workspaces",
    "members",
    "api_tokens",
    "flows",
    "flow_actions",
    "audit_log",
];

#[tokio::test]
async fn a_transaction_that_names_no_workspace_reads_no_rows() {
    let (_db, store, _, _) = two_workspaces().await;
    let mut tx = store.pool().begin().await.unwrap();
    for table in TENANT_TABLES {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        assert_eq!(
            n, 0,
            "{table} leaked rows to a transaction with no workspace"
        );
    }
}

#[tokio::test]
async fn a_query_that_forgets_the_filter_still_sees_only_its_workspace() {
    let (_db, store, a, b) = two_workspaces().await;
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query("SELECT set_config('flowline.workspace_id', $1, true)")
        .bind(a.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let flows: Vec<(uuid::Uuid, String)> = sqlx::query_as("SELECT workspace_id, name FROM flows")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(flows, vec![(a, "a flow".to_owned())]);
    for table in TENANT_TABLES {
        let column = if *table == "workspaces" {
            "id"
        } else {
            "workspace_id"
        };
        let foreign: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {table} WHERE {column} = $1"
        )))
        .bind(b)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert_eq!(foreign, 0, "{table} showed workspace B's rows to A");
    }
    // Writing into B from A's transaction is refused by the policy's check.
    let insert = sqlx::query(
        "INSERT INTO flows (id, workspace_id, name, status, graph, created_at, updated_at) \
         VALUES ($1, $2, 'sneaky', 'draft', '{}', now(), now())",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(b)
    .execute(&mut *tx)
    .await;
    assert!(insert.is_err(), "inserted a row into another workspace");
    drop(tx);
    // Nor can A's transaction change B's rows: the update matches nothing.
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query("SELECT set_config('flowline.workspace_id', $1, true)")
        .bind(a.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let updated = sqlx::query("UPDATE flows SET name = 'hijacked' WHERE workspace_id = $1")
        .bind(b)
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 0);
}

#[tokio::test]
async fn the_server_works_as_a_role_that_owns_nothing_and_bypasses_nothing() {
    let (db, store, _, _) = two_workspaces().await;
    let mut conn = store.pool().acquire().await.unwrap();
    let (role, superuser, bypass): (String, bool, bool) = sqlx::query_as(
        "SELECT current_user::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(role, "flowline_app");
    assert!(!superuser && !bypass);
    let owned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relowner = (SELECT oid FROM pg_roles WHERE rolname = 'flowline_app')",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(owned, 0);
    // Every table with a workspace_id has row-level security enabled and forced.
    let mut admin = PgConnection::connect(db.url()).await.unwrap();
    let unprotected: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind = 'r' \
         AND (EXISTS (SELECT 1 FROM information_schema.columns k WHERE k.table_name = c.relname AND k.column_name = 'workspace_id') \
              OR c.relname = 'workspaces') \
         AND NOT (c.relrowsecurity AND c.relforcerowsecurity)",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(
        unprotected.is_empty(),
        "tables without forced RLS: {unprotected:?}"
    );
    // The audit log is append-only for the application.
    let mut tx = store.pool().begin().await.unwrap();
    let deleted = sqlx::query("DELETE FROM audit_log").execute(&mut *tx).await;
    assert!(
        deleted.is_err(),
        "the application could delete audit entries"
    );
}

#[tokio::test]
async fn the_engine_scope_sees_the_queue_and_nothing_else() {
    let (_db, store, _, _) = two_workspaces().await;
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query("SELECT set_config('flowline.scope', 'engine', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    for table in [
        "flow_actions",
        "flow_versions",
        "members",
        "api_tokens",
        "audit_log",
        "contacts",
    ] {
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        assert_eq!(n, 0, "the engine scope showed {table}");
    }
    // Flows are readable (the scheduler finds due schedules) but not writable in this scope.
    let flows: i64 = sqlx::query_scalar("SELECT count(*) FROM flows")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(flows, 2);
    let renamed = sqlx::query("UPDATE flows SET name = 'x'")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(renamed.rows_affected(), 0);
    // Workspaces are readable (retention reads each one's) but not writable in this scope; so
    // are sealed secrets (the start-up key check), empty here.
    let workspaces: i64 = sqlx::query_scalar("SELECT count(*) FROM workspaces")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(workspaces, 2);
    let renamed = sqlx::query("UPDATE workspaces SET name = 'x'")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(renamed.rows_affected(), 0);
    let wiped = sqlx::query("DELETE FROM secrets")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(wiped.rows_affected(), 0);
    // The run and step tables are readable across workspaces in this scope (empty here).
    let steps: i64 = sqlx::query_scalar("SELECT count(*) FROM action_executions")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(steps, 0);
}
