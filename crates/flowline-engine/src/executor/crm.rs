//! The basic CRM actions and `move_to_board`: each changes Flowline's own data inside the
//! step's transaction, which also records the step's end, so the change happens exactly once.

use async_trait::async_trait;
use flowline_core::action::advanced::MoveToBoardConfig;
use flowline_core::action::basic::{
    AddTagConfig, AssignAgentConfig, AssignStrategy, DeleteContactConfig, DeleteMode,
    SubscribeCampaignConfig,
};
use flowline_core::crm::is_color;
use flowline_core::id::ContactId;
use flowline_core::status::ErrorCategory;
use flowline_store::StoreError;
use flowline_store::crm::{AgentChoice, StepTransaction};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{InternalExecutor, StepContext, StepOutput};
use crate::failure::Failure;

/// The color a tag gets when `add_tag` creates it without one.
const DEFAULT_TAG_COLOR: &str = "#6b7280";

/// Renders a config string to text.
fn text(step: &StepContext<'_>, field: &str, source: &str) -> Result<String, Failure> {
    match step
        .renderer
        .render_str(field, source)
        .map_err(Failure::template)?
    {
        Value::String(s) => Ok(s),
        Value::Null => Err(Failure::new(
            ErrorCategory::Validation,
            format!("`{field}` rendered to nothing"),
            format!("make `{field}` render to a value"),
        )),
        other => Ok(other.to_string()),
    }
}

/// Renders a config string that names a record by id.
fn id_of(step: &StepContext<'_>, field: &str, source: &str) -> Result<Uuid, Failure> {
    let rendered = text(step, field, source)?;
    Uuid::parse_str(rendered.trim()).map_err(|_| {
        Failure::new(
            ErrorCategory::Validation,
            format!(
                "`{field}` is `{}`, which is not an id",
                rendered.chars().take(60).collect::<String>()
            ),
            format!("make `{field}` a UUID, or a template that renders to one"),
        )
    })
}

/// The run's contact, which every one of these actions needs.
fn contact(step: &StepContext<'_>) -> Result<ContactId, Failure> {
    step.contact_id.ok_or_else(|| {
        Failure::new(
            ErrorCategory::Validation,
            "this run has no contact",
            "start the run with a `contactId`, or from a trigger that has a contact",
        )
    })
}

/// A store refusal as the step's failure: what is missing or wrong, and what to do.
fn refused(error: StoreError, what: &str) -> Failure {
    match error {
        StoreError::NotFound("contact") => Failure::new(
            ErrorCategory::NotFound,
            "the run's contact no longer exists (it was deleted)",
            "nothing to do for this contact; restore it from its backup to run the flow again",
        ),
        StoreError::NotFound(entity @ ("active agent" | "agent under capacity")) => Failure::new(
            ErrorCategory::NotFound,
            format!("no {entity} to assign the contact to"),
            "add an active agent, reactivate one, or raise an agent's capacity",
        ),
        StoreError::NotFound(entity) => Failure::new(
            ErrorCategory::NotFound,
            format!("{what}: the {entity} does not exist in this workspace"),
            format!("pick an existing {entity} in the action's config"),
        ),
        StoreError::Invalid(errors) => Failure::new(
            ErrorCategory::Validation,
            format!(
                "{what}: {}",
                errors
                    .0
                    .iter()
                    .map(|e| e.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            "fix the action's config or the record it names",
        ),
        StoreError::Conflict(message) => Failure::new(
            ErrorCategory::Conflict,
            format!("{what}: {message}"),
            "the step will be retried per its policy",
        ),
        StoreError::Backend(e) => Failure::new(
            ErrorCategory::Internal,
            format!("{what}: the database failed: {e}"),
            "the step will be retried per its policy; check the database if it persists",
        ),
    }
}

fn done(output: Value, input: Value) -> StepOutput {
    StepOutput {
        output,
        variables: Vec::new(),
        input: Some(input),
    }
}

/// `add_tag`.
pub struct AddTag;

#[async_trait]
impl InternalExecutor for AddTag {
    async fn apply(
        &self,
        step: &StepContext<'_>,
        tx: &mut dyn StepTransaction,
    ) -> Result<StepOutput, Failure> {
        let config: AddTagConfig = step.saved_config()?;
        let name = text(step, "tagName", &config.tag_name)?.trim().to_owned();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(Failure::new(
                ErrorCategory::Validation,
                "`tagName` must render to 1 to 100 characters",
                "check the template in `tagName`",
            ));
        }
        let color = match &config.tag_color {
            Some(c) => text(step, "tagColor", c)?,
            None => DEFAULT_TAG_COLOR.to_owned(),
        };
        if !is_color(&color) {
            return Err(Failure::new(
                ErrorCategory::Validation,
                format!("`tagColor` rendered to `{color}`, which is not #rrggbb"),
                "make `tagColor` a color like #22c55e",
            ));
        }
        let contact = contact(step)?;
        let added = tx
            .add_tag(contact, &name, &color)
            .await
            .map_err(|e| refused(e, "add_tag"))?;
        Ok(done(
            serde_json::to_value(&added).unwrap_or(Value::Null),
            json!({"tagName": name, "tagColor": color}),
        ))
    }
}

/// `assign_agent`.
pub struct AssignAgent;

#[async_trait]
impl InternalExecutor for AssignAgent {
    async fn apply(
        &self,
        step: &StepContext<'_>,
        tx: &mut dyn StepTransaction,
    ) -> Result<StepOutput, Failure> {
        let config: AssignAgentConfig = step.saved_config()?;
        let choice = match (&config.agent_id, config.strategy) {
            (Some(agent), None) => AgentChoice::Given(id_of(step, "agentId", agent)?.into()),
            (None, Some(strategy)) => AgentChoice::Strategy(strategy),
            (None, None) => AgentChoice::Strategy(AssignStrategy::RoundRobin),
            (Some(_), Some(_)) => {
                return Err(Failure::new(
                    ErrorCategory::Validation,
                    "give `agentId` or `strategy`, not both",
                    "edit the action",
                ));
            }
        };
        let input = match &choice {
            AgentChoice::Given(a) => json!({"agentId": a, "priority": config.priority}),
            AgentChoice::Strategy(s) => json!({"strategy": s, "priority": config.priority}),
        };
        let contact = contact(step)?;
        let assignment = tx
            .assign_agent(contact, choice, config.priority)
            .await
            .map_err(|e| refused(e, "assign_agent"))?;
        Ok(done(
            json!({
                "agentId": assignment.agent_id,
                "assignmentId": assignment.id,
                "priority": assignment.priority,
                "strategy": assignment.strategy,
            }),
            input,
        ))
    }
}

/// `subscribe_campaign`.
pub struct SubscribeCampaign;

#[async_trait]
impl InternalExecutor for SubscribeCampaign {
    async fn apply(
        &self,
        step: &StepContext<'_>,
        tx: &mut dyn StepTransaction,
    ) -> Result<StepOutput, Failure> {
        let config: SubscribeCampaignConfig = step.saved_config()?;
        let campaign = id_of(step, "campaignId", &config.campaign_id)?;
        let contact = contact(step)?;
        let subscribed = tx
            .subscribe(contact, campaign.into())
            .await
            .map_err(|e| refused(e, "subscribe_campaign"))?;
        Ok(done(
            serde_json::to_value(&subscribed).unwrap_or(Value::Null),
            json!({"campaignId": campaign}),
        ))
    }
}

/// `delete_contact`.
pub struct DeleteContact;

#[async_trait]
impl InternalExecutor for DeleteContact {
    async fn apply(
        &self,
        step: &StepContext<'_>,
        tx: &mut dyn StepTransaction,
    ) -> Result<StepOutput, Failure> {
        let config: DeleteContactConfig = step.saved_config()?;
        let contact = contact(step)?;
        let backup = tx
            .delete_contact(contact, config.backup, config.mode)
            .await
            .map_err(|e| refused(e, "delete_contact"))?;
        Ok(done(
            json!({
                "backupId": backup,
                "contactId": contact,
                "restorable": config.mode == DeleteMode::Soft && backup.is_some(),
            }),
            json!({"backup": config.backup, "mode": config.mode}),
        ))
    }
}

/// `move_to_board`.
pub struct MoveToBoard;

#[async_trait]
impl InternalExecutor for MoveToBoard {
    async fn apply(
        &self,
        step: &StepContext<'_>,
        tx: &mut dyn StepTransaction,
    ) -> Result<StepOutput, Failure> {
        let config: MoveToBoardConfig = step.saved_config()?;
        let board = id_of(step, "boardId", &config.board_id)?;
        let column = config
            .column_id
            .as_deref()
            .map(|c| id_of(step, "columnId", c))
            .transpose()?;
        let contact = contact(step)?;
        let moved = tx
            .move_to_board(contact, board.into(), column.map(Into::into))
            .await
            .map_err(|e| refused(e, "move_to_board"))?;
        Ok(done(
            serde_json::to_value(&moved).unwrap_or(Value::Null),
            json!({"boardId": board, "columnId": column}),
        ))
    }
}
