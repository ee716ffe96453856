//! The CRM SQL both storage backends share: contacts, tags, agents, campaigns, boards and
//! backups, the changes the basic actions make, and the event triggers those changes fire.
//!
//! Compiled into both backends like `sql_store.rs`. Every change that raises an event starts
//! the runs the event triggers in the same transaction, so a committed change never loses its
//! runs and a rolled-back one starts none.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flowline_core::action::basic::{AssignStrategy, DeleteMode, Priority};
use flowline_core::crm::{
    CampaignStatus, ContactEvent, EventKind, EventTrigger, MAX_EVENT_DEPTH, SubscriptionStatus,
};
use flowline_core::id::{
    AgentId, BackupId, BoardId, CampaignId, ColumnId, ContactId, ExecutionId, StepId, TagId,
    WorkspaceId,
};
use flowline_core::status::{ErrorCategory, Severity, TriggerKind};
use flowline_core::validation::ValidationErrors;
use flowline_store::crm::{
    Agent, AgentChoice, AgentUpdate, Assignment, Board, BoardColumn, BoardMove, Campaign, Card,
    Cause, ColumnSpec, Contact, ContactBackup, ContactDetail, ContactFilter, ContactUpdate,
    CrmStore, Moved, NewAgent, NewContact, RunPlanner, StepTransaction, Subscribed, Subscription,
    Tag, TagAdded,
};
use flowline_store::execution::{Execution, FinishOutcome, FinishStep, NewExecution, StepError};
use flowline_store::page::{Page, PageRequest};
use flowline_store::tenancy::Actor;
use flowline_store::{StoreError, StoreResult};
use serde_json::{Value, json};
use sqlx::AssertSqlSafe;
use sqlx::types::Json;
use uuid::Uuid;

use crate::backend::{FOR_UPDATE, StoreImpl, enter_workspace};
use crate::sql_execution;
use crate::sql_store::{
    Access, Tx, audit, commit, corrupt, db_error, entry, now, page_of, snapshot,
};

// ---- rows ------------------------------------------------------------------------------------

#[derive(sqlx::FromRow)]
struct ContactRow {
    id: Uuid,
    workspace_id: Uuid,
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    company: Option<String>,
    attributes: Json<Value>,
    assigned_agent_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<ContactRow> for Contact {
    type Error = StoreError;
    fn try_from(r: ContactRow) -> StoreResult<Self> {
        Ok(Contact {
            id: r.id.into(),
            workspace_id: r.workspace_id.into(),
            name: r.name,
            email: r.email,
            phone: r.phone,
            company: r.company,
            attributes: r.attributes.0,
            assigned_agent_id: r.assigned_agent_id.map(Into::into),
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

const CONTACT_COLUMNS: &str = "c.id, c.workspace_id, c.name, c.email, c.phone, c.company, c.attributes, \
     c.assigned_agent_id, c.created_at, c.updated_at";

#[derive(sqlx::FromRow)]
struct TagRow {
    id: Uuid,
    workspace_id: Uuid,
    name: String,
    color: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<TagRow> for Tag {
    type Error = StoreError;
    fn try_from(r: TagRow) -> StoreResult<Self> {
        Ok(Tag {
            id: r.id.into(),
            workspace_id: r.workspace_id.into(),
            name: r.name,
            color: r.color,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

const TAG_COLUMNS: &str = "t.id, t.workspace_id, t.name, t.color, t.created_at, t.updated_at";

#[derive(sqlx::FromRow)]
struct AgentRow {
    id: Uuid,
    workspace_id: Uuid,
    name: String,
    email: Option<String>,
    active: bool,
    capacity: i32,
    load: i64,
    assigned_count: i64,
    rotation: i64,
    last_assigned_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<AgentRow> for Agent {
    type Error = StoreError;
    fn try_from(r: AgentRow) -> StoreResult<Self> {
        Ok(Agent {
            id: r.id.into(),
            workspace_id: r.workspace_id.into(),
            name: r.name,
            email: r.email,
            active: r.active,
            capacity: r.capacity,
            load: r.load,
            assigned_count: r.assigned_count,
            last_assigned_at: r.last_assigned_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

const AGENT_SELECT: &str = "SELECT a.id, a.workspace_id, a.name, a.email, a.active, a.capacity, \
     (SELECT count(*) FROM contacts c WHERE c.workspace_id = a.workspace_id \
       AND c.assigned_agent_id = a.id AND c.deleted_at IS NULL) AS load, \
     CAST(a.assigned_count AS BIGINT) AS assigned_count, CAST(a.rotation AS BIGINT) AS rotation, \
     a.last_assigned_at, a.created_at, a.updated_at FROM agents a";

#[derive(sqlx::FromRow)]
struct AssignmentRow {
    id: Uuid,
    contact_id: Uuid,
    agent_id: Uuid,
    priority: String,
    strategy: Option<String>,
    execution_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    released_at: Option<DateTime<Utc>>,
}

impl TryFrom<AssignmentRow> for Assignment {
    type Error = StoreError;
    fn try_from(r: AssignmentRow) -> StoreResult<Self> {
        Ok(Assignment {
            id: r.id.into(),
            contact_id: r.contact_id.into(),
            agent_id: r.agent_id.into(),
            priority: r.priority.parse().map_err(|e| corrupt("priority", e))?,
            strategy: r
                .strategy
                .map(|s| s.parse::<AssignStrategy>())
                .transpose()
                .map_err(|e| corrupt("strategy", e))?,
            execution_id: r.execution_id.map(Into::into),
            created_at: r.created_at,
            released_at: r.released_at,
        })
    }
}

const ASSIGNMENT_COLUMNS: &str =
    "id, contact_id, agent_id, priority, strategy, execution_id, created_at, released_at";

#[derive(sqlx::FromRow)]
struct CampaignRow {
    id: Uuid,
    workspace_id: Uuid,
    name: String,
    status: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<CampaignRow> for Campaign {
    type Error = StoreError;
    fn try_from(r: CampaignRow) -> StoreResult<Self> {
        Ok(Campaign {
            id: r.id.into(),
            workspace_id: r.workspace_id.into(),
            name: r.name,
            status: r
                .status
                .parse()
                .map_err(|e| corrupt("campaign status", e))?,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

const CAMPAIGN_COLUMNS: &str = "id, workspace_id, name, status, created_at, updated_at";

#[derive(sqlx::FromRow)]
struct SubscriptionRow {
    id: Uuid,
    campaign_id: Uuid,
    contact_id: Uuid,
    status: String,
    subscribed_at: DateTime<Utc>,
    unsubscribed_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<SubscriptionRow> for Subscription {
    type Error = StoreError;
    fn try_from(r: SubscriptionRow) -> StoreResult<Self> {
        Ok(Subscription {
            id: r.id.into(),
            campaign_id: r.campaign_id.into(),
            contact_id: r.contact_id.into(),
            status: r
                .status
                .parse()
                .map_err(|e| corrupt("subscription status", e))?,
            subscribed_at: r.subscribed_at,
            unsubscribed_at: r.unsubscribed_at,
            updated_at: r.updated_at,
        })
    }
}

const SUBSCRIPTION_COLUMNS: &str =
    "id, campaign_id, contact_id, status, subscribed_at, unsubscribed_at, updated_at";

#[derive(sqlx::FromRow)]
struct CardRow {
    id: Uuid,
    board_id: Uuid,
    column_id: Uuid,
    contact_id: Uuid,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<CardRow> for Card {
    type Error = StoreError;
    fn try_from(r: CardRow) -> StoreResult<Self> {
        Ok(Card {
            id: r.id.into(),
            board_id: r.board_id.into(),
            column_id: r.column_id.into(),
            contact_id: r.contact_id.into(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

const CARD_COLUMNS: &str =
    "k.id, k.board_id, k.column_id, k.contact_id, k.created_at, k.updated_at";

#[derive(sqlx::FromRow)]
struct MoveRow {
    id: Uuid,
    board_id: Uuid,
    contact_id: Uuid,
    from_column_id: Option<Uuid>,
    to_column_id: Option<Uuid>,
    execution_id: Option<Uuid>,
    created_at: DateTime<Utc>,
}

impl TryFrom<MoveRow> for BoardMove {
    type Error = StoreError;
    fn try_from(r: MoveRow) -> StoreResult<Self> {
        Ok(BoardMove {
            id: r.id.into(),
            board_id: r.board_id.into(),
            contact_id: r.contact_id.into(),
            from_column_id: r.from_column_id.map(Into::into),
            to_column_id: r.to_column_id.map(Into::into),
            execution_id: r.execution_id.map(Into::into),
            created_at: r.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct BackupRow {
    id: Uuid,
    contact_id: Uuid,
    mode: String,
    snapshot: Json<Value>,
    execution_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    restored_at: Option<DateTime<Utc>>,
}

impl TryFrom<BackupRow> for ContactBackup {
    type Error = StoreError;
    fn try_from(r: BackupRow) -> StoreResult<Self> {
        Ok(ContactBackup {
            id: r.id.into(),
            contact_id: r.contact_id.into(),
            mode: r.mode.parse().map_err(|e| corrupt("delete mode", e))?,
            snapshot: r.snapshot.0,
            execution_id: r.execution_id.map(Into::into),
            created_at: r.created_at,
            restored_at: r.restored_at,
        })
    }
}

const BACKUP_COLUMNS: &str =
    "id, contact_id, mode, snapshot, execution_id, created_at, restored_at";

// ---- reads -----------------------------------------------------------------------------------

fn lock_clause(lock: bool) -> &'static str {
    if lock { FOR_UPDATE } else { "" }
}

/// A live contact; locked (on PostgreSQL) when `lock`, so changes to one contact apply one
/// after the other.
async fn fetch_contact(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    id: ContactId,
    lock: bool,
) -> StoreResult<Contact> {
    sqlx::query_as::<_, ContactRow>(AssertSqlSafe(format!(
        "SELECT {CONTACT_COLUMNS} FROM contacts c WHERE c.workspace_id = $1 AND c.id = $2 \
         AND c.deleted_at IS NULL {}",
        lock_clause(lock)
    )))
    .bind(workspace.0)
    .bind(id.0)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?
    .ok_or(StoreError::NotFound("contact"))?
    .try_into()
}

async fn contact_tags(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    id: ContactId,
) -> StoreResult<Vec<Tag>> {
    let rows = sqlx::query_as::<_, TagRow>(AssertSqlSafe(format!(
        "SELECT {TAG_COLUMNS} FROM tags t JOIN contact_tags ct ON ct.tag_id = t.id \
         WHERE ct.workspace_id = $1 AND ct.contact_id = $2 ORDER BY lower(t.name), t.id"
    )))
    .bind(workspace.0)
    .bind(id.0)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    rows.into_iter().map(Tag::try_from).collect()
}

async fn contact_detail(tx: &mut Tx<'_>, contact: Contact) -> StoreResult<ContactDetail> {
    let (workspace, id) = (contact.workspace_id, contact.id);
    let tags = contact_tags(tx, workspace, id).await?;
    let assignments = sqlx::query_as::<_, AssignmentRow>(AssertSqlSafe(format!(
        "SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE workspace_id = $1 AND contact_id = $2 \
         ORDER BY id DESC"
    )))
    .bind(workspace.0)
    .bind(id.0)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?
    .into_iter()
    .map(Assignment::try_from)
    .collect::<StoreResult<Vec<_>>>()?;
    let subscriptions = sqlx::query_as::<_, SubscriptionRow>(AssertSqlSafe(format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE workspace_id = $1 AND contact_id = $2 \
         ORDER BY id"
    )))
    .bind(workspace.0)
    .bind(id.0)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?
    .into_iter()
    .map(Subscription::try_from)
    .collect::<StoreResult<Vec<_>>>()?;
    let cards = sqlx::query_as::<_, CardRow>(AssertSqlSafe(format!(
        "SELECT {CARD_COLUMNS} FROM board_cards k WHERE k.workspace_id = $1 AND k.contact_id = $2 \
         ORDER BY k.id"
    )))
    .bind(workspace.0)
    .bind(id.0)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?
    .into_iter()
    .map(Card::try_from)
    .collect::<StoreResult<Vec<_>>>()?;
    Ok(ContactDetail {
        contact,
        tags,
        assignments,
        subscriptions,
        cards,
    })
}

/// The contact as templates see it: its fields, its tags by name, its agent.
async fn contact_context_in(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    id: ContactId,
) -> StoreResult<Option<Value>> {
    let contact = match fetch_contact(tx, workspace, id, false).await {
        Ok(c) => c,
        Err(StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let tags: Vec<String> = contact_tags(tx, workspace, id)
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect();
    Ok(Some(json!({
        "id": contact.id,
        "name": contact.name,
        "email": contact.email,
        "phone": contact.phone,
        "company": contact.company,
        "attributes": contact.attributes,
        "tags": tags,
        "assignedAgentId": contact.assigned_agent_id,
        "createdAt": contact.created_at,
    })))
}

async fn fetch_tag(tx: &mut Tx<'_>, workspace: WorkspaceId, id: TagId) -> StoreResult<Tag> {
    sqlx::query_as::<_, TagRow>(AssertSqlSafe(format!(
        "SELECT {TAG_COLUMNS} FROM tags t WHERE t.workspace_id = $1 AND t.id = $2"
    )))
    .bind(workspace.0)
    .bind(id.0)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?
    .ok_or(StoreError::NotFound("tag"))?
    .try_into()
}

async fn fetch_tag_named(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    name: &str,
) -> StoreResult<Option<Tag>> {
    sqlx::query_as::<_, TagRow>(AssertSqlSafe(format!(
        "SELECT {TAG_COLUMNS} FROM tags t WHERE t.workspace_id = $1 AND lower(t.name) = lower($2)"
    )))
    .bind(workspace.0)
    .bind(name)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?
    .map(Tag::try_from)
    .transpose()
}

async fn fetch_agent(tx: &mut Tx<'_>, workspace: WorkspaceId, id: AgentId) -> StoreResult<Agent> {
    sqlx::query_as::<_, AgentRow>(AssertSqlSafe(format!(
        "{AGENT_SELECT} WHERE a.workspace_id = $1 AND a.id = $2"
    )))
    .bind(workspace.0)
    .bind(id.0)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?
    .ok_or(StoreError::NotFound("agent"))?
    .try_into()
}

async fn fetch_campaign(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    id: CampaignId,
) -> StoreResult<Campaign> {
    sqlx::query_as::<_, CampaignRow>(AssertSqlSafe(format!(
        "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE workspace_id = $1 AND id = $2"
    )))
    .bind(workspace.0)
    .bind(id.0)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?
    .ok_or(StoreError::NotFound("campaign"))?
    .try_into()
}

async fn fetch_board(tx: &mut Tx<'_>, workspace: WorkspaceId, id: BoardId) -> StoreResult<Board> {
    #[derive(sqlx::FromRow)]
    struct Row {
        id: Uuid,
        workspace_id: Uuid,
        name: String,
        created_at: DateTime<Utc>,
        updated_at: DateTime<Utc>,
    }
    let row = sqlx::query_as::<_, Row>(
        "SELECT id, workspace_id, name, created_at, updated_at FROM boards WHERE workspace_id = $1 AND id = $2",
    )
    .bind(workspace.0)
    .bind(id.0)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?
    .ok_or(StoreError::NotFound("board"))?;
    let columns: Vec<(Uuid, String, i32)> = sqlx::query_as(
        "SELECT id, name, position FROM board_columns WHERE workspace_id = $1 AND board_id = $2 \
         ORDER BY position, id",
    )
    .bind(workspace.0)
    .bind(id.0)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(Board {
        id: row.id.into(),
        workspace_id: row.workspace_id.into(),
        name: row.name,
        columns: columns
            .into_iter()
            .map(|(id, name, position)| BoardColumn {
                id: id.into(),
                name,
                position,
            })
            .collect(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

async fn fetch_backup(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    id: BackupId,
    lock: bool,
) -> StoreResult<ContactBackup> {
    sqlx::query_as::<_, BackupRow>(AssertSqlSafe(format!(
        "SELECT {BACKUP_COLUMNS} FROM contact_backups WHERE workspace_id = $1 AND id = $2 {}",
        lock_clause(lock)
    )))
    .bind(workspace.0)
    .bind(id.0)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?
    .ok_or(StoreError::NotFound("contact backup"))?
    .try_into()
}

/// Refuses an email another live contact already has (ignoring case).
async fn check_email_free(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    email: &str,
    except: Option<ContactId>,
) -> StoreResult<()> {
    let taken: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM contacts WHERE workspace_id = $1 AND deleted_at IS NULL \
         AND lower(email) = lower($2) AND ($3 IS NULL OR id <> $3) LIMIT 1",
    )
    .bind(workspace.0)
    .bind(email)
    .bind(except.map(|c| c.0))
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    match taken {
        Some(other) => Err(StoreError::Conflict(format!(
            "contact {other} already has the email `{email}`"
        ))),
        None => Ok(()),
    }
}

// ---- events ----------------------------------------------------------------------------------

/// Starts, in this transaction, the runs of every active flow with a trigger matching `event`.
/// A run that would be deeper than [`MAX_EVENT_DEPTH`] is written failed instead, and so is one
/// whose first step cannot be chosen: the change that raised the event commits either way.
/// Returns whether any step was queued.
async fn raise(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    planner: &Arc<dyn RunPlanner>,
    event: &ContactEvent,
    cause: Cause,
) -> StoreResult<bool> {
    let flows: Vec<(Uuid, i32, Json<Vec<EventTrigger>>)> = sqlx::query_as(
        "SELECT id, version, triggers FROM flows WHERE workspace_id = $1 AND status = 'active' \
         AND version > 0 AND triggers <> '[]' ORDER BY id",
    )
    .bind(workspace.0)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    let depth = cause.depth + 1;
    let mut queued = false;
    for (flow, version, triggers) in flows {
        if !triggers.0.iter().any(|t| t.matches(event)) {
            continue;
        }
        let mut trigger = serde_json::to_value(event).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut trigger {
            map.insert("depth".into(), json!(depth));
            map.insert("causedBy".into(), json!(cause.execution_id));
        }
        let stopped = |message: String, suggestion: &str| StepError {
            category: ErrorCategory::Validation,
            severity: Severity::High,
            retryable: false,
            message,
            suggestion: suggestion.to_owned(),
        };
        let planned = if depth > MAX_EVENT_DEPTH {
            Err(stopped(
                format!(
                    "`{}` would start this flow {depth} runs deep in a chain of event-started runs; \
                     the limit is {MAX_EVENT_DEPTH}, so it was not run",
                    event.kind
                ),
                "a flow probably triggers itself (for example it adds the tag it listens for): \
                 narrow its trigger, or stop the flow from making the change that starts it",
            ))
        } else {
            let loaded =
                sql_execution::fetch_flow_version(tx, workspace, flow.into(), version).await?;
            planner
                .plan_event_run(workspace, &loaded, event, trigger.clone())
                .map_err(|e| {
                    stopped(
                        format!("the run could not start: {e}"),
                        "fix the flow's first node or its conditions, then publish it again",
                    )
                })
        };
        match planned {
            Ok(mut run) => {
                run.depth = depth;
                queued |= run.first_step.is_some();
                sql_execution::start_in(tx, workspace, run).await?;
            }
            Err(error) => {
                let run = NewExecution {
                    flow_id: flow.into(),
                    flow_version: version,
                    contact_id: Some(event.contact_id),
                    trigger_kind: TriggerKind::Event,
                    trigger,
                    input: json!({}),
                    first_step: None,
                    dedupe_key: None,
                    depth,
                };
                let started = sql_execution::start_in(tx, workspace, run).await?;
                sqlx::query(
                    "UPDATE flow_executions SET status = 'failed', error = $1 WHERE workspace_id = $2 AND id = $3",
                )
                .bind(sql_execution::error_json(&error))
                .bind(workspace.0)
                .bind(started.execution.id.0)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
            }
        }
    }
    Ok(queued)
}

// ---- changes ---------------------------------------------------------------------------------

/// Finds the tag named `name` (ignoring case) or creates it with `color`; safe against a
/// concurrent creator of the same name.
async fn find_or_create_tag(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    name: &str,
    color: &str,
) -> StoreResult<(Tag, bool)> {
    if let Some(tag) = fetch_tag_named(tx, workspace, name).await? {
        return Ok((tag, false));
    }
    let at = now();
    let id = TagId::new();
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO tags (id, workspace_id, name, color, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(id.0)
    .bind(workspace.0)
    .bind(name)
    .bind(color)
    .bind(at)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    let tag = fetch_tag_named(tx, workspace, name)
        .await?
        .ok_or(StoreError::NotFound("tag"))?;
    Ok((tag, inserted.is_some()))
}

/// Attaches `tag` to a live, locked contact; raises `tag.added` when it was not attached.
/// Returns whether it was attached already, and whether a step was queued.
async fn attach_tag(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    contact: ContactId,
    tag: &Tag,
    cause: Cause,
    planner: &Arc<dyn RunPlanner>,
) -> StoreResult<(bool, bool)> {
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO contact_tags (workspace_id, contact_id, tag_id, added_by_execution_id, created_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING tag_id",
    )
    .bind(workspace.0)
    .bind(contact.0)
    .bind(tag.id.0)
    .bind(cause.execution_id.map(|e| e.0))
    .bind(now())
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    if inserted.is_none() {
        return Ok((true, false));
    }
    let mut event = ContactEvent::new(EventKind::TagAdded, contact);
    event.tag_id = Some(tag.id);
    event.tag_name = Some(tag.name.clone());
    let queued = raise(tx, workspace, planner, &event, cause).await?;
    Ok((false, queued))
}

/// Assigns a live, locked contact to an agent, given or chosen race-free: choosing locks every
/// active agent of the workspace (in id order), so concurrent assignments take turns.
async fn assign(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    contact: &Contact,
    choice: AgentChoice,
    priority: Priority,
    cause: Cause,
) -> StoreResult<Assignment> {
    let (agent, strategy) = match choice {
        AgentChoice::Given(id) => {
            let agent = fetch_agent(tx, workspace, id).await?;
            if !agent.active {
                return Err(StoreError::Invalid(ValidationErrors::single(
                    "agentId",
                    format!("agent `{}` is inactive", agent.name),
                )));
            }
            (agent.id, None)
        }
        AgentChoice::Strategy(strategy) => {
            let _locked: Vec<Uuid> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT id FROM agents WHERE workspace_id = $1 AND active ORDER BY id {FOR_UPDATE}"
            )))
            .bind(workspace.0)
            .fetch_all(&mut **tx)
            .await
            .map_err(db_error)?;
            let candidates = sqlx::query_as::<_, AgentRow>(AssertSqlSafe(format!(
                "{AGENT_SELECT} WHERE a.workspace_id = $1 AND a.active ORDER BY a.id"
            )))
            .bind(workspace.0)
            .fetch_all(&mut **tx)
            .await
            .map_err(db_error)?;
            let eligible = candidates.iter().filter(|a| a.load < i64::from(a.capacity));
            let chosen = match strategy {
                AssignStrategy::RoundRobin => eligible.min_by_key(|a| (a.rotation, a.id)),
                AssignStrategy::LeastLoaded => eligible.min_by_key(|a| (a.load, a.rotation, a.id)),
            };
            let Some(chosen) = chosen else {
                return Err(StoreError::NotFound(if candidates.is_empty() {
                    "active agent"
                } else {
                    "agent under capacity"
                }));
            };
            (AgentId(chosen.id), Some(strategy))
        }
    };
    let at = now();
    sqlx::query(
        "UPDATE assignments SET released_at = $1 WHERE workspace_id = $2 AND contact_id = $3 AND released_at IS NULL",
    )
    .bind(at)
    .bind(workspace.0)
    .bind(contact.id.0)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    let assignment = Assignment {
        id: flowline_core::id::AssignmentId::new(),
        contact_id: contact.id,
        agent_id: agent,
        priority,
        strategy,
        execution_id: cause.execution_id,
        created_at: at,
        released_at: None,
    };
    sqlx::query(
        "INSERT INTO assignments (id, workspace_id, contact_id, agent_id, priority, strategy, execution_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(assignment.id.0)
    .bind(workspace.0)
    .bind(contact.id.0)
    .bind(agent.0)
    .bind(priority.as_str())
    .bind(strategy.map(AssignStrategy::as_str))
    .bind(cause.execution_id.map(|e| e.0))
    .bind(at)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    sqlx::query(
        "UPDATE agents SET assigned_count = assigned_count + 1, last_assigned_at = $1, \
         rotation = (SELECT max(rotation) FROM agents WHERE workspace_id = $2) + 1 \
         WHERE workspace_id = $2 AND id = $3",
    )
    .bind(at)
    .bind(workspace.0)
    .bind(agent.0)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    sqlx::query(
        "UPDATE contacts SET assigned_agent_id = $1, updated_at = $2 WHERE workspace_id = $3 AND id = $4",
    )
    .bind(agent.0)
    .bind(at)
    .bind(workspace.0)
    .bind(contact.id.0)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(assignment)
}

/// Subscribes a live, locked contact to a campaign.
async fn subscribe(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    contact: ContactId,
    campaign: CampaignId,
) -> StoreResult<Subscribed> {
    let found = fetch_campaign(tx, workspace, campaign).await?;
    if found.status == CampaignStatus::Archived {
        return Err(StoreError::Invalid(ValidationErrors::single(
            "campaignId",
            format!(
                "campaign `{}` is archived and takes no subscriptions",
                found.name
            ),
        )));
    }
    let at = now();
    let existing: Option<(Uuid, String)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT id, status FROM subscriptions WHERE workspace_id = $1 AND campaign_id = $2 AND contact_id = $3 {FOR_UPDATE}"
    )))
    .bind(workspace.0)
    .bind(campaign.0)
    .bind(contact.0)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    match existing {
        Some((id, status)) if status == SubscriptionStatus::Subscribed.as_str() => Ok(Subscribed {
            subscription_id: id.into(),
            already_subscribed: true,
            resubscribed: false,
        }),
        Some((id, _)) => {
            sqlx::query(
                "UPDATE subscriptions SET status = 'subscribed', subscribed_at = $1, unsubscribed_at = NULL, \
                 updated_at = $1 WHERE id = $2",
            )
            .bind(at)
            .bind(id)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
            Ok(Subscribed {
                subscription_id: id.into(),
                already_subscribed: false,
                resubscribed: true,
            })
        }
        None => {
            let id = flowline_core::id::SubscriptionId::new();
            sqlx::query(
                "INSERT INTO subscriptions (id, workspace_id, campaign_id, contact_id, status, subscribed_at, updated_at) \
                 VALUES ($1, $2, $3, $4, 'subscribed', $5, $5)",
            )
            .bind(id.0)
            .bind(workspace.0)
            .bind(campaign.0)
            .bind(contact.0)
            .bind(at)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
            Ok(Subscribed {
                subscription_id: id,
                already_subscribed: false,
                resubscribed: false,
            })
        }
    }
}

/// Deletes a live, locked contact after a backup when asked.
async fn delete_contact_in(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    contact: Contact,
    backup: bool,
    mode: DeleteMode,
    cause: Cause,
) -> StoreResult<Option<ContactBackup>> {
    let id = contact.id;
    let at = now();
    let saved = if backup {
        let detail = contact_detail(tx, contact).await?;
        let saved = ContactBackup {
            id: BackupId::new(),
            contact_id: id,
            mode,
            snapshot: serde_json::to_value(&detail).map_err(|e| corrupt("contact", e))?,
            execution_id: cause.execution_id,
            created_at: at,
            restored_at: None,
        };
        sqlx::query(
            "INSERT INTO contact_backups (id, workspace_id, contact_id, mode, snapshot, execution_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(saved.id.0)
        .bind(workspace.0)
        .bind(id.0)
        .bind(mode.as_str())
        .bind(Json(&saved.snapshot))
        .bind(cause.execution_id.map(|e| e.0))
        .bind(at)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
        Some(saved)
    } else {
        None
    };
    match mode {
        DeleteMode::Soft => {
            sqlx::query(
                "UPDATE contacts SET deleted_at = $1, updated_at = $1 WHERE workspace_id = $2 AND id = $3",
            )
            .bind(at)
            .bind(workspace.0)
            .bind(id.0)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        }
        DeleteMode::Permanent => {
            sqlx::query("DELETE FROM contacts WHERE workspace_id = $1 AND id = $2")
                .bind(workspace.0)
                .bind(id.0)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
        }
    }
    Ok(saved)
}

/// Places or moves a live, locked contact in a column of a board (default: its first).
async fn move_in(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    contact: ContactId,
    board: BoardId,
    column: Option<ColumnId>,
    cause: Cause,
    planner: &Arc<dyn RunPlanner>,
) -> StoreResult<(Moved, bool)> {
    let found = fetch_board(tx, workspace, board).await?;
    let to = match column {
        Some(column) => {
            found
                .columns
                .iter()
                .find(|c| c.id == column)
                .ok_or(StoreError::NotFound("column"))?
                .id
        }
        None => {
            found
                .columns
                .first()
                .ok_or_else(|| {
                    StoreError::Invalid(ValidationErrors::single(
                        "boardId",
                        format!("board `{}` has no columns", found.name),
                    ))
                })?
                .id
        }
    };
    let card: Option<(Uuid, Uuid)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT id, column_id FROM board_cards WHERE workspace_id = $1 AND board_id = $2 AND contact_id = $3 {FOR_UPDATE}"
    )))
    .bind(workspace.0)
    .bind(board.0)
    .bind(contact.0)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    let from = card.map(|(_, c)| ColumnId(c));
    let moved = Moved {
        board_id: board,
        from,
        to,
    };
    if from == Some(to) {
        return Ok((moved, false));
    }
    let at = now();
    match card {
        Some((id, _)) => {
            sqlx::query("UPDATE board_cards SET column_id = $1, updated_at = $2 WHERE id = $3")
                .bind(to.0)
                .bind(at)
                .bind(id)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
        }
        None => {
            sqlx::query(
                "INSERT INTO board_cards (id, workspace_id, board_id, column_id, contact_id, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(Uuid::now_v7())
            .bind(workspace.0)
            .bind(board.0)
            .bind(to.0)
            .bind(contact.0)
            .bind(at)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        }
    }
    sqlx::query(
        "INSERT INTO board_history (id, workspace_id, board_id, contact_id, from_column_id, to_column_id, execution_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(Uuid::now_v7())
    .bind(workspace.0)
    .bind(board.0)
    .bind(contact.0)
    .bind(from.map(|c| c.0))
    .bind(to.0)
    .bind(cause.execution_id.map(|e| e.0))
    .bind(at)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    let mut event = ContactEvent::new(EventKind::ContactMoved, contact);
    event.board_id = Some(board);
    event.from_column_id = from;
    event.column_id = Some(to);
    let queued = raise(tx, workspace, planner, &event, cause).await?;
    Ok((moved, queued))
}

/// Puts a contact back as its backup shows it: fields, tags (recreating a deleted tag by name),
/// cards, subscriptions and assignments, each with its original id and times. What the backup
/// names but no longer exists (a board, column, campaign or agent deleted since) is left out.
async fn restore(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    backup: &ContactBackup,
) -> StoreResult<ContactDetail> {
    let detail: SavedContact = serde_json::from_value(backup.snapshot.clone())
        .map_err(|e| corrupt("contact backup", e))?;
    let c = &detail.contact;
    let id = backup.contact_id;
    if let Some(email) = &c.email {
        check_email_free(tx, workspace, email, Some(id)).await?;
    }
    let state: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT deleted_at FROM contacts WHERE workspace_id = $1 AND id = $2 {FOR_UPDATE}"
    )))
    .bind(workspace.0)
    .bind(id.0)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    let agent = match c.assigned_agent_id {
        Some(a) if agent_exists(tx, workspace, a).await? => Some(a),
        _ => None,
    };
    match state {
        Some(None) => {
            return Err(StoreError::Conflict(
                "the contact is live: there is nothing to restore".into(),
            ));
        }
        Some(Some(_)) => {
            sqlx::query(
                "UPDATE contacts SET name = $1, email = $2, phone = $3, company = $4, attributes = $5, \
                 assigned_agent_id = $6, created_at = $7, updated_at = $8, deleted_at = NULL \
                 WHERE workspace_id = $9 AND id = $10",
            )
            .bind(&c.name)
            .bind(&c.email)
            .bind(&c.phone)
            .bind(&c.company)
            .bind(Json(&c.attributes))
            .bind(agent)
            .bind(c.created_at)
            .bind(c.updated_at)
            .bind(workspace.0)
            .bind(id.0)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        }
        None => {
            sqlx::query(
                "INSERT INTO contacts (id, workspace_id, name, email, phone, company, attributes, \
                 assigned_agent_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(id.0)
            .bind(workspace.0)
            .bind(&c.name)
            .bind(&c.email)
            .bind(&c.phone)
            .bind(&c.company)
            .bind(Json(&c.attributes))
            .bind(agent)
            .bind(c.created_at)
            .bind(c.updated_at)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
        }
    }
    for table in [
        "contact_tags",
        "assignments",
        "subscriptions",
        "board_cards",
    ] {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE workspace_id = $1 AND contact_id = $2"
        )))
        .bind(workspace.0)
        .bind(id.0)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    }
    for tag in &detail.tags {
        let present = match fetch_tag(tx, workspace, TagId(tag.id)).await {
            Ok(t) => Some(t.id),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let tag_id = match present {
            Some(t) => t,
            None => match fetch_tag_named(tx, workspace, &tag.name).await? {
                Some(t) => t.id,
                None => {
                    sqlx::query(
                        "INSERT INTO tags (id, workspace_id, name, color, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(tag.id)
                    .bind(workspace.0)
                    .bind(&tag.name)
                    .bind(&tag.color)
                    .bind(tag.created_at)
                    .bind(tag.updated_at)
                    .execute(&mut **tx)
                    .await
                    .map_err(db_error)?;
                    TagId(tag.id)
                }
            },
        };
        sqlx::query(
            "INSERT INTO contact_tags (workspace_id, contact_id, tag_id, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(workspace.0)
        .bind(id.0)
        .bind(tag_id.0)
        .bind(now())
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    }
    for a in &detail.assignments {
        if !agent_exists(tx, workspace, a.agent_id).await? {
            continue;
        }
        sqlx::query(
            "INSERT INTO assignments (id, workspace_id, contact_id, agent_id, priority, strategy, execution_id, \
             created_at, released_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(a.id)
        .bind(workspace.0)
        .bind(id.0)
        .bind(a.agent_id)
        .bind(&a.priority)
        .bind(&a.strategy)
        .bind(a.execution_id)
        .bind(a.created_at)
        .bind(a.released_at)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    }
    for s in &detail.subscriptions {
        sqlx::query(
            "INSERT INTO subscriptions (id, workspace_id, campaign_id, contact_id, status, subscribed_at, \
             unsubscribed_at, updated_at) SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
             WHERE EXISTS (SELECT 1 FROM campaigns WHERE workspace_id = $2 AND id = $3)",
        )
        .bind(s.id)
        .bind(workspace.0)
        .bind(s.campaign_id)
        .bind(id.0)
        .bind(&s.status)
        .bind(s.subscribed_at)
        .bind(s.unsubscribed_at)
        .bind(s.updated_at)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    }
    for k in &detail.cards {
        sqlx::query(
            "INSERT INTO board_cards (id, workspace_id, board_id, column_id, contact_id, created_at, updated_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7 \
             WHERE EXISTS (SELECT 1 FROM board_columns WHERE workspace_id = $2 AND board_id = $3 AND id = $4)",
        )
        .bind(k.id)
        .bind(workspace.0)
        .bind(k.board_id)
        .bind(k.column_id)
        .bind(id.0)
        .bind(k.created_at)
        .bind(k.updated_at)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    }
    sqlx::query("UPDATE contact_backups SET restored_at = $1 WHERE workspace_id = $2 AND id = $3")
        .bind(now())
        .bind(workspace.0)
        .bind(backup.id.0)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    let contact = fetch_contact(tx, workspace, id, false).await?;
    contact_detail(tx, contact).await
}

async fn agent_exists(tx: &mut Tx<'_>, workspace: WorkspaceId, agent: Uuid) -> StoreResult<bool> {
    let found: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM agents WHERE workspace_id = $1 AND id = $2")
            .bind(workspace.0)
            .bind(agent)
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_error)?;
    Ok(found.is_some())
}

/// A backup's snapshot as read back: the serialized [`ContactDetail`].
#[derive(serde::Deserialize)]
struct SavedContact {
    #[serde(flatten)]
    contact: SavedFields,
    tags: Vec<SavedTag>,
    assignments: Vec<SavedAssignment>,
    subscriptions: Vec<SavedSubscription>,
    cards: Vec<SavedCard>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SavedFields {
    name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    company: Option<String>,
    attributes: Value,
    assigned_agent_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SavedTag {
    id: Uuid,
    name: String,
    color: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SavedAssignment {
    id: Uuid,
    agent_id: Uuid,
    priority: String,
    strategy: Option<String>,
    execution_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    released_at: Option<DateTime<Utc>>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SavedSubscription {
    id: Uuid,
    campaign_id: Uuid,
    status: String,
    subscribed_at: DateTime<Utc>,
    unsubscribed_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SavedCard {
    id: Uuid,
    board_id: Uuid,
    column_id: Uuid,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

// ---- a step's transaction --------------------------------------------------------------------

/// A claimed step's transaction; see [`StepTransaction`].
pub(crate) struct SqlStepTx {
    tx: Tx<'static>,
    /// This transaction's turn among the process's writers (SQLite), held until it ends.
    turn: Option<tokio::sync::OwnedMutexGuard<()>>,
    store: StoreImpl,
    workspace: WorkspaceId,
    cause: Cause,
    planner: Arc<dyn RunPlanner>,
    queued: bool,
}

impl SqlStepTx {
    async fn live_contact(&mut self, id: ContactId) -> StoreResult<Contact> {
        fetch_contact(&mut self.tx, self.workspace, id, true).await
    }
}

#[async_trait]
impl StepTransaction for SqlStepTx {
    async fn contact_context(&mut self, id: ContactId) -> StoreResult<Option<Value>> {
        contact_context_in(&mut self.tx, self.workspace, id).await
    }

    async fn add_tag(
        &mut self,
        contact: ContactId,
        name: &str,
        color: &str,
    ) -> StoreResult<TagAdded> {
        self.live_contact(contact).await?;
        let (tag, created) = find_or_create_tag(&mut self.tx, self.workspace, name, color).await?;
        let (already_tagged, queued) = attach_tag(
            &mut self.tx,
            self.workspace,
            contact,
            &tag,
            self.cause,
            &self.planner,
        )
        .await?;
        self.queued |= queued;
        Ok(TagAdded {
            tag_id: tag.id,
            created,
            already_tagged,
        })
    }

    async fn assign_agent(
        &mut self,
        contact: ContactId,
        choice: AgentChoice,
        priority: Priority,
    ) -> StoreResult<Assignment> {
        let found = self.live_contact(contact).await?;
        assign(
            &mut self.tx,
            self.workspace,
            &found,
            choice,
            priority,
            self.cause,
        )
        .await
    }

    async fn subscribe(
        &mut self,
        contact: ContactId,
        campaign: CampaignId,
    ) -> StoreResult<Subscribed> {
        self.live_contact(contact).await?;
        subscribe(&mut self.tx, self.workspace, contact, campaign).await
    }

    async fn delete_contact(
        &mut self,
        contact: ContactId,
        backup: bool,
        mode: DeleteMode,
    ) -> StoreResult<Option<BackupId>> {
        let found = self.live_contact(contact).await?;
        let saved = delete_contact_in(
            &mut self.tx,
            self.workspace,
            found,
            backup,
            mode,
            self.cause,
        )
        .await?;
        Ok(saved.map(|b| b.id))
    }

    async fn move_to_board(
        &mut self,
        contact: ContactId,
        board: BoardId,
        column: Option<ColumnId>,
    ) -> StoreResult<Moved> {
        self.live_contact(contact).await?;
        let (moved, queued) = move_in(
            &mut self.tx,
            self.workspace,
            contact,
            board,
            column,
            self.cause,
            &self.planner,
        )
        .await?;
        self.queued |= queued;
        Ok(moved)
    }

    async fn finish(self: Box<Self>, params: FinishStep) -> StoreResult<FinishOutcome> {
        let SqlStepTx {
            mut tx,
            turn,
            store,
            queued,
            ..
        } = *self;
        let queues_more = params.result.queues_work();
        let outcome = sql_execution::finish_step(&mut tx, &params).await?;
        if outcome != FinishOutcome::Applied {
            // The lease was lost or the run cancelled: the step's changes go with it.
            tx.rollback().await.map_err(db_error)?;
            drop(turn);
            if outcome == FinishOutcome::Cancelled {
                // Ends the step `cancelled` on its own, without the changes.
                return flowline_store::Store::finish_step(&store, params).await;
            }
            return Ok(outcome);
        }
        commit(tx).await?;
        drop(turn);
        if queued {
            store.notify_work(None);
        } else if queues_more {
            store.notify_work(params.result.next_queue());
        }
        Ok(outcome)
    }
}

// ---- the store -------------------------------------------------------------------------------

fn planner_cause(depth: i32, execution: ExecutionId) -> Cause {
    Cause {
        execution_id: Some(execution),
        depth,
    }
}

#[async_trait]
impl CrmStore for StoreImpl {
    async fn begin_step(
        &self,
        workspace: WorkspaceId,
        execution: ExecutionId,
        step: StepId,
        lease_token: Uuid,
        planner: &Arc<dyn RunPlanner>,
    ) -> StoreResult<Option<Box<dyn StepTransaction>>> {
        let turn = self.write_turn().await;
        let mut tx = self.begin(Access::Write).await?;
        enter_workspace(&mut tx, workspace).await?;
        let depth: Option<i32> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT e.depth FROM action_executions s JOIN flow_executions e ON e.id = s.flow_execution_id \
             WHERE s.id = $1 AND s.workspace_id = $2 AND s.status = 'running' AND s.lease_token = $3 \
             AND e.id = $4 {FOR_UPDATE}"
        )))
        .bind(step.0)
        .bind(workspace.0)
        .bind(lease_token)
        .bind(execution.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(depth) = depth else {
            tx.rollback().await.map_err(db_error)?;
            return Ok(None);
        };
        Ok(Some(Box::new(SqlStepTx {
            tx,
            turn,
            store: self.clone(),
            workspace,
            cause: planner_cause(depth, execution),
            planner: planner.clone(),
            queued: false,
        })))
    }

    async fn contact_context(
        &self,
        workspace: WorkspaceId,
        id: ContactId,
    ) -> StoreResult<Option<Value>> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let context = contact_context_in(&mut tx, workspace, id).await?;
        commit(tx).await?;
        Ok(context)
    }

    async fn list_contacts(
        &self,
        workspace: WorkspaceId,
        filter: ContactFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Contact>> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let rows = sqlx::query_as::<_, ContactRow>(AssertSqlSafe(format!(
            "SELECT {CONTACT_COLUMNS} FROM contacts c WHERE c.workspace_id = $1 AND c.deleted_at IS NULL \
             AND ($2 IS NULL OR lower(c.email) = lower($2)) \
             AND ($3 IS NULL OR EXISTS (SELECT 1 FROM contact_tags ct WHERE ct.contact_id = c.id AND ct.tag_id = $3)) \
             AND ($4 IS NULL OR EXISTS (SELECT 1 FROM board_cards k WHERE k.contact_id = c.id AND k.column_id = $4)) \
             AND ($5 IS NULL OR c.assigned_agent_id = $5) \
             AND ($6 IS NULL OR c.id < $6) ORDER BY c.id DESC LIMIT $7"
        )))
        .bind(workspace.0)
        .bind(filter.email)
        .bind(filter.tag.map(|t| t.0))
        .bind(filter.column.map(|c| c.0))
        .bind(filter.agent.map(|a| a.0))
        .bind(page.cursor)
        .bind(page.fetch_limit())
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        commit(tx).await?;
        page_of(rows, &page, |c: &Contact| c.id.0)
    }

    async fn get_contact(
        &self,
        workspace: WorkspaceId,
        id: ContactId,
    ) -> StoreResult<ContactDetail> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let contact = fetch_contact(&mut tx, workspace, id, false).await?;
        let detail = contact_detail(&mut tx, contact).await?;
        commit(tx).await?;
        Ok(detail)
    }

    async fn create_contact(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        params: NewContact,
        planner: &Arc<dyn RunPlanner>,
    ) -> StoreResult<Contact> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        if let Some(email) = &params.email {
            check_email_free(&mut tx, workspace, email, None).await?;
        }
        let at = now();
        let contact = Contact {
            id: ContactId::new(),
            workspace_id: workspace,
            name: params.name,
            email: params.email,
            phone: params.phone,
            company: params.company,
            attributes: params.attributes,
            assigned_agent_id: None,
            created_at: at,
            updated_at: at,
        };
        sqlx::query(
            "INSERT INTO contacts (id, workspace_id, name, email, phone, company, attributes, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(contact.id.0)
        .bind(workspace.0)
        .bind(&contact.name)
        .bind(&contact.email)
        .bind(&contact.phone)
        .bind(&contact.company)
        .bind(Json(&contact.attributes))
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry(
                "contact.create",
                "contact",
                contact.id,
                None,
                snapshot(&contact),
            ),
        )
        .await?;
        let event = ContactEvent::new(EventKind::ContactCreated, contact.id);
        let queued = raise(&mut tx, workspace, planner, &event, Cause::API).await?;
        commit(tx).await?;
        if queued {
            self.notify_work(None);
        }
        Ok(contact)
    }

    async fn update_contact(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: ContactId,
        update: ContactUpdate,
        planner: &Arc<dyn RunPlanner>,
    ) -> StoreResult<Contact> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let before = fetch_contact(&mut tx, workspace, id, true).await?;
        let mut after = before.clone();
        if let Some(v) = update.name {
            after.name = v;
        }
        if let Some(v) = update.email {
            after.email = v;
        }
        if let Some(v) = update.phone {
            after.phone = v;
        }
        if let Some(v) = update.company {
            after.company = v;
        }
        if let Some(v) = update.attributes {
            after.attributes = v;
        }
        if after == before {
            commit(tx).await?;
            return Ok(before);
        }
        if let Some(email) = &after.email
            && after.email != before.email
        {
            check_email_free(&mut tx, workspace, email, Some(id)).await?;
        }
        after.updated_at = now();
        sqlx::query(
            "UPDATE contacts SET name = $1, email = $2, phone = $3, company = $4, attributes = $5, updated_at = $6 \
             WHERE workspace_id = $7 AND id = $8",
        )
        .bind(&after.name)
        .bind(&after.email)
        .bind(&after.phone)
        .bind(&after.company)
        .bind(Json(&after.attributes))
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
                "contact.update",
                "contact",
                id,
                snapshot(&before),
                snapshot(&after),
            ),
        )
        .await?;
        let event = ContactEvent::new(EventKind::ContactUpdated, id);
        let queued = raise(&mut tx, workspace, planner, &event, Cause::API).await?;
        commit(tx).await?;
        if queued {
            self.notify_work(None);
        }
        Ok(after)
    }

    async fn delete_contact(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: ContactId,
        mode: DeleteMode,
    ) -> StoreResult<ContactBackup> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let contact = fetch_contact(&mut tx, workspace, id, true).await?;
        let before = snapshot(&contact);
        let saved = delete_contact_in(&mut tx, workspace, contact, true, mode, Cause::API)
            .await?
            .ok_or_else(|| corrupt("contact backup", "missing"))?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry("contact.delete", "contact", id, before, snapshot(&saved)),
        )
        .await?;
        commit(tx).await?;
        Ok(saved)
    }

    async fn tag_contact(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        contact: ContactId,
        tag: TagId,
        planner: &Arc<dyn RunPlanner>,
    ) -> StoreResult<bool> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        fetch_contact(&mut tx, workspace, contact, true).await?;
        let found = fetch_tag(&mut tx, workspace, tag).await?;
        let (already, queued) =
            attach_tag(&mut tx, workspace, contact, &found, Cause::API, planner).await?;
        if !already {
            audit(
                &mut tx,
                workspace,
                actor,
                entry(
                    "contact.tag",
                    "contact",
                    contact,
                    None,
                    Some(json!({"tagId": tag})),
                ),
            )
            .await?;
        }
        commit(tx).await?;
        if queued {
            self.notify_work(None);
        }
        Ok(!already)
    }

    async fn untag_contact(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        contact: ContactId,
        tag: TagId,
    ) -> StoreResult<bool> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        fetch_contact(&mut tx, workspace, contact, true).await?;
        fetch_tag(&mut tx, workspace, tag).await?;
        let removed = sqlx::query(
            "DELETE FROM contact_tags WHERE workspace_id = $1 AND contact_id = $2 AND tag_id = $3",
        )
        .bind(workspace.0)
        .bind(contact.0)
        .bind(tag.0)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?
        .rows_affected()
            > 0;
        if removed {
            audit(
                &mut tx,
                workspace,
                actor,
                entry(
                    "contact.untag",
                    "contact",
                    contact,
                    Some(json!({"tagId": tag})),
                    None,
                ),
            )
            .await?;
        }
        commit(tx).await?;
        Ok(removed)
    }

    async fn contact_executions(
        &self,
        workspace: WorkspaceId,
        id: ContactId,
        page: PageRequest,
    ) -> StoreResult<Page<Execution>> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        // A contact deleted for good is still known by its backups, and its runs still listed.
        let found: Option<Uuid> = sqlx::query_scalar(
            "SELECT id FROM contacts WHERE workspace_id = $1 AND id = $2 \
             UNION ALL SELECT contact_id FROM contact_backups WHERE workspace_id = $1 AND contact_id = $2 LIMIT 1",
        )
                .bind(workspace.0)
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?;
        if found.is_none() {
            return Err(StoreError::NotFound("contact"));
        }
        let runs = sql_execution::contact_executions(&mut tx, workspace, id, page).await?;
        commit(tx).await?;
        Ok(runs)
    }

    async fn list_tags(&self, workspace: WorkspaceId, page: PageRequest) -> StoreResult<Page<Tag>> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let rows = sqlx::query_as::<_, TagRow>(AssertSqlSafe(format!(
            "SELECT {TAG_COLUMNS} FROM tags t WHERE t.workspace_id = $1 AND ($2 IS NULL OR t.id < $2) \
             ORDER BY t.id DESC LIMIT $3"
        )))
        .bind(workspace.0)
        .bind(page.cursor)
        .bind(page.fetch_limit())
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        commit(tx).await?;
        page_of(rows, &page, |t: &Tag| t.id.0)
    }

    async fn get_tag(&self, workspace: WorkspaceId, id: TagId) -> StoreResult<Tag> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let tag = fetch_tag(&mut tx, workspace, id).await?;
        commit(tx).await?;
        Ok(tag)
    }

    async fn create_tag(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        name: String,
        color: String,
    ) -> StoreResult<Tag> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        if let Some(existing) = fetch_tag_named(&mut tx, workspace, &name).await? {
            return Err(StoreError::Conflict(format!(
                "tag `{}` ({}) already has that name",
                existing.name, existing.id
            )));
        }
        let at = now();
        let tag = Tag {
            id: TagId::new(),
            workspace_id: workspace,
            name,
            color,
            created_at: at,
            updated_at: at,
        };
        sqlx::query(
            "INSERT INTO tags (id, workspace_id, name, color, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(tag.id.0)
        .bind(workspace.0)
        .bind(&tag.name)
        .bind(&tag.color)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry("tag.create", "tag", tag.id, None, snapshot(&tag)),
        )
        .await?;
        commit(tx).await?;
        Ok(tag)
    }

    async fn update_tag(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: TagId,
        name: Option<String>,
        color: Option<String>,
    ) -> StoreResult<Tag> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let before = fetch_tag(&mut tx, workspace, id).await?;
        let mut after = before.clone();
        if let Some(name) = name {
            if let Some(other) = fetch_tag_named(&mut tx, workspace, &name).await?
                && other.id != id
            {
                return Err(StoreError::Conflict(format!(
                    "tag `{}` ({}) already has that name",
                    other.name, other.id
                )));
            }
            after.name = name;
        }
        if let Some(color) = color {
            after.color = color;
        }
        after.updated_at = now();
        sqlx::query("UPDATE tags SET name = $1, color = $2, updated_at = $3 WHERE workspace_id = $4 AND id = $5")
            .bind(&after.name)
            .bind(&after.color)
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
            entry("tag.update", "tag", id, snapshot(&before), snapshot(&after)),
        )
        .await?;
        commit(tx).await?;
        Ok(after)
    }

    async fn delete_tag(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: TagId,
    ) -> StoreResult<()> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let before = fetch_tag(&mut tx, workspace, id).await?;
        let used = count_where(&mut tx, workspace, "contact_tags", "tag_id", id.0).await?;
        delete_row(&mut tx, workspace, "tags", id.0).await?;
        let mut gone = snapshot(&before);
        if let Some(Value::Object(map)) = &mut gone {
            map.insert("detachedFromContacts".into(), json!(used));
        }
        audit(
            &mut tx,
            workspace,
            actor,
            entry("tag.delete", "tag", id, gone, None),
        )
        .await?;
        commit(tx).await?;
        Ok(())
    }

    async fn list_agents(
        &self,
        workspace: WorkspaceId,
        page: PageRequest,
    ) -> StoreResult<Page<Agent>> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let rows = sqlx::query_as::<_, AgentRow>(AssertSqlSafe(format!(
            "{AGENT_SELECT} WHERE a.workspace_id = $1 AND ($2 IS NULL OR a.id < $2) ORDER BY a.id DESC LIMIT $3"
        )))
        .bind(workspace.0)
        .bind(page.cursor)
        .bind(page.fetch_limit())
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        commit(tx).await?;
        page_of(rows, &page, |a: &Agent| a.id.0)
    }

    async fn get_agent(&self, workspace: WorkspaceId, id: AgentId) -> StoreResult<Agent> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let agent = fetch_agent(&mut tx, workspace, id).await?;
        commit(tx).await?;
        Ok(agent)
    }

    async fn create_agent(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        params: NewAgent,
    ) -> StoreResult<Agent> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let at = now();
        let id = AgentId::new();
        // A new agent joins the rotation next in line, not ahead of everyone it would then be
        // given turn after turn to catch up with.
        sqlx::query(
            "INSERT INTO agents (id, workspace_id, name, email, active, capacity, rotation, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, \
             COALESCE((SELECT min(rotation) FROM agents WHERE workspace_id = $2 AND active), 0), $7, $7)",
        )
        .bind(id.0)
        .bind(workspace.0)
        .bind(&params.name)
        .bind(&params.email)
        .bind(params.active)
        .bind(params.capacity)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let agent = fetch_agent(&mut tx, workspace, id).await?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry("agent.create", "agent", id, None, snapshot(&agent)),
        )
        .await?;
        commit(tx).await?;
        Ok(agent)
    }

    async fn update_agent(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: AgentId,
        update: AgentUpdate,
    ) -> StoreResult<Agent> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let before = fetch_agent(&mut tx, workspace, id).await?;
        let name = update.name.unwrap_or_else(|| before.name.clone());
        let email = update.email.unwrap_or_else(|| before.email.clone());
        let active = update.active.unwrap_or(before.active);
        let capacity = update.capacity.unwrap_or(before.capacity);
        sqlx::query(
            "UPDATE agents SET name = $1, email = $2, active = $3, capacity = $4, updated_at = $5 \
             WHERE workspace_id = $6 AND id = $7",
        )
        .bind(&name)
        .bind(&email)
        .bind(active)
        .bind(capacity)
        .bind(now())
        .bind(workspace.0)
        .bind(id.0)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let after = fetch_agent(&mut tx, workspace, id).await?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry(
                "agent.update",
                "agent",
                id,
                snapshot(&before),
                snapshot(&after),
            ),
        )
        .await?;
        commit(tx).await?;
        Ok(after)
    }

    async fn delete_agent(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: AgentId,
    ) -> StoreResult<()> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let before = fetch_agent(&mut tx, workspace, id).await?;
        let history = count_where(&mut tx, workspace, "assignments", "agent_id", id.0).await?;
        if history > 0 {
            return Err(StoreError::Conflict(format!(
                "agent `{}` has {history} assignment(s) in its history: deactivate it instead (`active: false`)",
                before.name
            )));
        }
        delete_row(&mut tx, workspace, "agents", id.0).await?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry("agent.delete", "agent", id, snapshot(&before), None),
        )
        .await?;
        commit(tx).await?;
        Ok(())
    }

    async fn list_campaigns(
        &self,
        workspace: WorkspaceId,
        page: PageRequest,
    ) -> StoreResult<Page<Campaign>> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let rows = sqlx::query_as::<_, CampaignRow>(AssertSqlSafe(format!(
            "SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE workspace_id = $1 AND ($2 IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3"
        )))
        .bind(workspace.0)
        .bind(page.cursor)
        .bind(page.fetch_limit())
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        commit(tx).await?;
        page_of(rows, &page, |c: &Campaign| c.id.0)
    }

    async fn get_campaign(&self, workspace: WorkspaceId, id: CampaignId) -> StoreResult<Campaign> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let campaign = fetch_campaign(&mut tx, workspace, id).await?;
        commit(tx).await?;
        Ok(campaign)
    }

    async fn create_campaign(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        name: String,
        status: CampaignStatus,
    ) -> StoreResult<Campaign> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let at = now();
        let campaign = Campaign {
            id: CampaignId::new(),
            workspace_id: workspace,
            name,
            status,
            created_at: at,
            updated_at: at,
        };
        sqlx::query(
            "INSERT INTO campaigns (id, workspace_id, name, status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(campaign.id.0)
        .bind(workspace.0)
        .bind(&campaign.name)
        .bind(status.as_str())
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry(
                "campaign.create",
                "campaign",
                campaign.id,
                None,
                snapshot(&campaign),
            ),
        )
        .await?;
        commit(tx).await?;
        Ok(campaign)
    }

    async fn update_campaign(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: CampaignId,
        name: Option<String>,
        status: Option<CampaignStatus>,
    ) -> StoreResult<Campaign> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let before = fetch_campaign(&mut tx, workspace, id).await?;
        let mut after = before.clone();
        if let Some(name) = name {
            after.name = name;
        }
        if let Some(status) = status {
            after.status = status;
        }
        after.updated_at = now();
        sqlx::query("UPDATE campaigns SET name = $1, status = $2, updated_at = $3 WHERE workspace_id = $4 AND id = $5")
            .bind(&after.name)
            .bind(after.status.as_str())
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
                "campaign.update",
                "campaign",
                id,
                snapshot(&before),
                snapshot(&after),
            ),
        )
        .await?;
        commit(tx).await?;
        Ok(after)
    }

    async fn delete_campaign(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: CampaignId,
    ) -> StoreResult<()> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let before = fetch_campaign(&mut tx, workspace, id).await?;
        let subscribers =
            count_where(&mut tx, workspace, "subscriptions", "campaign_id", id.0).await?;
        if subscribers > 0 {
            return Err(StoreError::Conflict(format!(
                "campaign `{}` has {subscribers} subscription(s): archive it instead (`status: archived`)",
                before.name
            )));
        }
        delete_row(&mut tx, workspace, "campaigns", id.0).await?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry("campaign.delete", "campaign", id, snapshot(&before), None),
        )
        .await?;
        commit(tx).await?;
        Ok(())
    }

    async fn list_subscriptions(
        &self,
        workspace: WorkspaceId,
        campaign: CampaignId,
        page: PageRequest,
    ) -> StoreResult<Page<Subscription>> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        fetch_campaign(&mut tx, workspace, campaign).await?;
        let rows = sqlx::query_as::<_, SubscriptionRow>(AssertSqlSafe(format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions s WHERE s.workspace_id = $1 AND s.campaign_id = $2 \
             AND EXISTS (SELECT 1 FROM contacts c WHERE c.id = s.contact_id AND c.deleted_at IS NULL) \
             AND ($3 IS NULL OR s.id < $3) ORDER BY s.id DESC LIMIT $4"
        )))
        .bind(workspace.0)
        .bind(campaign.0)
        .bind(page.cursor)
        .bind(page.fetch_limit())
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        commit(tx).await?;
        page_of(rows, &page, |s: &Subscription| s.id.0)
    }

    async fn unsubscribe(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        campaign: CampaignId,
        contact: ContactId,
    ) -> StoreResult<Subscription> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        fetch_campaign(&mut tx, workspace, campaign).await?;
        fetch_contact(&mut tx, workspace, contact, true).await?;
        let at = now();
        sqlx::query(
            "UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = $1, updated_at = $1 \
             WHERE workspace_id = $2 AND campaign_id = $3 AND contact_id = $4 AND status = 'subscribed'",
        )
        .bind(at)
        .bind(workspace.0)
        .bind(campaign.0)
        .bind(contact.0)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let row = sqlx::query_as::<_, SubscriptionRow>(AssertSqlSafe(format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE workspace_id = $1 AND campaign_id = $2 AND contact_id = $3"
        )))
        .bind(workspace.0)
        .bind(campaign.0)
        .bind(contact.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .ok_or(StoreError::NotFound("subscription"))?;
        let subscription = Subscription::try_from(row)?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry(
                "campaign.unsubscribe",
                "contact",
                contact,
                None,
                snapshot(&subscription),
            ),
        )
        .await?;
        commit(tx).await?;
        Ok(subscription)
    }

    async fn list_boards(
        &self,
        workspace: WorkspaceId,
        page: PageRequest,
    ) -> StoreResult<Page<Board>> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM boards WHERE workspace_id = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        )
        .bind(workspace.0)
        .bind(page.cursor)
        .bind(page.fetch_limit())
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let mut boards = Vec::with_capacity(ids.len());
        for id in ids {
            boards.push(fetch_board(&mut tx, workspace, id.into()).await?);
        }
        commit(tx).await?;
        Ok(Page::from_rows(boards, &page, |b| b.id.0))
    }

    async fn get_board(&self, workspace: WorkspaceId, id: BoardId) -> StoreResult<Board> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let board = fetch_board(&mut tx, workspace, id).await?;
        commit(tx).await?;
        Ok(board)
    }

    async fn create_board(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        name: String,
        columns: Vec<String>,
    ) -> StoreResult<Board> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let at = now();
        let id = BoardId::new();
        sqlx::query("INSERT INTO boards (id, workspace_id, name, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)")
            .bind(id.0)
            .bind(workspace.0)
            .bind(&name)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        for (position, column) in columns.iter().enumerate() {
            insert_column(
                &mut tx,
                workspace,
                id,
                ColumnId::new(),
                column,
                position as i32,
            )
            .await?;
        }
        let board = fetch_board(&mut tx, workspace, id).await?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry("board.create", "board", id, None, snapshot(&board)),
        )
        .await?;
        commit(tx).await?;
        Ok(board)
    }

    async fn update_board(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: BoardId,
        name: Option<String>,
        columns: Option<Vec<ColumnSpec>>,
    ) -> StoreResult<Board> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let before = fetch_board(&mut tx, workspace, id).await?;
        if let Some(name) = &name {
            sqlx::query("UPDATE boards SET name = $1 WHERE workspace_id = $2 AND id = $3")
                .bind(name)
                .bind(workspace.0)
                .bind(id.0)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        if let Some(columns) = columns {
            let mut seen = HashSet::new();
            for (i, spec) in columns.iter().enumerate() {
                if let Some(c) = spec.id {
                    if !before.columns.iter().any(|b| b.id == c) {
                        return Err(StoreError::Invalid(ValidationErrors::single(
                            format!("columns[{i}].id"),
                            "no such column on this board",
                        )));
                    }
                    if !seen.insert(c) {
                        return Err(StoreError::Invalid(ValidationErrors::single(
                            format!("columns[{i}].id"),
                            "listed twice",
                        )));
                    }
                }
            }
            for dropped in before.columns.iter().filter(|c| !seen.contains(&c.id)) {
                let cards =
                    count_where(&mut tx, workspace, "board_cards", "column_id", dropped.id.0)
                        .await?;
                if cards > 0 {
                    return Err(StoreError::Conflict(format!(
                        "column `{}` holds {cards} contact(s): move them to another column first",
                        dropped.name
                    )));
                }
                delete_row(&mut tx, workspace, "board_columns", dropped.id.0).await?;
            }
            for (position, spec) in columns.iter().enumerate() {
                match spec.id {
                    Some(c) => {
                        sqlx::query(
                            "UPDATE board_columns SET name = $1, position = $2 WHERE workspace_id = $3 AND id = $4",
                        )
                        .bind(&spec.name)
                        .bind(position as i32)
                        .bind(workspace.0)
                        .bind(c.0)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    }
                    None => {
                        insert_column(
                            &mut tx,
                            workspace,
                            id,
                            ColumnId::new(),
                            &spec.name,
                            position as i32,
                        )
                        .await?;
                    }
                }
            }
        }
        sqlx::query("UPDATE boards SET updated_at = $1 WHERE workspace_id = $2 AND id = $3")
            .bind(now())
            .bind(workspace.0)
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let after = fetch_board(&mut tx, workspace, id).await?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry(
                "board.update",
                "board",
                id,
                snapshot(&before),
                snapshot(&after),
            ),
        )
        .await?;
        commit(tx).await?;
        Ok(after)
    }

    async fn delete_board(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: BoardId,
    ) -> StoreResult<()> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let before = fetch_board(&mut tx, workspace, id).await?;
        for table in ["board_history", "board_cards", "board_columns"] {
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE workspace_id = $1 AND board_id = $2"
            )))
            .bind(workspace.0)
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        delete_row(&mut tx, workspace, "boards", id.0).await?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry("board.delete", "board", id, snapshot(&before), None),
        )
        .await?;
        commit(tx).await?;
        Ok(())
    }

    async fn list_cards(&self, workspace: WorkspaceId, board: BoardId) -> StoreResult<Vec<Card>> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        fetch_board(&mut tx, workspace, board).await?;
        let rows = sqlx::query_as::<_, CardRow>(AssertSqlSafe(format!(
            "SELECT {CARD_COLUMNS} FROM board_cards k JOIN board_columns col ON col.id = k.column_id \
             JOIN contacts c ON c.id = k.contact_id \
             WHERE k.workspace_id = $1 AND k.board_id = $2 AND c.deleted_at IS NULL \
             ORDER BY col.position, k.updated_at, k.id LIMIT 10000"
        )))
        .bind(workspace.0)
        .bind(board.0)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        commit(tx).await?;
        rows.into_iter().map(Card::try_from).collect()
    }

    async fn move_card(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        board: BoardId,
        contact: ContactId,
        column: Option<ColumnId>,
        planner: &Arc<dyn RunPlanner>,
    ) -> StoreResult<Moved> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        fetch_contact(&mut tx, workspace, contact, true).await?;
        let (moved, queued) = move_in(
            &mut tx,
            workspace,
            contact,
            board,
            column,
            Cause::API,
            planner,
        )
        .await?;
        if moved.from != Some(moved.to) {
            audit(
                &mut tx,
                workspace,
                actor,
                entry("board.move", "contact", contact, None, snapshot(&moved)),
            )
            .await?;
        }
        commit(tx).await?;
        if queued {
            self.notify_work(None);
        }
        Ok(moved)
    }

    async fn board_history(
        &self,
        workspace: WorkspaceId,
        board: BoardId,
        page: PageRequest,
    ) -> StoreResult<Page<BoardMove>> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        fetch_board(&mut tx, workspace, board).await?;
        let rows = sqlx::query_as::<_, MoveRow>(
            "SELECT id, board_id, contact_id, from_column_id, to_column_id, execution_id, created_at \
             FROM board_history WHERE workspace_id = $1 AND board_id = $2 AND ($3 IS NULL OR id < $3) \
             ORDER BY id DESC LIMIT $4",
        )
        .bind(workspace.0)
        .bind(board.0)
        .bind(page.cursor)
        .bind(page.fetch_limit())
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        commit(tx).await?;
        page_of(rows, &page, |m: &BoardMove| m.id.0)
    }

    async fn list_backups(
        &self,
        workspace: WorkspaceId,
        page: PageRequest,
    ) -> StoreResult<Page<ContactBackup>> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let rows = sqlx::query_as::<_, BackupRow>(AssertSqlSafe(format!(
            "SELECT {BACKUP_COLUMNS} FROM contact_backups WHERE workspace_id = $1 AND ($2 IS NULL OR id < $2) \
             ORDER BY id DESC LIMIT $3"
        )))
        .bind(workspace.0)
        .bind(page.cursor)
        .bind(page.fetch_limit())
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        commit(tx).await?;
        page_of(rows, &page, |b: &ContactBackup| b.id.0)
    }

    async fn get_backup(&self, workspace: WorkspaceId, id: BackupId) -> StoreResult<ContactBackup> {
        let mut tx = self.scoped(workspace, Access::Read).await?;
        let backup = fetch_backup(&mut tx, workspace, id, false).await?;
        commit(tx).await?;
        Ok(backup)
    }

    async fn restore_backup(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: BackupId,
    ) -> StoreResult<ContactDetail> {
        let mut tx = self.scoped(workspace, Access::Write).await?;
        let backup = fetch_backup(&mut tx, workspace, id, true).await?;
        if backup.restored_at.is_some() {
            return Err(StoreError::Conflict(
                "this backup was restored already".into(),
            ));
        }
        let detail = restore(&mut tx, workspace, &backup).await?;
        audit(
            &mut tx,
            workspace,
            actor,
            entry(
                "contact.restore",
                "contact",
                backup.contact_id,
                None,
                snapshot(&detail),
            ),
        )
        .await?;
        commit(tx).await?;
        Ok(detail)
    }
}

/// How many of the workspace's rows of `table` have `column` = `id`.
async fn count_where(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    table: &'static str,
    column: &'static str,
    id: Uuid,
) -> StoreResult<i64> {
    sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE workspace_id = $1 AND {column} = $2"
    )))
    .bind(workspace.0)
    .bind(id)
    .fetch_one(&mut **tx)
    .await
    .map_err(db_error)
}

/// Deletes the workspace's row `id` of `table`.
async fn delete_row(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    table: &'static str,
    id: Uuid,
) -> StoreResult<()> {
    sqlx::query(AssertSqlSafe(format!(
        "DELETE FROM {table} WHERE workspace_id = $1 AND id = $2"
    )))
    .bind(workspace.0)
    .bind(id)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

async fn insert_column(
    tx: &mut Tx<'_>,
    workspace: WorkspaceId,
    board: BoardId,
    id: ColumnId,
    name: &str,
    position: i32,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO board_columns (id, workspace_id, board_id, name, position, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id.0)
    .bind(workspace.0)
    .bind(board.0)
    .bind(name)
    .bind(position)
    .bind(now())
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}
