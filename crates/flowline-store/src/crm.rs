//! Contacts, tags, agents, campaigns, boards and contact backups: their records, the storage
//! operations on them, and the transaction a step that changes them runs in.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flowline_core::action::basic::{AssignStrategy, DeleteMode, Priority};
use flowline_core::crm::{CampaignStatus, ContactEvent, SubscriptionStatus};
use flowline_core::id::{
    AgentId, AssignmentId, BackupId, BoardId, CampaignId, CardId, ColumnId, ContactId, ExecutionId,
    MoveId, StepId, SubscriptionId, TagId, WorkspaceId,
};
use serde::Serialize;
use uuid::Uuid;

use crate::StoreResult;
use crate::execution::{Execution, FinishOutcome, FinishStep, FlowVersion, NewExecution};
use crate::page::{Page, PageRequest};
use crate::tenancy::Actor;

/// A contact.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    /// Its id.
    pub id: ContactId,
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// Its name.
    pub name: Option<String>,
    /// Its email, unique among the workspace's live contacts (ignoring case).
    pub email: Option<String>,
    /// Its phone number.
    pub phone: Option<String>,
    /// Its company.
    pub company: Option<String>,
    /// Free attributes (a JSON object).
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
    /// The agent it is assigned to.
    pub assigned_agent_id: Option<AgentId>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A contact with everything attached to it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContactDetail {
    /// The contact.
    #[serde(flatten)]
    pub contact: Contact,
    /// Its tags, by name.
    pub tags: Vec<Tag>,
    /// Its assignments, newest first (the open one has no `releasedAt`).
    pub assignments: Vec<Assignment>,
    /// Its campaign subscriptions.
    pub subscriptions: Vec<Subscription>,
    /// Where it sits on boards.
    pub cards: Vec<Card>,
}

/// A new contact, validated.
#[derive(Clone, Debug, Default)]
pub struct NewContact {
    /// Name.
    pub name: Option<String>,
    /// Email, parsed.
    pub email: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// Company.
    pub company: Option<String>,
    /// Attributes (an object).
    pub attributes: serde_json::Value,
}

/// Changes to a contact; `None` keeps a field, `Some(None)` clears it.
#[derive(Clone, Debug, Default)]
pub struct ContactUpdate {
    /// Name.
    pub name: Option<Option<String>>,
    /// Email, parsed.
    pub email: Option<Option<String>>,
    /// Phone.
    pub phone: Option<Option<String>>,
    /// Company.
    pub company: Option<Option<String>>,
    /// Attributes, replacing the old ones.
    pub attributes: Option<serde_json::Value>,
}

/// Which contacts to list.
#[derive(Clone, Debug, Default)]
pub struct ContactFilter {
    /// With this email (ignoring case).
    pub email: Option<String>,
    /// With this tag.
    pub tag: Option<TagId>,
    /// Sitting in this board column.
    pub column: Option<ColumnId>,
    /// Assigned to this agent.
    pub agent: Option<AgentId>,
}

/// A tag.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tag {
    /// Its id.
    pub id: TagId,
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// Its name, unique per workspace ignoring case.
    pub name: String,
    /// `#rrggbb`.
    pub color: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// An agent.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    /// Its id.
    pub id: AgentId,
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// Name.
    pub name: String,
    /// Email.
    pub email: Option<String>,
    /// Inactive agents get no new assignments.
    pub active: bool,
    /// The most live contacts assigned to it at once.
    pub capacity: i32,
    /// Live contacts assigned to it now.
    pub load: i64,
    /// Assignments it ever received.
    pub assigned_count: i64,
    /// When it last received an assignment.
    pub last_assigned_at: Option<DateTime<Utc>>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A new agent.
#[derive(Clone, Debug)]
pub struct NewAgent {
    /// Name.
    pub name: String,
    /// Email.
    pub email: Option<String>,
    /// Active.
    pub active: bool,
    /// Capacity.
    pub capacity: i32,
}

/// Changes to an agent.
#[derive(Clone, Debug, Default)]
pub struct AgentUpdate {
    /// Name.
    pub name: Option<String>,
    /// Email.
    pub email: Option<Option<String>>,
    /// Active.
    pub active: Option<bool>,
    /// Capacity.
    pub capacity: Option<i32>,
}

/// One assignment of a contact to an agent.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Assignment {
    /// Its id.
    pub id: AssignmentId,
    /// The contact.
    pub contact_id: ContactId,
    /// The agent.
    pub agent_id: AgentId,
    /// Its priority.
    pub priority: Priority,
    /// How the agent was chosen (`None`: given).
    pub strategy: Option<AssignStrategy>,
    /// The run that made it.
    pub execution_id: Option<ExecutionId>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When a later assignment replaced it.
    pub released_at: Option<DateTime<Utc>>,
}

/// A campaign.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Campaign {
    /// Its id.
    pub id: CampaignId,
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// Name.
    pub name: String,
    /// Active or archived.
    pub status: CampaignStatus,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A contact's subscription to a campaign.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// Its id.
    pub id: SubscriptionId,
    /// The campaign.
    pub campaign_id: CampaignId,
    /// The contact.
    pub contact_id: ContactId,
    /// Subscribed or unsubscribed.
    pub status: SubscriptionStatus,
    /// When it (last) subscribed.
    pub subscribed_at: DateTime<Utc>,
    /// When it unsubscribed.
    pub unsubscribed_at: Option<DateTime<Utc>>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A board with its ordered columns.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Board {
    /// Its id.
    pub id: BoardId,
    /// The workspace.
    pub workspace_id: WorkspaceId,
    /// Name.
    pub name: String,
    /// Its columns (stages), in order.
    pub columns: Vec<BoardColumn>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A column (stage) of a board.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BoardColumn {
    /// Its id.
    pub id: ColumnId,
    /// Name.
    pub name: String,
    /// Its place (0 first).
    pub position: i32,
}

/// A column as a board update names it: an existing one by id, or a new one.
#[derive(Clone, Debug)]
pub struct ColumnSpec {
    /// An existing column to keep (and rename); `None` adds one.
    pub id: Option<ColumnId>,
    /// Its name.
    pub name: String,
}

/// Where a contact sits on a board.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Card {
    /// Its id.
    pub id: CardId,
    /// The board.
    pub board_id: BoardId,
    /// The column.
    pub column_id: ColumnId,
    /// The contact.
    pub contact_id: ContactId,
    /// When the contact was placed on the board.
    pub created_at: DateTime<Utc>,
    /// When it last moved.
    pub updated_at: DateTime<Utc>,
}

/// A move of a contact on a board.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BoardMove {
    /// Its id.
    pub id: MoveId,
    /// The board.
    pub board_id: BoardId,
    /// The contact.
    pub contact_id: ContactId,
    /// Where it came from (`None`: it was not on the board).
    pub from_column_id: Option<ColumnId>,
    /// Where it went (`None`: it left the board).
    pub to_column_id: Option<ColumnId>,
    /// The run that moved it.
    pub execution_id: Option<ExecutionId>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A snapshot of a deleted contact: its fields, tags, cards, subscriptions and assignments.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContactBackup {
    /// Its id.
    pub id: BackupId,
    /// The contact deleted.
    pub contact_id: ContactId,
    /// How it was deleted.
    pub mode: DeleteMode,
    /// What it was: a [`ContactDetail`].
    #[schema(value_type = Object)]
    pub snapshot: serde_json::Value,
    /// The run that deleted it.
    pub execution_id: Option<ExecutionId>,
    /// When.
    pub created_at: DateTime<Utc>,
    /// When it was restored.
    pub restored_at: Option<DateTime<Utc>>,
}

/// What `add_tag` did.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TagAdded {
    /// The tag.
    pub tag_id: TagId,
    /// Whether the tag was created.
    pub created: bool,
    /// Whether the contact already had it (nothing changed then).
    pub already_tagged: bool,
}

/// How `assign_agent` chooses.
#[derive(Clone, Debug)]
pub enum AgentChoice {
    /// This agent.
    Given(AgentId),
    /// By a strategy among active agents under capacity.
    Strategy(AssignStrategy),
}

/// What `subscribe_campaign` did.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscribed {
    /// The subscription.
    pub subscription_id: SubscriptionId,
    /// Whether the contact was subscribed already (nothing changed then).
    pub already_subscribed: bool,
    /// Whether an unsubscribed contact came back.
    pub resubscribed: bool,
}

/// What `move_to_board` did.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Moved {
    /// The board.
    pub board_id: BoardId,
    /// The column it came from (`None`: it was not on the board).
    pub from: Option<ColumnId>,
    /// The column it sits in now.
    pub to: ColumnId,
}

/// Where a change comes from: the API (no run) or a step of a run.
#[derive(Clone, Copy, Debug)]
pub struct Cause {
    /// The run whose step made the change.
    pub execution_id: Option<ExecutionId>,
    /// How deep in a chain of event-started runs that run is (0: started otherwise).
    pub depth: i32,
}

impl Cause {
    /// A change made through the API.
    pub const API: Cause = Cause {
        execution_id: None,
        depth: 0,
    };
}

/// Chooses the first step of a run an event starts. The engine implements it; the store calls
/// it inside the transaction that makes the change, so the event and its runs commit together.
pub trait RunPlanner: Send + Sync {
    /// The run of `version` to start for `event`, or why none can be.
    fn plan_event_run(
        &self,
        workspace: WorkspaceId,
        version: &FlowVersion,
        event: &ContactEvent,
        trigger: serde_json::Value,
    ) -> StoreResult<NewExecution>;
}

/// One claimed step's own transaction: the changes of an action that touches only Flowline's
/// data, made together with the step's completion and committed by [`StepTransaction::finish`],
/// guarded by the step's lease. Dropping it unfinished rolls everything back.
#[async_trait]
pub trait StepTransaction: Send {
    /// The run's contact as templates see it, read in this transaction; `None` when it has
    /// none or it was deleted.
    async fn contact_context(&mut self, id: ContactId) -> StoreResult<Option<serde_json::Value>>;

    /// Finds or creates the tag (by name, ignoring case) and attaches it.
    async fn add_tag(
        &mut self,
        contact: ContactId,
        name: &str,
        color: &str,
    ) -> StoreResult<TagAdded>;

    /// Assigns the contact to an agent, given or chosen.
    async fn assign_agent(
        &mut self,
        contact: ContactId,
        choice: AgentChoice,
        priority: Priority,
    ) -> StoreResult<Assignment>;

    /// Subscribes the contact (idempotent; re-subscribes an unsubscribed one).
    async fn subscribe(
        &mut self,
        contact: ContactId,
        campaign: CampaignId,
    ) -> StoreResult<Subscribed>;

    /// Deletes the contact, after a backup when asked.
    async fn delete_contact(
        &mut self,
        contact: ContactId,
        backup: bool,
        mode: DeleteMode,
    ) -> StoreResult<Option<BackupId>>;

    /// Places or moves the contact in a board column (default: the first).
    async fn move_to_board(
        &mut self,
        contact: ContactId,
        board: BoardId,
        column: Option<ColumnId>,
    ) -> StoreResult<Moved>;

    /// Records the step's end and commits everything; nothing is written when the lease was
    /// lost meanwhile.
    async fn finish(self: Box<Self>, params: FinishStep) -> StoreResult<FinishOutcome>;
}

/// The CRM part of the store.
#[async_trait]
pub trait CrmStore: Send + Sync {
    /// Opens a claimed step's transaction; `None` when its lease is no longer held.
    async fn begin_step(
        &self,
        workspace: WorkspaceId,
        execution: ExecutionId,
        step: StepId,
        lease_token: Uuid,
        planner: &std::sync::Arc<dyn RunPlanner>,
    ) -> StoreResult<Option<Box<dyn StepTransaction>>>;

    /// The run's contact as templates see it; `None` when deleted or missing.
    async fn contact_context(
        &self,
        workspace: WorkspaceId,
        id: ContactId,
    ) -> StoreResult<Option<serde_json::Value>>;

    /// Live contacts, newest first.
    async fn list_contacts(
        &self,
        workspace: WorkspaceId,
        filter: ContactFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Contact>>;

    /// A live contact with its tags, assignments, subscriptions and cards.
    async fn get_contact(
        &self,
        workspace: WorkspaceId,
        id: ContactId,
    ) -> StoreResult<ContactDetail>;

    /// Creates a contact (raising `contact.created`).
    async fn create_contact(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        params: NewContact,
        planner: &std::sync::Arc<dyn RunPlanner>,
    ) -> StoreResult<Contact>;

    /// Changes a contact (raising `contact.updated` when something changed).
    async fn update_contact(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: ContactId,
        update: ContactUpdate,
        planner: &std::sync::Arc<dyn RunPlanner>,
    ) -> StoreResult<Contact>;

    /// Deletes a contact: a backup, then `mode`.
    async fn delete_contact(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: ContactId,
        mode: DeleteMode,
    ) -> StoreResult<ContactBackup>;

    /// Attaches a tag to a contact (raising `tag.added` when it was not attached).
    async fn tag_contact(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        contact: ContactId,
        tag: TagId,
        planner: &std::sync::Arc<dyn RunPlanner>,
    ) -> StoreResult<bool>;

    /// Detaches a tag from a contact; `false` when it was not attached.
    async fn untag_contact(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        contact: ContactId,
        tag: TagId,
    ) -> StoreResult<bool>;

    /// The runs for a contact, newest first.
    async fn contact_executions(
        &self,
        workspace: WorkspaceId,
        id: ContactId,
        page: PageRequest,
    ) -> StoreResult<Page<Execution>>;

    /// Tags, newest first.
    async fn list_tags(&self, workspace: WorkspaceId, page: PageRequest) -> StoreResult<Page<Tag>>;
    /// One tag.
    async fn get_tag(&self, workspace: WorkspaceId, id: TagId) -> StoreResult<Tag>;
    /// Creates a tag; a name taken (ignoring case) is a conflict.
    async fn create_tag(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        name: String,
        color: String,
    ) -> StoreResult<Tag>;
    /// Renames or recolors a tag.
    async fn update_tag(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: TagId,
        name: Option<String>,
        color: Option<String>,
    ) -> StoreResult<Tag>;
    /// Deletes a tag, detaching it from every contact.
    async fn delete_tag(&self, workspace: WorkspaceId, actor: &Actor, id: TagId)
    -> StoreResult<()>;

    /// Agents, newest first.
    async fn list_agents(
        &self,
        workspace: WorkspaceId,
        page: PageRequest,
    ) -> StoreResult<Page<Agent>>;
    /// One agent.
    async fn get_agent(&self, workspace: WorkspaceId, id: AgentId) -> StoreResult<Agent>;
    /// Creates an agent.
    async fn create_agent(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        params: NewAgent,
    ) -> StoreResult<Agent>;
    /// Changes an agent.
    async fn update_agent(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: AgentId,
        update: AgentUpdate,
    ) -> StoreResult<Agent>;
    /// Deletes an agent that never had an assignment; one that had is a conflict (deactivate
    /// it instead, which keeps the history).
    async fn delete_agent(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: AgentId,
    ) -> StoreResult<()>;

    /// Campaigns, newest first.
    async fn list_campaigns(
        &self,
        workspace: WorkspaceId,
        page: PageRequest,
    ) -> StoreResult<Page<Campaign>>;
    /// One campaign.
    async fn get_campaign(&self, workspace: WorkspaceId, id: CampaignId) -> StoreResult<Campaign>;
    /// Creates a campaign.
    async fn create_campaign(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        name: String,
        status: CampaignStatus,
    ) -> StoreResult<Campaign>;
    /// Renames, archives or reopens a campaign.
    async fn update_campaign(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: CampaignId,
        name: Option<String>,
        status: Option<CampaignStatus>,
    ) -> StoreResult<Campaign>;
    /// Deletes a campaign without subscriptions; one with is a conflict (archive it instead).
    async fn delete_campaign(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: CampaignId,
    ) -> StoreResult<()>;
    /// A campaign's subscriptions, newest first.
    async fn list_subscriptions(
        &self,
        workspace: WorkspaceId,
        campaign: CampaignId,
        page: PageRequest,
    ) -> StoreResult<Page<Subscription>>;

    /// Unsubscribes a contact from a campaign; `NotFound` when it never subscribed.
    async fn unsubscribe(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        campaign: CampaignId,
        contact: ContactId,
    ) -> StoreResult<Subscription>;

    /// Boards, newest first.
    async fn list_boards(
        &self,
        workspace: WorkspaceId,
        page: PageRequest,
    ) -> StoreResult<Page<Board>>;
    /// One board.
    async fn get_board(&self, workspace: WorkspaceId, id: BoardId) -> StoreResult<Board>;
    /// Creates a board with its columns.
    async fn create_board(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        name: String,
        columns: Vec<String>,
    ) -> StoreResult<Board>;
    /// Renames a board and sets its columns: listed ones kept (renamed, reordered) or added;
    /// dropping a column that holds cards is a conflict.
    async fn update_board(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: BoardId,
        name: Option<String>,
        columns: Option<Vec<ColumnSpec>>,
    ) -> StoreResult<Board>;
    /// Deletes a board with its cards and history.
    async fn delete_board(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: BoardId,
    ) -> StoreResult<()>;
    /// A board's cards, by column position, oldest placed first.
    async fn list_cards(&self, workspace: WorkspaceId, board: BoardId) -> StoreResult<Vec<Card>>;
    /// Places or moves a contact on a board (raising `contact.moved`).
    async fn move_card(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        board: BoardId,
        contact: ContactId,
        column: Option<ColumnId>,
        planner: &std::sync::Arc<dyn RunPlanner>,
    ) -> StoreResult<Moved>;
    /// A board's moves, newest first.
    async fn board_history(
        &self,
        workspace: WorkspaceId,
        board: BoardId,
        page: PageRequest,
    ) -> StoreResult<Page<BoardMove>>;

    /// Contact backups, newest first.
    async fn list_backups(
        &self,
        workspace: WorkspaceId,
        page: PageRequest,
    ) -> StoreResult<Page<ContactBackup>>;
    /// One backup.
    async fn get_backup(&self, workspace: WorkspaceId, id: BackupId) -> StoreResult<ContactBackup>;
    /// Restores a contact from its backup: fields, tags, cards, subscriptions and assignments
    /// as they were. A backup restored before, or whose contact (or email) is live again, is a
    /// conflict.
    async fn restore_backup(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: BackupId,
    ) -> StoreResult<ContactDetail>;
}
