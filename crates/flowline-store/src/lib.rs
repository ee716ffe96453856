//! Flowline's storage seam.
//!
//! [`Store`] is the one interface the engine, the API and the binary use to reach the database;
//! `flowline-store-sqlite` and `flowline-store-postgres` implement it, and
//! `flowline-store-tests` holds the conformance suite both must pass. This crate owns the records
//! and parameters that cross the seam and [`StoreError`]. It knows no SQL and no HTTP.
//!
//! Every tenant operation takes the workspace it acts in; every change takes the [`Actor`] who
//! makes it and writes its audit entry in the same transaction as the change.

pub mod audit;
pub mod crm;
pub mod error;
pub mod execution;
pub mod flow;
pub mod page;
pub mod retention;
pub mod secrets;
pub mod stats;
pub mod tenancy;

use async_trait::async_trait;
use flowline_core::id::{ActionId, ExecutionId, FlowId, MemberId, StepId, TokenId, WorkspaceId};
use flowline_core::token::TokenHash;

use audit::{AuditEntry, AuditFilter};
pub use error::StoreError;
use execution::{
    ClaimParams, ClaimedStep, DueSchedule, Execution, ExecutionDetail, FinishOutcome, FinishStep,
    FlowVersion, NewExecution, Started, Variable,
};
use flow::{
    ActionUpdate, Flow, FlowAction, FlowFilter, FlowUpdate, NewAction, NewFlow, StepSummary,
};
use page::{Page, PageRequest};
use tenancy::{
    Actor, CreatedWorkspace, Member, MemberUpdate, NewMember, NewToken, NewWorkspace, Principal,
    TokenRecord, Workspace,
};

/// What every storage operation returns.
pub type StoreResult<T> = Result<T, StoreError>;

/// Flowline's storage. Implementations must behave identically; `flowline-store-tests` checks it.
#[async_trait]
pub trait Store:
    crm::CrmStore
    + secrets::SecretStore
    + stats::StatsStore
    + retention::RetentionStore
    + Send
    + Sync
    + 'static
{
    /// A signal that changes whenever this process queued or returned work to a queue, so idle
    /// workers wake without polling.
    fn subscribe_work(&self) -> tokio::sync::watch::Receiver<execution::WorkSignal>;

    /// Carries work signals between processes sharing the database until `shutdown`: on
    /// PostgreSQL, LISTEN for other processes' signals and NOTIFY them of this one's (coalesced:
    /// one NOTIFY for many steps); on SQLite, which has one process, nothing.
    async fn relay_wakeups(&self, shutdown: tokio::sync::watch::Receiver<bool>);

    /// Answers when the database does.
    async fn ping(&self) -> StoreResult<()>;

    /// On a database where no workspace was ever created, creates the first one with an owner
    /// and a token; afterwards `None`. Safe against concurrent callers.
    async fn bootstrap(&self, params: NewWorkspace) -> StoreResult<Option<CreatedWorkspace>>;

    /// Creates a workspace with its first owner and that owner's token.
    async fn create_workspace(&self, params: NewWorkspace) -> StoreResult<CreatedWorkspace>;

    /// A workspace.
    async fn get_workspace(&self, workspace: WorkspaceId) -> StoreResult<Workspace>;

    /// Finds the live token with this hash and whom it speaks for; `None` for unknown or revoked
    /// tokens. Records the use.
    async fn authenticate(&self, hash: &TokenHash) -> StoreResult<Option<Principal>>;

    /// The members of a workspace, newest first.
    async fn list_members(
        &self,
        workspace: WorkspaceId,
        page: PageRequest,
    ) -> StoreResult<Page<Member>>;

    /// One member.
    async fn get_member(&self, workspace: WorkspaceId, id: MemberId) -> StoreResult<Member>;

    /// Adds a member.
    async fn create_member(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        params: NewMember,
    ) -> StoreResult<Member>;

    /// Changes a member; refuses (conflict) to leave the workspace without an owner.
    async fn update_member(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: MemberId,
        update: MemberUpdate,
    ) -> StoreResult<Member>;

    /// Removes a member and revokes its tokens; refuses (conflict) to remove the last owner.
    async fn delete_member(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: MemberId,
    ) -> StoreResult<()>;

    /// Creates a token for an existing member.
    async fn create_token(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        params: NewToken,
    ) -> StoreResult<TokenRecord>;

    /// Adds a member and a token for it, together.
    async fn create_member_with_token(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        member: NewMember,
        token_name: String,
        hash: TokenHash,
    ) -> StoreResult<(Member, TokenRecord)>;

    /// The tokens of a workspace (never their hashes), newest first.
    async fn list_tokens(
        &self,
        workspace: WorkspaceId,
        page: PageRequest,
    ) -> StoreResult<Page<TokenRecord>>;

    /// One token.
    async fn get_token(&self, workspace: WorkspaceId, id: TokenId) -> StoreResult<TokenRecord>;

    /// Revokes a token; revoking a revoked token changes nothing.
    async fn revoke_token(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: TokenId,
    ) -> StoreResult<TokenRecord>;

    /// The flows of a workspace, newest first.
    async fn list_flows(
        &self,
        workspace: WorkspaceId,
        filter: FlowFilter,
        page: PageRequest,
    ) -> StoreResult<Page<Flow>>;

    /// One flow.
    async fn get_flow(&self, workspace: WorkspaceId, id: FlowId) -> StoreResult<Flow>;

    /// Creates a draft flow.
    async fn create_flow(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        params: NewFlow,
    ) -> StoreResult<Flow>;

    /// Changes a flow. A graph that drops a node still holding actions is a conflict.
    async fn update_flow(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: FlowId,
        update: FlowUpdate,
    ) -> StoreResult<Flow>;

    /// Deletes a flow and its actions; a flow that has runs is a conflict (archive it instead).
    async fn delete_flow(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: FlowId,
    ) -> StoreResult<()>;

    /// The actions of a flow, by node and position.
    async fn list_actions(
        &self,
        workspace: WorkspaceId,
        flow: FlowId,
    ) -> StoreResult<Vec<FlowAction>>;

    /// One action.
    async fn get_action(&self, workspace: WorkspaceId, id: ActionId) -> StoreResult<FlowAction>;

    /// Adds an action to a node of a flow (the node must exist in the flow's graph), shifting
    /// the node's later actions down when a position is given.
    async fn create_action(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        params: NewAction,
    ) -> StoreResult<FlowAction>;

    /// Changes an action of a flow.
    async fn update_action(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        flow: FlowId,
        id: ActionId,
        update: ActionUpdate,
    ) -> StoreResult<FlowAction>;

    /// Deletes an action of a flow; when `expected_type` is given and the action has another
    /// type by now, nothing is deleted (conflict).
    async fn delete_action(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        flow: FlowId,
        id: ActionId,
        expected_type: Option<flowline_core::action::ActionType>,
    ) -> StoreResult<()>;

    /// The step executions of one action, newest first.
    async fn list_action_executions(
        &self,
        workspace: WorkspaceId,
        action: ActionId,
        page: PageRequest,
    ) -> StoreResult<Page<StepSummary>>;

    /// Appends an audit entry on its own (for changes made outside a store operation).
    async fn record_audit(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        entry: audit::NewAuditEntry,
    ) -> StoreResult<()>;

    /// The audit log, newest first.
    async fn list_audit(
        &self,
        workspace: WorkspaceId,
        filter: AuditFilter,
        page: PageRequest,
    ) -> StoreResult<Page<AuditEntry>>;

    /// Publishes a flow's draft: snapshots its graph and enabled actions as version + 1 and
    /// makes it active. Archived flows are a conflict.
    async fn publish_flow(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: FlowId,
    ) -> StoreResult<Flow>;

    /// A published version of a flow.
    async fn get_flow_version(
        &self,
        workspace: WorkspaceId,
        flow: FlowId,
        version: i32,
    ) -> StoreResult<FlowVersion>;

    /// Starts a run: writes it and its first step in one transaction. The flow must be active
    /// (conflict otherwise) and the contact, when given, must exist. A dedupe key seen before
    /// returns the earlier run.
    async fn start_execution(
        &self,
        workspace: WorkspaceId,
        params: NewExecution,
    ) -> StoreResult<Started>;

    /// Starts many runs of one flow and version at once, in one transaction: all or none. For
    /// backlogs and bulk starts; a run of a batch has no dedupe key (invalid otherwise). The
    /// flow must be active (conflict otherwise) and every contact must exist.
    async fn start_executions(
        &self,
        workspace: WorkspaceId,
        runs: Vec<NewExecution>,
    ) -> StoreResult<Vec<ExecutionId>>;

    /// Sets (or with `None` removes) a flow's inbound webhook token.
    async fn set_webhook_token(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        flow: FlowId,
        hash: Option<TokenHash>,
    ) -> StoreResult<Flow>;

    /// The workspace of the flow whose webhook token has this hash; `None` when none has.
    async fn find_webhook(
        &self,
        flow: FlowId,
        hash: &TokenHash,
    ) -> StoreResult<Option<WorkspaceId>>;

    /// Schedules whose slot has come, across workspaces, oldest first.
    async fn due_schedules(&self, limit: u32) -> StoreResult<Vec<DueSchedule>>;

    /// Moves a flow's schedule from `slot` to `next`, starting `run` (keyed by the slot) in the
    /// same transaction; `false` when another process moved it first.
    async fn advance_schedule(
        &self,
        workspace: WorkspaceId,
        flow: FlowId,
        slot: chrono::DateTime<chrono::Utc>,
        next: Option<chrono::DateTime<chrono::Utc>>,
        run: Option<NewExecution>,
    ) -> StoreResult<bool>;

    /// A run with its steps (and their attempts) and variables.
    async fn get_execution(
        &self,
        workspace: WorkspaceId,
        id: ExecutionId,
    ) -> StoreResult<ExecutionDetail>;

    /// The runs of a flow, newest first.
    async fn list_executions(
        &self,
        workspace: WorkspaceId,
        flow: FlowId,
        page: PageRequest,
    ) -> StoreResult<Page<Execution>>;

    /// Cancels a run: its pending steps at once; running ones end `cancelled` when their worker
    /// reports. A finished run is a conflict.
    async fn cancel_execution(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: ExecutionId,
    ) -> StoreResult<Execution>;

    /// Resumes a failed run from its failed step, with the variables it had. Any other status is
    /// a conflict.
    async fn retry_execution(
        &self,
        workspace: WorkspaceId,
        actor: &Actor,
        id: ExecutionId,
    ) -> StoreResult<Execution>;

    /// The variables of a run.
    async fn execution_variables(
        &self,
        workspace: WorkspaceId,
        id: ExecutionId,
    ) -> StoreResult<Vec<Variable>>;

    /// Claims due steps of a queue, fairly across workspaces, each with a lease.
    async fn claim_steps(&self, params: &ClaimParams) -> StoreResult<Vec<ClaimedStep>>;

    /// Extends the leases of steps still held; returns the ids whose work should stop: taken by
    /// another worker, returned to the queue, or of a cancelled run. A step that has ended is
    /// not among them (its worker's own report settles it).
    async fn heartbeat_steps(
        &self,
        held: &[(StepId, uuid::Uuid)],
        lease: std::time::Duration,
    ) -> StoreResult<Vec<StepId>>;

    /// Records how a claimed step ended and what its run does next, in one transaction guarded
    /// by the lease token.
    async fn finish_step(&self, params: FinishStep) -> StoreResult<FinishOutcome> {
        self.finish_shared(std::sync::Arc::new(params)).await
    }

    /// [`finish_step`](Store::finish_step) with a report the caller keeps a share of: a worker
    /// that may have to send it again, or reads it after, needs no copy.
    async fn finish_shared(&self, params: std::sync::Arc<FinishStep>)
    -> StoreResult<FinishOutcome>;

    /// Returns steps whose lease expired to their queue (a failed attempt, `worker_lost`), or
    /// fails them when no attempts are left. Returns how many were rescued.
    async fn rescue_expired(&self, limit: u32) -> StoreResult<u64>;
}
