//! The SQL both storage backends share.
//!
//! This file is compiled into `flowline-store-sqlite` and `flowline-store-postgres` alike
//! (`#[path]` module), each time against that crate's `backend` module, which provides:
//! `Db` (the sqlx database), `StoreImpl` (the store struct, with `begin(Access)`),
//! `enter_workspace` and `present_token` (how a transaction is scoped: row-level security on
//! PostgreSQL, nothing on SQLite) and `FOR_UPDATE` (row locks where the backend has them).
//! Queries use `$n` placeholders, which both backends accept. SQL that must differ lives in the
//! backend crates; behaviour may not differ.

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use flowline_core::action::ActionType;
use flowline_core::id::{ActionId, ExecutionId, FlowId, MemberId, StepId, TokenId, WorkspaceId};
use flowline_core::retry::RetryPolicy;
use flowline_core::role::Role;
use flowline_core::status::{FlowStatus, Queue};
use flowline_core::token::TokenHash;
use flowline_core::validation::ValidationErrors;
use flowline_store::audit::{AuditEntry, AuditFilter, NewAuditEntry};
use flowline_store::execution::{
    ClaimParams, ClaimedStep, Execution, ExecutionDetail, FinishOutcome, FinishStep, FlowVersion,
    NewExecution, Variable, WorkSignal,
};
use flowline_store::flow::{
    ActionUpdate, Flow, FlowAction, FlowFilter, FlowUpdate, NewAction, NewFlow, StepSummary,
};
use flowline_store::page::{Page, PageRequest};
use flowline_store::tenancy::{
    Actor, CreatedWorkspace, Member, MemberUpdate, NewMember, NewToken, NewWorkspace, Principal,
    TokenRecord, Workspace,
};
use flowline_store::{Store, StoreError, StoreResult};
use serde::Serialize;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Transaction};
use uuid::Uuid;

use crate::backend::{
    Db, FOR_UPDATE, StoreImpl, enter_engine_scope, enter_workspace, present_token,
};
use crate::sql_execution;

/// A transaction of this backend.
pub(crate) type Tx<'c> = Transaction<'c, Db>;

/// A connection of this backend: what runs a transaction's statements, for code that also runs
/// in a transaction begun by hand (SQLite's writer begins and commits in its other statements'
/// trips). A `&mut Tx` passes for one.
pub(crate) type Conn = <Db as sqlx::Database>::Connection;

/// Whether a transaction will write; SQLite takes its write lock up front for writers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

/// The most actions one flow may hold.
const MAX_ACTIONS_PER_FLOW: i64 = 500;
/// A token's last use is recorded at most this often.
const LAST_USED_GRANULARITY_SECS: i64 = 60;

/// Converts sqlx's error into the store's, in exactly one place.
pub(crate) fn db_error(error: sqlx::Error) -> StoreError {
    if let Some(db) = error.as_database_error() {
        match db.kind() {
            sqlx::error::ErrorKind::UniqueViolation => {
                return StoreError::Conflict(format!("already exists ({})", db.message()));
            }
            sqlx::error::ErrorKind::ForeignKeyViolation => {
                return StoreError::Conflict(format!("still referenced ({})", db.message()));
            }
            sqlx::error::ErrorKind::CheckViolation | sqlx::error::ErrorKind::NotNullViolation => {
                return StoreError::Invalid(ValidationErrors::single("", db.message().to_owned()));
            }
            // PostgreSQL refuses NUL in text (22021) and \u0000 in jsonb (22P05): bad input.
            _ if matches!(db.code().as_deref(), Some("22021" | "22P05")) => {
                return StoreError::Invalid(ValidationErrors::single(
                    "",
                    "text must not contain NUL characters",
                ));
            }
            _ => {}
        }
    }
    StoreError::Backend(Box::new(error))
}

/// Now, at the precision both backends keep.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

pub(crate) fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("stored {what} is unreadable: {detail}").into())
}

pub(crate) fn snapshot<T: Serialize>(value: &T) -> Option<serde_json::Value> {
    serde_json::to_value(value).ok()
}

impl StoreImpl {
    /// Tells this process's idle workers of work for `queue` (every queue when `None`) at once,
    /// and other processes' through the backend (PostgreSQL NOTIFY, coalesced).
    pub(crate) fn notify_work(&self, queue: Option<Queue>) {
        let bump = |signal: &mut WorkSignal| signal.bump(queue);
        self.work_signal().send_modify(bump);
        self.signal_other_processes(bump);
    }

    /// Tells this process's workers, and other processes', that a run was cancelled: a step of
    /// it they are running stops now.
    pub(crate) fn notify_cancel(&self) {
        self.work_signal().send_modify(WorkSignal::bump_cancels);
        self.signal_other_processes(WorkSignal::bump_cancels);
    }

    pub(crate) async fn scoped(
        &self,
        workspace: WorkspaceId,
        access: Access,
    ) -> StoreResult<Tx<'static>> {
        let mut tx = self.begin(access).await?;
        enter_workspace(&mut tx, workspace).await?;
        Ok(tx)
    }
}

pub(crate) async fn commit(tx: Tx<'_>) -> StoreResult<()> {
    tx.commit().await.map_err(db_error)
}

pub(crate) async fn audit(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    actor: &Actor,
    entry: NewAuditEntry,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO audit_log (id, workspace_id, actor_member_id, actor_token_id, actor_label, \
         action, entity_type, entity_id, before, after, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(Uuid::now_v7())
    .bind(workspace.0)
    .bind(actor.member_id.map(|m| m.0))
    .bind(actor.token_id.map(|t| t.0))
    .bind(&actor.label)
    .bind(&entry.action)
    .bind(&entry.entity_type)
    .bind(&entry.entity_id)
    .bind(entry.before.map(Json))
    .bind(entry.after.map(Json))
    .bind(now())
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

pub(crate) fn entry(
    action: &str,
    entity_type: &str,
    entity_id: impl ToString,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> NewAuditEntry {
    NewAuditEntry {
        action: action.to_owned(),
        entity_type: entity_type.to_owned(),
        entity_id: Some(entity_id.to_string()),
        before,
        after,
    }
}

// ---- rows ------------------------------------------------------------------------------------

#[derive(sqlx::FromRow)]
struct WorkspaceRow {
    id: Uuid,
    name: String,
    retention_days: i32,
    created_at: DateTime<Utc>,
}

impl From<WorkspaceRow> for Workspace {
    fn from(r: WorkspaceRow) -> Self {
        Workspace {
            id: r.id.into(),
            name: r.name,
            retention_days: r.retention_days,
            created_at: r.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct MemberRow {
    id: Uuid,
    workspace_id: Uuid,
    name: String,
    email: Option<String>,
    role: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<MemberRow> for Member {
    type Error = StoreError;
    fn try_from(r: MemberRow) -> StoreResult<Self> {
        Ok(Member {
            id: r.id.into(),
            workspace_id: r.workspace_id.into(),
            name: r.name,
            email: r.email,
            role: r.role.parse().map_err(|e| corrupt("role", e))?,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

const MEMBER_COLUMNS: &str = "id, workspace_id, name, email, role, created_at, updated_at";

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: Uuid,
    workspace_id: Uuid,
    member_id: Uuid,
    name: String,
    role: String,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<TokenRow> for TokenRecord {
    type Error = StoreError;
    fn try_from(r: TokenRow) -> StoreResult<Self> {
        Ok(TokenRecord {
            id: r.id.into(),
            workspace_id: r.workspace_id.into(),
            member_id: r.member_id.into(),
            name: r.name,
            role: r.role.parse().map_err(|e| corrupt("role", e))?,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        })
    }
}

const TOKEN_SELECT: &str = "SELECT t.id, t.workspace_id, t.member_id, t.name, m.role, t.created_at, \
     t.last_used_at, t.revoked_at FROM api_tokens t JOIN members m ON m.id = t.member_id";

#[derive(sqlx::FromRow)]
pub(crate) struct FlowRow {
    id: Uuid,
    workspace_id: Uuid,
    name: String,
    description: Option<String>,
    status: String,
    version: i32,
    graph: Json<serde_json::Value>,
    schedule: Option<Json<serde_json::Value>>,
    next_fire_at: Option<DateTime<Utc>>,
    triggers: Json<serde_json::Value>,
    webhook: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<FlowRow> for Flow {
    type Error = StoreError;
    fn try_from(r: FlowRow) -> StoreResult<Self> {
        Ok(Flow {
            id: r.id.into(),
            workspace_id: r.workspace_id.into(),
            name: r.name,
            description: r.description,
            status: r.status.parse().map_err(|e| corrupt("flow status", e))?,
            version: r.version,
            graph: serde_json::from_value(r.graph.0).map_err(|e| corrupt("flow graph", e))?,
            schedule: r
                .schedule
                .map(|j| serde_json::from_value(j.0))
                .transpose()
                .map_err(|e| corrupt("flow schedule", e))?,
            next_fire_at: r.next_fire_at,
            triggers: serde_json::from_value(r.triggers.0)
                .map_err(|e| corrupt("flow triggers", e))?,
            webhook: r.webhook,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

pub(crate) const FLOW_COLUMNS: &str = "id, workspace_id, name, description, status, version, graph, schedule, \
     next_fire_at, triggers, webhook_token_hash IS NOT NULL AS webhook, created_at, updated_at";

#[derive(sqlx::FromRow)]
struct ActionRow {
    id: Uuid,
    workspace_id: Uuid,
    flow_id: Uuid,
    node_id: String,
    action_type: String,
    action_config: Json<serde_json::Value>,
    name: Option<String>,
    position: i32,
    enabled: bool,
    retry: Option<Json<serde_json::Value>>,
    timeout_ms: Option<i64>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<ActionRow> for FlowAction {
    type Error = StoreError;
    fn try_from(r: ActionRow) -> StoreResult<Self> {
        Ok(FlowAction {
            id: r.id.into(),
            workspace_id: r.workspace_id.into(),
            flow_id: r.flow_id.into(),
            node_id: r.node_id,
            action_type: r
                .action_type
                .parse()
                .map_err(|e| corrupt("action type", e))?,
            action_config: r.action_config.0,
            name: r.name,
            position: r.position,
            enabled: r.enabled,
            retry: r
                .retry
                .map(|j| serde_json::from_value::<RetryPolicy>(j.0))
                .transpose()
                .map_err(|e| corrupt("retry policy", e))?,
            timeout_ms: r.timeout_ms,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

const ACTION_COLUMNS: &str = "id, workspace_id, flow_id, node_id, action_type, action_config, \
     name, position, enabled, retry, timeout_ms, created_at, updated_at";

#[derive(sqlx::FromRow)]
struct StepRow {
    id: Uuid,
    flow_execution_id: Uuid,
    action_id: Uuid,
    action_type: String,
    status: String,
    attempt: i32,
    max_attempts: i32,
    error_category: Option<String>,
    error: Option<Json<serde_json::Value>>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
}

impl TryFrom<StepRow> for StepSummary {
    type Error = StoreError;
    fn try_from(r: StepRow) -> StoreResult<Self> {
        Ok(StepSummary {
            id: r.id.into(),
            execution_id: r.flow_execution_id.into(),
            action_id: r.action_id.into(),
            action_type: r
                .action_type
                .parse()
                .map_err(|e| corrupt("action type", e))?,
            status: r.status.parse().map_err(|e| corrupt("step status", e))?,
            attempt: r.attempt,
            max_attempts: r.max_attempts,
            error_category: r
                .error_category
                .map(|c| c.parse())
                .transpose()
                .map_err(|e| corrupt("error category", e))?,
            error: r.error.map(|j| j.0),
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: Uuid,
    workspace_id: Uuid,
    actor_member_id: Option<Uuid>,
    actor_token_id: Option<Uuid>,
    actor_label: String,
    action: String,
    entity_type: String,
    entity_id: Option<String>,
    before: Option<Json<serde_json::Value>>,
    after: Option<Json<serde_json::Value>>,
    created_at: DateTime<Utc>,
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> Self {
        AuditEntry {
            id: r.id.into(),
            workspace_id: r.workspace_id.into(),
            actor_member_id: r.actor_member_id.map(Into::into),
            actor_token_id: r.actor_token_id.map(Into::into),
            actor_label: r.actor_label,
            action: r.action,
            entity_type: r.entity_type,
            entity_id: r.entity_id,
            before: r.before.map(|j| j.0),
            after: r.after.map(|j| j.0),
            created_at: r.created_at,
        }
    }
}

// ---- reads inside a transaction ----------------------------------------------------------------

async fn fetch_member(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    id: MemberId,
) -> StoreResult<Member> {
    fetch_member_locked(tx, workspace, id, false).await
}

/// A member; `lock` holds its row until the transaction ends (PostgreSQL), so concurrent
/// changes to one member apply one after the other instead of overwriting each other.
async fn fetch_member_locked(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    id: MemberId,
    lock: bool,
) -> StoreResult<Member> {
    let lock = if lock { FOR_UPDATE } else { "" };
    sqlx::query_as::<_, MemberRow>(AssertSqlSafe(format!(
        "SELECT {MEMBER_COLUMNS} FROM members WHERE workspace_id = $1 AND id = $2 {lock}"
    )))
    .bind(workspace.0)
    .bind(id.0)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?
    .ok_or(StoreError::NotFound("member"))?
    .try_into()
}

async fn fetch_token(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    id: TokenId,
) -> StoreResult<TokenRecord> {
    sqlx::query_as::<_, TokenRow>(AssertSqlSafe(format!(
        "{TOKEN_SELECT} WHERE t.workspace_id = $1 AND t.id = $2"
    )))
    .bind(workspace.0)
    .bind(id.0)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?
    .ok_or(StoreError::NotFound("token"))?
    .try_into()
}

pub(crate) async fn fetch_flow(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    id: FlowId,
    lock: bool,
) -> StoreResult<Flow> {
    let lock = if lock { FOR_UPDATE } else { "" };
    sqlx::query_as::<_, FlowRow>(AssertSqlSafe(format!(
        "SELECT {FLOW_COLUMNS} FROM flows WHERE workspace_id = $1 AND id = $2 {lock}"
    )))
    .bind(workspace.0)
    .bind(id.0)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?
    .ok_or(StoreError::NotFound("flow"))?
    .try_into()
}

async fn fetch_action(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    id: ActionId,
) -> StoreResult<FlowAction> {
    sqlx::query_as::<_, ActionRow>(AssertSqlSafe(format!(
        "SELECT {ACTION_COLUMNS} FROM flow_actions WHERE workspace_id = $1 AND id = $2"
    )))
    .bind(workspace.0)
    .bind(id.0)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?
    .ok_or(StoreError::NotFound("action"))?
    .try_into()
}

async fn count_owners(tx: &mut Tx<'_>, workspace: WorkspaceId) -> StoreResult<i64> {
    // Lock the owners so two concurrent demotions cannot both see a second owner.
    let owners: Vec<Uuid> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT id FROM members WHERE workspace_id = $1 AND role = 'owner' {FOR_UPDATE}"
    )))
    .bind(workspace.0)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(owners.len() as i64)
}

async fn insert_workspace(tx: &mut Tx<'_>, params: &NewWorkspace) -> StoreResult<CreatedWorkspace> {
    let created_at = now();
    let workspace = Workspace {
        id: WorkspaceId::new(),
        name: params.name.clone(),
        retention_days: 30,
        created_at,
    };
    enter_workspace(tx, workspace.id).await?;
    sqlx::query("INSERT INTO workspaces (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(workspace.id.0)
        .bind(&workspace.name)
        .bind(created_at)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    let owner = Member {
        id: MemberId::new(),
        workspace_id: workspace.id,
        name: params.owner_name.clone(),
        email: None,
        role: Role::Owner,
        created_at,
        updated_at: created_at,
    };
    insert_member(tx, &owner).await?;
    let token = TokenRecord {
        id: TokenId::new(),
        workspace_id: workspace.id,
        member_id: owner.id,
        name: params.token_name.clone(),
        role: Role::Owner,
        created_at,
        last_used_at: None,
        revoked_at: None,
    };
    insert_token(tx, &token, &params.token_hash).await?;
    audit(
        tx,
        workspace.id,
        &params.actor,
        entry(
            "workspace.create",
            "workspace",
            workspace.id,
            None,
            snapshot(&workspace),
        ),
    )
    .await?;
    audit(
        tx,
        workspace.id,
        &params.actor,
        entry("member.create", "member", owner.id, None, snapshot(&owner)),
    )
    .await?;
    audit(
        tx,
        workspace.id,
        &params.actor,
        entry("token.create", "token", token.id, None, snapshot(&token)),
    )
    .await?;
    Ok(CreatedWorkspace {
        workspace,
        owner,
        token,
    })
}

async fn insert_member(tx: &mut Tx<'_>, m: &Member) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO members (id, workspace_id, name, email, role, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(m.id.0)
    .bind(m.workspace_id.0)
    .bind(&m.name)
    .bind(&m.email)
    .bind(m.role.as_str())
    .bind(m.created_at)
    .bind(m.updated_at)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

async fn insert_token(tx: &mut Tx<'_>, t: &TokenRecord, hash: &TokenHash) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO api_tokens (id, workspace_id, member_id, name, token_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(t.id.0)
    .bind(t.workspace_id.0)
    .bind(t.member_id.0)
    .bind(&t.name)
    .bind(&hash.0[..])
    .bind(t.created_at)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Marks the database as having had its first workspace; `false` when it already had.
async fn claim_installation(tx: &mut Tx<'_>) -> StoreResult<bool> {
    let inserted: Option<i32> = sqlx::query_scalar(
        "INSERT INTO installation (id, bootstrapped_at) VALUES (1, $1) \
         ON CONFLICT (id) DO NOTHING RETURNING id",
    )
    .bind(now())
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(inserted.is_some())
}

/// Actions of a flow's node from `position` on, but for `except`, move one place down (`+1`)
/// or up (`-1`).
async fn shift_positions(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    flow: FlowId,
    node: &str,
    from_position: i32,
    by: i32,
    except: Option<ActionId>,
) -> StoreResult<()> {
    sqlx::query(
        "UPDATE flow_actions SET position = position + $1 \
         WHERE workspace_id = $6 AND flow_id = $2 AND node_id = $3 AND position >= $4 AND ($5 IS NULL OR id <> $5)",
    )
    .bind(by)
    .bind(flow.0)
    .bind(node)
    .bind(from_position)
    .bind(except.map(|a| a.0))
    .bind(workspace.0)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

async fn node_action_count(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    flow: FlowId,
    node: &str,
) -> StoreResult<i32> {
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM flow_actions WHERE workspace_id = $3 AND flow_id = $1 AND node_id = $2")
            .bind(flow.0)
            .bind(node)
            .bind(workspace.0)
            .fetch_one(&mut **tx)
            .await
            .map_err(db_error)?;
    Ok(n as i32)
}

/// A page of records read from `limit + 1` rows.
pub(crate) fn page_of<R, T: TryFrom<R, Error = StoreError>>(
    rows: Vec<R>,
    page: &PageRequest,
    id: impl Fn(&T) -> Uuid,
) -> StoreResult<Page<T>> {
    let records = rows
        .into_iter()
        .map(T::try_from)
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(Page::from_rows(records, page, id))
}

/// Orders actions by node id (byte order), position and id.
pub(crate) fn sort_actions<T>(actions: &mut [T], key: impl Fn(&T) -> (&String, i32, ActionId)) {
    actions.sort_by(|a, b| key(a).cmp(&key(b)));
}

fn require_node(flow: &Flow, node: &str) -> StoreResult<()> {
    if flow.graph.has_node(node) {
        Ok(())
    } else {
        Err(StoreError::Invalid(ValidationErrors::single(
            "nodeId",
            format!("flow `{}` has no node `{node}`", flow.name),
        )))
    }
}

fn retry_json(retry: &Option<RetryPolicy>) -> Option<Json<serde_json::Value>> {
    retry.as_ref().and_then(snapshot).map(Json)
}

// ---- the store ---------------------------------------------------------------------------------

#[async_trait]
impl Store for StoreImpl {
    fn subscribe_work(&self) -> tokio::sync::watch::Receiver<WorkSignal> {
        self.work_signal().subscribe()
    }

    async fn relay_wakeups(&self, shutdown: tokio::sync::watch::Receiver<bool>) {
        crate::backend::relay_wakeups(self, shutdown).await
    }

    async fn ping(&self) -> StoreResult<()> {
        let mut tx = self.begin(Access::Read).await?;
        sqlx::query_scalar::<_, i32>("SELECT 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        commit(tx).await
    }

    async fn bootstrap(&self, params: NewWorkspace) -> StoreResult<Option<CreatedWorkspace>> {
        let mut tx = self.begin(Access::Write).await?;
        if !claim_installation(&mut tx).await? {
            return Ok(None);
        }
        let created = insert_workspace(&mut tx, &params).await?;
        commit(tx).await?;
        Ok(Some(created))
    }

    async fn create_workspace(&self, params: NewWorkspace) -> StoreResult<CreatedWorkspace> {
        let mut tx = self.begin(Access::Write).await?;
        claim_installation(&mut tx).await?;
        let created = insert_workspace(&mut tx, &params).await?;
        commit(tx).await?;
        Ok(created)
    }

    async fn get_workspace(&self, workspace: WorkspaceId) -> StoreResult<Workspace> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let row = sqlx::query_as::<_, WorkspaceRow>(
            "SELECT id, name, retention_days, created_at FROM workspaces WHERE id = $1",
        )
        .bind(workspace.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .ok_or(StoreError::NotFound("workspace"))?;
        commit(tx).await?;
        Ok(row.into())
    }

    async fn authenticate(&self, hash: &TokenHash) -> StoreResult<Option<Principal>> {
        #[derive(sqlx::FromRow)]
        struct Found {
            id: Uuid,
            workspace_id: Uuid,
            member_id: Uuid,
            last_used_at: Option<DateTime<Utc>>,
            revoked_at: Option<DateTime<Utc>>,
        }
        let mut tx = self.begin(Access::Read).await?;
        present_token(&mut tx, hash).await?;
        let Some(found) = sqlx::query_as::<_, Found>(
            "SELECT id, workspace_id, member_id, last_used_at, revoked_at FROM api_tokens \
             WHERE token_hash = $1",
        )
        .bind(&hash.0[..])
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        else {
            return Ok(None);
        };
        if found.revoked_at.is_some() {
            return Ok(None);
        }
        let workspace = WorkspaceId(found.workspace_id);
        enter_workspace(&mut tx, workspace).await?;
        let member = fetch_member(&mut tx, workspace, MemberId(found.member_id)).await?;
        commit(tx).await?;

        let now = now();
        if found
            .last_used_at
            .is_none_or(|t| (now - t).num_seconds() >= LAST_USED_GRANULARITY_SECS)
        {
            // Best effort: a busy database must not fail the request over a usage timestamp.
            let recorded = async {
                let mut tx = self.scoped(workspace, Access::Write).await?;
                sqlx::query(
                    "UPDATE api_tokens SET last_used_at = $1 WHERE workspace_id = $2 AND id = $3",
                )
                .bind(now)
                .bind(workspace.0)
                .bind(found.id)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                commit(tx).await
            };
            if let Err(error) = recorded.await {
                tracing::warn!(%error, "could not record a token's last use");
            }
        }
        Ok(Some(Principal {
            workspace_id: workspace,
            member_id: member.id,
            member_name: member.name,
            token_id: TokenId(found.id),
            role: member.role,
        }))
    }

    async fn list_members(
        &self,
        workspace: WorkspaceId,
        page: PageRequest,
    ) -> StoreResult<Page<Member>> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let rows = sqlx::query_as::<_, MemberRow>(AssertSqlSafe(format!(
            "SELECT {MEMBER_COLUMNS} FROM members WHERE workspace_id = $1 \
             AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
        )))
        .bind(workspace.0)
        .bind(page.cursor)
        .bind(page.fetch_limit())
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        commit(tx).await?;
        page_of(rows, &page, |m: &Member| m.id.0)
    }

    async fn get_member(&self, workspace: WorkspaceId, id: MemberId) -> StoreResult<Member> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let member = fetch_member(&mut tx, workspace, id).await?;
        commit(tx).await?;
        Ok(member)
    }

    async fn create_member(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        params: NewMember,
    ) -> StoreResult<Member> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let at = now();
        let member = Member {
            id: MemberId::new(),
            workspace_id: workspace,
            name: params.name,
            email: params.email,
            role: params.role,
            created_at: at,
            updated_at: at,
        };
        insert_member(&mut tx, &member).await?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry(
                "member.create",
                "member",
                member.id,
                None,
                snapshot(&member),
            ),
        )
        .await?;
        commit(tx).await?;
        Ok(member)
    }

    async fn update_member(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: MemberId,
        update: MemberUpdate,
    ) -> StoreResult<Member> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let owners = count_owners(&mut tx, workspace).await?;
        let before = fetch_member_locked(&mut tx, workspace, id, true).await?;
        let mut after = before.clone();
        if let Some(name) = update.name {
            after.name = name;
        }
        if let Some(email) = update.email {
            after.email = email;
        }
        if let Some(role) = update.role {
            after.role = role;
        }
        if before.role == Role::Owner && after.role != Role::Owner && owners <= 1 {
            return Err(StoreError::Conflict(
                "a workspace keeps at least one owner: make another member owner first".into(),
            ));
        }
        after.updated_at = now();
        sqlx::query(
            "UPDATE members SET name = $1, email = $2, role = $3, updated_at = $4 \
             WHERE workspace_id = $5 AND id = $6",
        )
        .bind(&after.name)
        .bind(&after.email)
        .bind(after.role.as_str())
        .bind(after.updated_at)
        .bind(workspace.0)
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry(
                "member.update",
                "member",
                id,
                snapshot(&before),
                snapshot(&after),
            ),
        )
        .await?;
        commit(tx).await?;
        Ok(after)
    }

    async fn delete_member(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: MemberId,
    ) -> StoreResult<()> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let owners = count_owners(&mut tx, workspace).await?;
        let before = fetch_member_locked(&mut tx, workspace, id, true).await?;
        if before.role == Role::Owner && owners <= 1 {
            return Err(StoreError::Conflict(
                "a workspace keeps at least one owner: the last owner cannot be removed".into(),
            ));
        }
        // The member's tokens go with it (cascade); each leaves an entry in the audit log.
        let tokens = sqlx::query_as::<_, TokenRow>(AssertSqlSafe(format!(
            "{TOKEN_SELECT} WHERE t.workspace_id = $1 AND t.member_id = $2 ORDER BY t.id"
        )))
        .bind(workspace.0)
        .bind(id.0)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        for row in tokens {
            let token = TokenRecord::try_from(row)?;
            audit(
                &mut tx,
                workspace,
                actor,
                entry("token.delete", "token", token.id, snapshot(&token), None),
            )
            .await?;
        }
        sqlx::query("DELETE FROM members WHERE workspace_id = $1 AND id = $2")
            .bind(workspace.0)
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry("member.delete", "member", id, snapshot(&before), None),
        )
        .await?;
        commit(tx).await
    }

    async fn create_token(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        params: NewToken,
    ) -> StoreResult<TokenRecord> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let member = fetch_member(&mut tx, workspace, params.member_id).await?;
        let token = TokenRecord {
            id: TokenId::new(),
            workspace_id: workspace,
            member_id: member.id,
            name: params.name,
            role: member.role,
            created_at: now(),
            last_used_at: None,
            revoked_at: None,
        };
        insert_token(&mut tx, &token, &params.hash).await?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry("token.create", "token", token.id, None, snapshot(&token)),
        )
        .await?;
        commit(tx).await?;
        Ok(token)
    }

    async fn create_member_with_token(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        member: NewMember,
        token_name: String,
        hash: TokenHash,
    ) -> StoreResult<(Member, TokenRecord)> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let exists: Option<Uuid> = sqlx::query_scalar("SELECT id FROM workspaces WHERE id = $1")
            .bind(workspace.0)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        if exists.is_none() {
            return Err(StoreError::NotFound("workspace"));
        }
        let at = now();
        let member = Member {
            id: MemberId::new(),
            workspace_id: workspace,
            name: member.name,
            email: member.email,
            role: member.role,
            created_at: at,
            updated_at: at,
        };
        insert_member(&mut tx, &member).await?;
        let token = TokenRecord {
            id: TokenId::new(),
            workspace_id: workspace,
            member_id: member.id,
            name: token_name,
            role: member.role,
            created_at: at,
            last_used_at: None,
            revoked_at: None,
        };
        insert_token(&mut tx, &token, &hash).await?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry(
                "member.create",
                "member",
                member.id,
                None,
                snapshot(&member),
            ),
        )
        .await?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry("token.create", "token", token.id, None, snapshot(&token)),
        )
        .await?;
        commit(tx).await?;
        Ok((member, token))
    }

    async fn list_tokens(
        &self,
        workspace: WorkspaceId,
        page: PageRequest,
    ) -> StoreResult<Page<TokenRecord>> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let rows = sqlx::query_as::<_, TokenRow>(AssertSqlSafe(format!(
            "{TOKEN_SELECT} WHERE t.workspace_id = $1 AND ($2 IS NULL OR t.id < $2) \
             ORDER BY t.id DESC LIMIT $3"
        )))
        .bind(workspace.0)
        .bind(page.cursor)
        .bind(page.fetch_limit())
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        commit(tx).await?;
        page_of(rows, &page, |t: &TokenRecord| t.id.0)
    }

    async fn get_token(&self, workspace: WorkspaceId, id: TokenId) -> StoreResult<TokenRecord> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let token = fetch_token(&mut tx, workspace, id).await?;
        commit(tx).await?;
        Ok(token)
    }

    async fn revoke_token(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: TokenId,
    ) -> StoreResult<TokenRecord> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let before = fetch_token(&mut tx, workspace, id).await?;
        if before.revoked_at.is_some() {
            commit(tx).await?;
            return Ok(before);
        }
        let mut after = before.clone();
        after.revoked_at = Some(now());
        let revoked = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE workspace_id = $2 AND id = $3 AND revoked_at IS NULL",
        )
        .bind(after.revoked_at)
        .bind(workspace.0)
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if revoked.rows_affected() == 0 {
            // Revoked meanwhile by someone else: nothing more to record.
            let current = fetch_token(&mut tx, workspace, id).await?;
            commit(tx).await?;
            return Ok(current);
        }
        audit(
            &mut tx,
            workspace,
            actor,
            entry(
                "token.revoke",
                "token",
                id,
                snapshot(&before),
                snapshot(&after),
            ),
        )
        .await?;
        commit(tx).await?;
        Ok(after)
    }

    async fn list_flows(
        &self,
        workspace: WorkspaceId,
        filter: FlowFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Flow>> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let rows = sqlx::query_as::<_, FlowRow>(AssertSqlSafe(format!(
            "SELECT {FLOW_COLUMNS} FROM flows WHERE workspace_id = $1 \
             AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
        )))
        .bind(workspace.0)
        .bind(filter.status.map(FlowStatus::as_str))
        .bind(page.cursor)
        .bind(page.fetch_limit())
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        commit(tx).await?;
        page_of(rows, &page, |f: &Flow| f.id.0)
    }

    async fn get_flow(&self, workspace: WorkspaceId, id: FlowId) -> StoreResult<Flow> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let flow = fetch_flow(&mut tx, workspace, id, false).await?;
        commit(tx).await?;
        Ok(flow)
    }

    async fn create_flow(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        params: NewFlow,
    ) -> StoreResult<Flow> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let at = now();
        let flow = Flow {
            id: FlowId::new(),
            workspace_id: workspace,
            name: params.name,
            description: params.description,
            status: FlowStatus::Draft,
            version: 0,
            graph: params.graph,
            schedule: params.schedule.as_ref().map(|p| p.schedule.clone()),
            next_fire_at: params.schedule.as_ref().and_then(|p| p.next_fire_at),
            triggers: params.triggers,
            webhook: false,
            created_at: at,
            updated_at: at,
        };
        sqlx::query(
            "INSERT INTO flows (id, workspace_id, name, description, status, version, graph, \
             schedule, next_fire_at, created_at, updated_at, triggers) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(flow.id.0)
        .bind(workspace.0)
        .bind(&flow.name)
        .bind(&flow.description)
        .bind(flow.status.as_str())
        .bind(flow.version)
        .bind(Json(&flow.graph))
        .bind(flow.schedule.as_ref().map(Json))
        .bind(flow.next_fire_at)
        .bind(at)
        .bind(at)
        .bind(Json(&flow.triggers))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry("flow.create", "flow", flow.id, None, snapshot(&flow)),
        )
        .await?;
        commit(tx).await?;
        Ok(flow)
    }

    async fn update_flow(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: FlowId,
        update: FlowUpdate,
    ) -> StoreResult<Flow> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let before = fetch_flow(&mut tx, workspace, id, true).await?;
        let mut after = before.clone();
        if let Some(name) = update.name {
            after.name = name;
        }
        if let Some(description) = update.description {
            after.description = description;
        }
        if let Some(status) = update.status {
            after.status = status;
        }
        if let Some(planned) = update.schedule {
            after.schedule = planned.as_ref().map(|p| p.schedule.clone());
            after.next_fire_at = planned.and_then(|p| p.next_fire_at);
        }
        if let Some(triggers) = update.triggers {
            after.triggers = triggers;
        }
        if let Some(graph) = update.graph {
            let used: Vec<String> = sqlx::query_scalar(
                "SELECT DISTINCT node_id FROM flow_actions WHERE workspace_id = $2 AND flow_id = $1",
            )
            .bind(id.0)
            .bind(workspace.0)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
            // Named in the old graph's order, the same on both backends.
            let orphaned: Vec<&String> = before
                .graph
                .nodes
                .iter()
                .map(|n| &n.id)
                .filter(|n| used.contains(n) && !graph.has_node(n))
                .collect();
            if !orphaned.is_empty() {
                return Err(StoreError::Conflict(format!(
                    "the new graph drops node(s) {} that still hold actions: move or delete those actions first",
                    orphaned
                        .iter()
                        .map(|n| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            after.graph = graph;
        }
        after.updated_at = now();
        sqlx::query(
            "UPDATE flows SET name = $1, description = $2, status = $3, graph = $4, updated_at = $5, \
             schedule = $8, next_fire_at = $9, triggers = $10 WHERE workspace_id = $6 AND id = $7",
        )
        .bind(&after.name)
        .bind(&after.description)
        .bind(after.status.as_str())
        .bind(Json(&after.graph))
        .bind(after.updated_at)
        .bind(workspace.0)
        .bind(id.0)
        .bind(after.schedule.as_ref().map(Json))
        .bind(after.next_fire_at)
        .bind(Json(&after.triggers))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry(
                "flow.update",
                "flow",
                id,
                snapshot(&before),
                snapshot(&after),
            ),
        )
        .await?;
        commit(tx).await?;
        Ok(after)
    }

    async fn delete_flow(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: FlowId,
    ) -> StoreResult<()> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let before = fetch_flow(&mut tx, workspace, id, true).await?;
        let runs: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM flow_executions WHERE workspace_id = $1 AND flow_id = $2",
        )
        .bind(workspace.0)
        .bind(id.0)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        if runs > 0 {
            return Err(StoreError::Conflict(format!(
                "flow has {runs} run(s) whose history would be lost: archive it instead"
            )));
        }
        // Its actions go with it (cascade); each leaves an entry in the audit log.
        let actions = sqlx::query_as::<_, ActionRow>(AssertSqlSafe(format!(
            "SELECT {ACTION_COLUMNS} FROM flow_actions WHERE workspace_id = $1 AND flow_id = $2 ORDER BY id"
        )))
        .bind(workspace.0)
        .bind(id.0)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        for row in actions {
            let action = FlowAction::try_from(row)?;
            audit(
                &mut tx,
                workspace,
                actor,
                entry(
                    "action.delete",
                    "action",
                    action.id,
                    snapshot(&action),
                    None,
                ),
            )
            .await?;
        }
        sqlx::query("DELETE FROM flows WHERE workspace_id = $1 AND id = $2")
            .bind(workspace.0)
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry("flow.delete", "flow", id, snapshot(&before), None),
        )
        .await?;
        commit(tx).await
    }

    async fn list_actions(
        &self,
        workspace: WorkspaceId,
        flow: FlowId,
    ) -> StoreResult<Vec<FlowAction>> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        fetch_flow(&mut tx, workspace, flow, false).await?;
        let rows = sqlx::query_as::<_, ActionRow>(AssertSqlSafe(format!(
            "SELECT {ACTION_COLUMNS} FROM flow_actions WHERE workspace_id = $1 AND flow_id = $2 \
             ORDER BY node_id, position, id"
        )))
        .bind(workspace.0)
        .bind(flow.0)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        commit(tx).await?;
        let mut actions = rows
            .into_iter()
            .map(FlowAction::try_from)
            .collect::<StoreResult<Vec<_>>>()?;
        // Byte order, so both backends list alike whatever the database's collation.
        sort_actions(&mut actions, |a| (&a.node_id, a.position, a.id));
        Ok(actions)
    }

    async fn get_action(&self, workspace: WorkspaceId, id: ActionId) -> StoreResult<FlowAction> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let action = fetch_action(&mut tx, workspace, id).await?;
        commit(tx).await?;
        Ok(action)
    }

    async fn create_action(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        params: NewAction,
    ) -> StoreResult<FlowAction> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let flow = fetch_flow(&mut tx, workspace, params.flow_id, true).await?;
        require_node(&flow, &params.node_id)?;
        let total: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM flow_actions WHERE workspace_id = $2 AND flow_id = $1",
        )
        .bind(flow.id.0)
        .bind(workspace.0)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        if total >= MAX_ACTIONS_PER_FLOW {
            return Err(StoreError::Conflict(format!(
                "a flow holds at most {MAX_ACTIONS_PER_FLOW} actions"
            )));
        }
        let count = node_action_count(&mut tx, workspace, flow.id, &params.node_id).await?;
        let position = params.position.map_or(count, |p| p.clamp(0, count));
        shift_positions(
            &mut tx,
            workspace,
            flow.id,
            &params.node_id,
            position,
            1,
            None,
        )
        .await?;
        let at = now();
        let action = FlowAction {
            id: ActionId::new(),
            workspace_id: workspace,
            flow_id: flow.id,
            node_id: params.node_id,
            action_type: params.action_type,
            action_config: params.action_config,
            name: params.name,
            position,
            enabled: params.enabled,
            retry: params.retry,
            timeout_ms: params.timeout_ms,
            created_at: at,
            updated_at: at,
        };
        sqlx::query(
            "INSERT INTO flow_actions (id, workspace_id, flow_id, node_id, action_type, action_config, \
             name, position, enabled, retry, timeout_ms, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(action.id.0)
        .bind(workspace.0)
        .bind(flow.id.0)
        .bind(&action.node_id)
        .bind(action.action_type.as_str())
        .bind(Json(&action.action_config))
        .bind(&action.name)
        .bind(action.position)
        .bind(action.enabled)
        .bind(retry_json(&action.retry))
        .bind(action.timeout_ms)
        .bind(at)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry(
                "action.create",
                "action",
                action.id,
                None,
                snapshot(&action),
            ),
        )
        .await?;
        commit(tx).await?;
        Ok(action)
    }

    async fn update_action(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        flow: FlowId,
        id: ActionId,
        update: ActionUpdate,
    ) -> StoreResult<FlowAction> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let flow = fetch_flow(&mut tx, workspace, flow, true).await?;
        let before = fetch_action(&mut tx, workspace, id).await?;
        if before.flow_id != flow.id {
            return Err(StoreError::NotFound("action"));
        }
        if update
            .expected_type
            .is_some_and(|t| t != before.action_type)
        {
            return Err(StoreError::Conflict(format!(
                "the action was changed to `{}` meanwhile: reload it and try again",
                before.action_type
            )));
        }
        let mut after = before.clone();
        if let Some(node) = update.node_id {
            require_node(&flow, &node)?;
            after.node_id = node;
        }
        if let Some(t) = update.action_type {
            after.action_type = t;
        }
        if let Some(config) = update.action_config {
            after.action_config = config;
        }
        if let Some(name) = update.name {
            after.name = name;
        }
        if let Some(enabled) = update.enabled {
            after.enabled = enabled;
        }
        if let Some(retry) = update.retry {
            after.retry = retry;
        }
        if let Some(timeout) = update.timeout_ms {
            after.timeout_ms = timeout;
        }
        let moved = after.node_id != before.node_id
            || update.position.is_some_and(|p| p != before.position);
        if moved {
            // Take it out of its old place, then open a gap at the new one.
            shift_positions(
                &mut tx,
                workspace,
                flow.id,
                &before.node_id,
                before.position + 1,
                -1,
                Some(id),
            )
            .await?;
            let count = node_action_count(&mut tx, workspace, flow.id, &after.node_id).await?
                - i32::from(after.node_id == before.node_id);
            let position = update.position.map_or(count, |p| p.clamp(0, count));
            shift_positions(
                &mut tx,
                workspace,
                flow.id,
                &after.node_id,
                position,
                1,
                Some(id),
            )
            .await?;
            after.position = position;
        }
        after.updated_at = now();
        sqlx::query(
            "UPDATE flow_actions SET node_id = $1, action_type = $2, action_config = $3, name = $4, \
             position = $5, enabled = $6, retry = $7, timeout_ms = $8, updated_at = $9 \
             WHERE workspace_id = $10 AND id = $11",
        )
        .bind(&after.node_id)
        .bind(after.action_type.as_str())
        .bind(Json(&after.action_config))
        .bind(&after.name)
        .bind(after.position)
        .bind(after.enabled)
        .bind(retry_json(&after.retry))
        .bind(after.timeout_ms)
        .bind(after.updated_at)
        .bind(workspace.0)
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry(
                "action.update",
                "action",
                id,
                snapshot(&before),
                snapshot(&after),
            ),
        )
        .await?;
        commit(tx).await?;
        Ok(after)
    }

    async fn delete_action(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        flow: FlowId,
        id: ActionId,
        expected_type: Option<ActionType>,
    ) -> StoreResult<()> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let flow = fetch_flow(&mut tx, workspace, flow, true).await?;
        let before = fetch_action(&mut tx, workspace, id).await?;
        if before.flow_id != flow.id {
            return Err(StoreError::NotFound("action"));
        }
        if expected_type.is_some_and(|t| t != before.action_type) {
            return Err(StoreError::Conflict(format!(
                "the action was changed to `{}` meanwhile: reload it and try again",
                before.action_type
            )));
        }
        sqlx::query("DELETE FROM flow_actions WHERE workspace_id = $1 AND id = $2")
            .bind(workspace.0)
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        shift_positions(
            &mut tx,
            workspace,
            flow.id,
            &before.node_id,
            before.position + 1,
            -1,
            None,
        )
        .await?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry("action.delete", "action", id, snapshot(&before), None),
        )
        .await?;
        commit(tx).await
    }

    async fn list_action_executions(
        &self,
        workspace: WorkspaceId,
        action: ActionId,
        page: PageRequest,
    ) -> StoreResult<Page<StepSummary>> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        fetch_action(&mut tx, workspace, action).await?;
        let rows = sqlx::query_as::<_, StepRow>(
            "SELECT id, flow_execution_id, action_id, action_type, status, attempt, max_attempts, \
             error_category, error, created_at, started_at, finished_at FROM action_executions \
             WHERE workspace_id = $1 AND action_id = $2 AND ($3 IS NULL OR id < $3) \
             ORDER BY id DESC LIMIT $4",
        )
        .bind(workspace.0)
        .bind(action.0)
        .bind(page.cursor)
        .bind(page.fetch_limit())
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        commit(tx).await?;
        page_of(rows, &page, |s: &StepSummary| s.id.0)
    }

    async fn record_audit(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        entry: NewAuditEntry,
    ) -> StoreResult<()> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        audit(&mut tx, workspace, actor, entry).await?;
        commit(tx).await
    }

    async fn list_audit(
        &self,
        workspace: WorkspaceId,
        filter: AuditFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AuditEntry>> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let rows = sqlx::query_as::<_, AuditRow>(
            "SELECT id, workspace_id, actor_member_id, actor_token_id, actor_label, action, \
             entity_type, entity_id, before, after, created_at FROM audit_log \
             WHERE workspace_id = $1 AND ($2 IS NULL OR entity_type = $2) \
             AND ($3 IS NULL OR entity_id = $3) AND ($4 IS NULL OR actor_member_id = $4) \
             AND ($5 IS NULL OR id < $5) ORDER BY id DESC LIMIT $6",
        )
        .bind(workspace.0)
        .bind(filter.entity_type)
        .bind(filter.entity_id)
        .bind(filter.actor_member_id.map(|m| m.0))
        .bind(page.cursor)
        .bind(page.fetch_limit())
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        commit(tx).await?;
        let entries: Vec<AuditEntry> = rows.into_iter().map(AuditEntry::from).collect();
        Ok(Page::from_rows(entries, &page, |e| e.id.0))
    }

    async fn start_executions(
        &self,
        workspace: WorkspaceId,
        runs: Vec<NewExecution>,
    ) -> StoreResult<Vec<ExecutionId>> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let ids = sql_execution::start_executions(&mut tx, workspace, &runs).await?;
        commit(tx).await?;
        if runs.iter().any(|r| r.first_step.is_some()) {
            self.notify_work(None);
        }
        Ok(ids)
    }

    async fn set_webhook_token(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        flow: FlowId,
        hash: Option<TokenHash>,
    ) -> StoreResult<Flow> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let flow = sql_execution::set_webhook_token(&mut tx, workspace, actor, flow, hash).await?;
        commit(tx).await?;
        Ok(flow)
    }

    async fn find_webhook(
        &self,
        flow: FlowId,
        hash: &TokenHash,
    ) -> StoreResult<Option<WorkspaceId>> {
        let mut tx = self.begin(Access::Read).await?;
        present_token(&mut tx, hash).await?;
        let workspace: Option<Uuid> = sqlx::query_scalar(
            "SELECT workspace_id FROM flows WHERE id = $1 AND webhook_token_hash = $2",
        )
        .bind(flow.0)
        .bind(&hash.0[..])
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        commit(tx).await?;
        Ok(workspace.map(WorkspaceId))
    }

    async fn due_schedules(
        &self,
        limit: u32,
    ) -> StoreResult<Vec<flowline_store::execution::DueSchedule>> {
        let mut tx = self.begin(Access::Read).await?;
        enter_engine_scope(&mut tx).await?;
        let due = sql_execution::due_schedules(&mut tx, limit).await?;
        commit(tx).await?;
        Ok(due)
    }

    async fn advance_schedule(
        &self,
        workspace: WorkspaceId,
        flow: FlowId,
        slot: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
        run: Option<NewExecution>,
    ) -> StoreResult<bool> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let advanced =
            sql_execution::advance_schedule(&mut tx, workspace, flow, slot, next, run).await?;
        commit(tx).await?;
        if advanced {
            self.notify_work(None);
        }
        Ok(advanced)
    }

    async fn publish_flow(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: FlowId,
    ) -> StoreResult<Flow> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let flow = sql_execution::publish_flow(&mut tx, workspace, actor, id).await?;
        commit(tx).await?;
        Ok(flow)
    }

    async fn get_flow_version(
        &self,
        workspace: WorkspaceId,
        flow: FlowId,
        version: i32,
    ) -> StoreResult<FlowVersion> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let version = sql_execution::fetch_flow_version(&mut tx, workspace, flow, version).await?;
        commit(tx).await?;
        Ok(version)
    }

    async fn start_execution(
        &self,
        workspace: WorkspaceId,
        params: NewExecution,
    ) -> StoreResult<flowline_store::execution::Started> {
        let queue = params
            .first_step
            .as_ref()
            .map(|step| step.action_type.category().queue());
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let execution = sql_execution::start_execution(&mut tx, workspace, params).await?;
        commit(tx).await?;
        if queue.is_some() {
            self.notify_work(queue);
        }
        Ok(execution)
    }

    async fn get_execution(
        &self,
        workspace: WorkspaceId,
        id: ExecutionId,
    ) -> StoreResult<ExecutionDetail> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let detail = sql_execution::execution_detail(&mut tx, workspace, id).await?;
        commit(tx).await?;
        Ok(detail)
    }

    async fn list_executions(
        &self,
        workspace: WorkspaceId,
        flow: FlowId,
        page: PageRequest,
    ) -> StoreResult<Page<Execution>> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let executions = sql_execution::list_executions(&mut tx, workspace, flow, page).await?;
        commit(tx).await?;
        Ok(executions)
    }

    async fn cancel_execution(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: ExecutionId,
    ) -> StoreResult<Execution> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let execution = sql_execution::cancel_execution(&mut tx, workspace, actor, id).await?;
        commit(tx).await?;
        self.notify_cancel();
        Ok(execution)
    }

    async fn retry_execution(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: ExecutionId,
    ) -> StoreResult<Execution> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let execution = sql_execution::retry_execution(&mut tx, workspace, actor, id).await?;
        commit(tx).await?;
        self.notify_work(None);
        Ok(execution)
    }

    async fn execution_variables(
        &self,
        workspace: WorkspaceId,
        id: ExecutionId,
    ) -> StoreResult<Vec<Variable>> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let variables = sql_execution::fetch_variables(&mut tx, workspace, id).await?;
        commit(tx).await?;
        Ok(variables)
    }

    async fn claim_steps(&self, params: &ClaimParams) -> StoreResult<Vec<ClaimedStep>> {
        self.write_claim(params).await
    }

    async fn heartbeat_steps(
        &self,
        held: &[(StepId, uuid::Uuid)],
        lease: std::time::Duration,
    ) -> StoreResult<Vec<StepId>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin(Access::Write).await?;
        enter_engine_scope(&mut tx).await?;
        let lost = sql_execution::heartbeat(&mut tx, held, lease).await?;
        commit(tx).await?;
        Ok(lost)
    }

    async fn finish_shared(
        &self,
        params: std::sync::Arc<FinishStep>,
    ) -> StoreResult<FinishOutcome> {
        let queues_more = params.result.queues_work();
        let queue = params.result.next_queue();
        let outcome = self.write_finish(params).await?;
        // A step handed on is already claimed: no other worker needs to look.
        if queues_more && outcome == FinishOutcome::Applied {
            self.notify_work(queue);
        }
        Ok(outcome)
    }

    async fn rescue_expired(&self, limit: u32) -> StoreResult<u64> {
        let mut tx = self.begin(Access::Write).await?;
        enter_engine_scope(&mut tx).await?;
        let rescued = sql_execution::rescue_expired(&mut tx, limit).await?;
        commit(tx).await?;
        if rescued > 0 {
            self.notify_work(None);
        }
        Ok(rescued)
    }
}
