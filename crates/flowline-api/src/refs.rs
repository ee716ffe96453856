//! Checks that the records an input names exist, so a bad id is a 422 at save time rather than
//! a failed step later.

use flowline_core::action::ActionType;
use flowline_core::id::{AgentId, BoardId, CampaignId, ColumnId, WorkspaceId};
use flowline_core::validation::ValidationErrors;
use flowline_store::StoreError;
use serde_json::Value;

use crate::AppState;
use crate::error::ApiResult;

/// Records a missing record as a field error; any other failure is the request's.
pub(crate) fn missing(
    errors: &mut ValidationErrors,
    field: impl Into<String>,
    what: &str,
    error: StoreError,
) -> ApiResult<()> {
    match error {
        StoreError::NotFound(_) => {
            errors.push(field, format!("no such {what} in this workspace"));
            Ok(())
        }
        other => Err(other.into()),
    }
}

/// A config field holding a literal id (not a template), if it does.
fn literal_id<T: From<uuid::Uuid>>(config: &Value, field: &str) -> Option<T> {
    let text = config.get(field)?.as_str()?;
    if text.contains("{{") {
        return None;
    }
    uuid::Uuid::parse_str(text).ok().map(T::from)
}

/// Checks the ids a config of `action_type` names literally; templated ids are checked when
/// the step runs.
pub(crate) async fn check_action_refs(
    errors: &mut ValidationErrors,
    state: &AppState,
    workspace: WorkspaceId,
    action_type: ActionType,
    config: &Value,
) -> ApiResult<()> {
    match action_type {
        ActionType::AssignAgent => {
            if let Some(agent) = literal_id::<AgentId>(config, "agentId")
                && let Err(e) = state.store.get_agent(workspace, agent).await
            {
                missing(errors, "actionConfig.agentId", "agent", e)?;
            }
        }
        ActionType::SubscribeCampaign => {
            if let Some(campaign) = literal_id::<CampaignId>(config, "campaignId")
                && let Err(e) = state.store.get_campaign(workspace, campaign).await
            {
                missing(errors, "actionConfig.campaignId", "campaign", e)?;
            }
        }
        ActionType::MoveToBoard => {
            if let Some(board) = literal_id::<BoardId>(config, "boardId") {
                match state.store.get_board(workspace, board).await {
                    Ok(found) => {
                        if let Some(column) = literal_id::<ColumnId>(config, "columnId")
                            && !found.columns.iter().any(|c| c.id == column)
                        {
                            errors.push("actionConfig.columnId", "no such column on the board");
                        }
                    }
                    Err(e) => missing(errors, "actionConfig.boardId", "board", e)?,
                }
            }
        }
        _ => {}
    }
    Ok(())
}
