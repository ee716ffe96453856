//! Tags, agents, campaigns and boards.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use flowline_core::crm::{CampaignStatus, is_color};
use flowline_core::email::Email;
use flowline_core::id::{AgentId, BoardId, CampaignId, ColumnId, ContactId, TagId};
use flowline_core::role::Role;
use flowline_core::validation::ValidationErrors;
use flowline_store::crm::{
    Agent, AgentUpdate, Board, BoardMove, Campaign, Card, ColumnSpec, Moved, NewAgent,
    Subscription, Tag,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Auth;
use crate::contacts::planner;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::nullable::nullable;
use crate::page::{PageBody, PageQuery};

/// The routes of tags, agents, campaigns and boards.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_tags, create_tag))
        .routes(routes!(get_tag, update_tag, delete_tag))
        .routes(routes!(list_agents, create_agent))
        .routes(routes!(get_agent, update_agent, delete_agent))
        .routes(routes!(list_campaigns, create_campaign))
        .routes(routes!(get_campaign, update_campaign, delete_campaign))
        .routes(routes!(campaign_subscriptions))
        .routes(routes!(unsubscribe))
        .routes(routes!(list_boards, create_board))
        .routes(routes!(get_board, update_board, delete_board))
        .routes(routes!(board_cards, move_card))
        .routes(routes!(board_history))
}

/// The most columns a board may have.
const MAX_COLUMNS: usize = 50;

fn check_name(errors: &mut ValidationErrors, field: &str, name: &str, max: usize) -> String {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > max {
        errors.push(field, format!("1 to {max} characters"));
    } else if name.chars().any(|c| c.is_control()) {
        errors.push(field, "must not contain control characters");
    }
    name.to_owned()
}

fn check_color(errors: &mut ValidationErrors, color: &str) {
    if !is_color(color) {
        errors.push("color", "must be #rrggbb, like #22c55e");
    }
}

fn invalid(errors: ValidationErrors) -> ApiResult<()> {
    errors.into_result().map_err(ApiError::Validation)
}

// ---- tags ------------------------------------------------------------------------------------

/// A new tag.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTag {
    /// 1 to 100 characters, unique in the workspace ignoring case.
    name: String,
    /// `#rrggbb` (default `#6b7280`).
    color: Option<String>,
}

/// Changes to a tag.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateTag {
    /// A new name.
    name: Option<String>,
    /// A new color.
    color: Option<String>,
}

/// Tags, newest first.
#[utoipa::path(get, path = "/api/tags", tag = "crm", params(PageQuery),
    responses((status = 200, body = PageBody<Tag>)))]
async fn list_tags(
    auth: Auth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<PageBody<Tag>>> {
    Ok(Json(
        state
            .store
            .list_tags(auth.workspace(), query.page()?)
            .await?
            .into(),
    ))
}

/// Creates a tag.
#[utoipa::path(post, path = "/api/tags", tag = "crm", request_body = CreateTag,
    responses((status = 201, body = Tag), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_tag(
    auth: Auth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateTag>,
) -> ApiResult<(StatusCode, Json<Tag>)> {
    auth.require(Role::Editor)?;
    let mut errors = ValidationErrors::default();
    let name = check_name(&mut errors, "name", &body.name, 100);
    let color = body.color.unwrap_or_else(|| "#6b7280".to_owned());
    check_color(&mut errors, &color);
    invalid(errors)?;
    let tag = state
        .store
        .create_tag(auth.workspace(), &auth.actor(), name, color)
        .await?;
    Ok((StatusCode::CREATED, Json(tag)))
}

/// One tag.
#[utoipa::path(get, path = "/api/tags/{tagId}", tag = "crm",
    params(("tagId" = TagId, Path, description = "The tag")),
    responses((status = 200, body = Tag), (status = 404, body = Problem)))]
async fn get_tag(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TagId>,
) -> ApiResult<Json<Tag>> {
    Ok(Json(state.store.get_tag(auth.workspace(), id).await?))
}

/// Renames or recolors a tag.
#[utoipa::path(put, path = "/api/tags/{tagId}", tag = "crm",
    params(("tagId" = TagId, Path, description = "The tag")), request_body = UpdateTag,
    responses((status = 200, body = Tag), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
async fn update_tag(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TagId>,
    ApiJson(body): ApiJson<UpdateTag>,
) -> ApiResult<Json<Tag>> {
    auth.require(Role::Editor)?;
    let mut errors = ValidationErrors::default();
    let name = body.name.map(|n| check_name(&mut errors, "name", &n, 100));
    if let Some(color) = &body.color {
        check_color(&mut errors, color);
    }
    invalid(errors)?;
    let tag = state
        .store
        .update_tag(auth.workspace(), &auth.actor(), id, name, body.color)
        .await?;
    Ok(Json(tag))
}

/// Deletes a tag, detaching it from every contact that has it.
#[utoipa::path(delete, path = "/api/tags/{tagId}", tag = "crm",
    params(("tagId" = TagId, Path, description = "The tag")),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_tag(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<TagId>,
) -> ApiResult<StatusCode> {
    auth.require(Role::Editor)?;
    state
        .store
        .delete_tag(auth.workspace(), &auth.actor(), id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- agents ----------------------------------------------------------------------------------

/// A new agent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateAgent {
    /// 1 to 200 characters.
    name: String,
    /// An email address.
    email: Option<String>,
    /// Takes new assignments (default true).
    active: Option<bool>,
    /// The most live contacts assigned at once, 0 to 1,000,000 (default 100).
    capacity: Option<i32>,
}

/// Changes to an agent.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateAgent {
    /// A new name.
    name: Option<String>,
    /// A new email, or `null`.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    email: Option<Option<String>>,
    /// Active or not.
    active: Option<bool>,
    /// A new capacity.
    capacity: Option<i32>,
}

fn check_agent_email(errors: &mut ValidationErrors, email: Option<String>) -> Option<String> {
    match Email::parse(&email?) {
        Ok(e) => Some(e.into_string()),
        Err(e) => {
            errors.push("email", e.to_string());
            None
        }
    }
}

fn check_capacity(errors: &mut ValidationErrors, capacity: i32) {
    if !(0..=1_000_000).contains(&capacity) {
        errors.push("capacity", "0 to 1,000,000");
    }
}

/// Agents, newest first, with their current load.
#[utoipa::path(get, path = "/api/agents", tag = "crm", params(PageQuery),
    responses((status = 200, body = PageBody<Agent>)))]
async fn list_agents(
    auth: Auth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<PageBody<Agent>>> {
    Ok(Json(
        state
            .store
            .list_agents(auth.workspace(), query.page()?)
            .await?
            .into(),
    ))
}

/// Creates an agent.
#[utoipa::path(post, path = "/api/agents", tag = "crm", request_body = CreateAgent,
    responses((status = 201, body = Agent), (status = 422, body = Problem)))]
async fn create_agent(
    auth: Auth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateAgent>,
) -> ApiResult<(StatusCode, Json<Agent>)> {
    auth.require(Role::Editor)?;
    let mut errors = ValidationErrors::default();
    let name = check_name(&mut errors, "name", &body.name, 200);
    let email = check_agent_email(&mut errors, body.email);
    let capacity = body.capacity.unwrap_or(100);
    check_capacity(&mut errors, capacity);
    invalid(errors)?;
    let agent = state
        .store
        .create_agent(
            auth.workspace(),
            &auth.actor(),
            NewAgent {
                name,
                email,
                active: body.active.unwrap_or(true),
                capacity,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(agent)))
}

/// One agent.
#[utoipa::path(get, path = "/api/agents/{agentId}", tag = "crm",
    params(("agentId" = AgentId, Path, description = "The agent")),
    responses((status = 200, body = Agent), (status = 404, body = Problem)))]
async fn get_agent(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<AgentId>,
) -> ApiResult<Json<Agent>> {
    Ok(Json(state.store.get_agent(auth.workspace(), id).await?))
}

/// Changes an agent.
#[utoipa::path(put, path = "/api/agents/{agentId}", tag = "crm",
    params(("agentId" = AgentId, Path, description = "The agent")), request_body = UpdateAgent,
    responses((status = 200, body = Agent), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_agent(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<AgentId>,
    ApiJson(body): ApiJson<UpdateAgent>,
) -> ApiResult<Json<Agent>> {
    auth.require(Role::Editor)?;
    let mut errors = ValidationErrors::default();
    let name = body.name.map(|n| check_name(&mut errors, "name", &n, 200));
    let email = body.email.map(|e| check_agent_email(&mut errors, e));
    if let Some(capacity) = body.capacity {
        check_capacity(&mut errors, capacity);
    }
    invalid(errors)?;
    let agent = state
        .store
        .update_agent(
            auth.workspace(),
            &auth.actor(),
            id,
            AgentUpdate {
                name,
                email,
                active: body.active,
                capacity: body.capacity,
            },
        )
        .await?;
    Ok(Json(agent))
}

/// Deletes an agent that never had an assignment (409 otherwise: deactivate it instead).
#[utoipa::path(delete, path = "/api/agents/{agentId}", tag = "crm",
    params(("agentId" = AgentId, Path, description = "The agent")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_agent(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<AgentId>,
) -> ApiResult<StatusCode> {
    auth.require(Role::Editor)?;
    state
        .store
        .delete_agent(auth.workspace(), &auth.actor(), id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- campaigns -------------------------------------------------------------------------------

/// A new campaign.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateCampaign {
    /// 1 to 200 characters.
    name: String,
    /// `active` (default) or `archived`.
    status: Option<CampaignStatus>,
}

/// Changes to a campaign.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateCampaign {
    /// A new name.
    name: Option<String>,
    /// `active` or `archived`.
    status: Option<CampaignStatus>,
}

/// Campaigns, newest first.
#[utoipa::path(get, path = "/api/campaigns", tag = "crm", params(PageQuery),
    responses((status = 200, body = PageBody<Campaign>)))]
async fn list_campaigns(
    auth: Auth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<PageBody<Campaign>>> {
    Ok(Json(
        state
            .store
            .list_campaigns(auth.workspace(), query.page()?)
            .await?
            .into(),
    ))
}

/// Creates a campaign.
#[utoipa::path(post, path = "/api/campaigns", tag = "crm", request_body = CreateCampaign,
    responses((status = 201, body = Campaign), (status = 422, body = Problem)))]
async fn create_campaign(
    auth: Auth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateCampaign>,
) -> ApiResult<(StatusCode, Json<Campaign>)> {
    auth.require(Role::Editor)?;
    let mut errors = ValidationErrors::default();
    let name = check_name(&mut errors, "name", &body.name, 200);
    invalid(errors)?;
    let campaign = state
        .store
        .create_campaign(
            auth.workspace(),
            &auth.actor(),
            name,
            body.status.unwrap_or(CampaignStatus::Active),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(campaign)))
}

/// One campaign.
#[utoipa::path(get, path = "/api/campaigns/{campaignId}", tag = "crm",
    params(("campaignId" = CampaignId, Path, description = "The campaign")),
    responses((status = 200, body = Campaign), (status = 404, body = Problem)))]
async fn get_campaign(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<CampaignId>,
) -> ApiResult<Json<Campaign>> {
    Ok(Json(state.store.get_campaign(auth.workspace(), id).await?))
}

/// Renames, archives or reopens a campaign.
#[utoipa::path(put, path = "/api/campaigns/{campaignId}", tag = "crm",
    params(("campaignId" = CampaignId, Path, description = "The campaign")), request_body = UpdateCampaign,
    responses((status = 200, body = Campaign), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn update_campaign(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<CampaignId>,
    ApiJson(body): ApiJson<UpdateCampaign>,
) -> ApiResult<Json<Campaign>> {
    auth.require(Role::Editor)?;
    let mut errors = ValidationErrors::default();
    let name = body.name.map(|n| check_name(&mut errors, "name", &n, 200));
    invalid(errors)?;
    let campaign = state
        .store
        .update_campaign(auth.workspace(), &auth.actor(), id, name, body.status)
        .await?;
    Ok(Json(campaign))
}

/// Deletes a campaign without subscriptions (409 otherwise: archive it instead).
#[utoipa::path(delete, path = "/api/campaigns/{campaignId}", tag = "crm",
    params(("campaignId" = CampaignId, Path, description = "The campaign")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_campaign(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<CampaignId>,
) -> ApiResult<StatusCode> {
    auth.require(Role::Editor)?;
    state
        .store
        .delete_campaign(auth.workspace(), &auth.actor(), id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A campaign's subscriptions (of live contacts), newest first.
#[utoipa::path(get, path = "/api/campaigns/{campaignId}/subscriptions", tag = "crm",
    params(("campaignId" = CampaignId, Path, description = "The campaign"), PageQuery),
    responses((status = 200, body = PageBody<Subscription>), (status = 404, body = Problem)))]
async fn campaign_subscriptions(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<CampaignId>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<PageBody<Subscription>>> {
    Ok(Json(
        state
            .store
            .list_subscriptions(auth.workspace(), id, query.page()?)
            .await?
            .into(),
    ))
}

/// Unsubscribes a contact from a campaign (`subscribe_campaign` subscribes it again).
#[utoipa::path(delete, path = "/api/campaigns/{campaignId}/subscriptions/{contactId}", tag = "crm",
    params(("campaignId" = CampaignId, Path, description = "The campaign"), ("contactId" = ContactId, Path, description = "The contact")),
    responses((status = 200, body = Subscription), (status = 404, body = Problem)))]
async fn unsubscribe(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath((campaign, contact)): ApiPath<(CampaignId, ContactId)>,
) -> ApiResult<Json<Subscription>> {
    auth.require(Role::Editor)?;
    Ok(Json(
        state
            .store
            .unsubscribe(auth.workspace(), &auth.actor(), campaign, contact)
            .await?,
    ))
}

// ---- boards ----------------------------------------------------------------------------------

/// A column as a board update lists it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ColumnBody {
    /// An existing column to keep (and rename); absent adds a column.
    #[schema(value_type = Option<String>)]
    id: Option<ColumnId>,
    /// 1 to 200 characters.
    name: String,
}

/// A new board.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBoard {
    /// 1 to 200 characters.
    name: String,
    /// Its columns' names, in order (at most 50).
    columns: Vec<String>,
}

/// Changes to a board.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateBoard {
    /// A new name.
    name: Option<String>,
    /// The columns, in their new order: listed ones are kept (by id) or added (no id); a column
    /// left out is deleted, which is refused (409) while contacts sit in it.
    columns: Option<Vec<ColumnBody>>,
}

fn check_columns(errors: &mut ValidationErrors, count: usize) {
    if count > MAX_COLUMNS {
        errors.push("columns", format!("at most {MAX_COLUMNS} columns"));
    }
}

/// Boards, newest first.
#[utoipa::path(get, path = "/api/boards", tag = "crm", params(PageQuery),
    responses((status = 200, body = PageBody<Board>)))]
async fn list_boards(
    auth: Auth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<PageBody<Board>>> {
    Ok(Json(
        state
            .store
            .list_boards(auth.workspace(), query.page()?)
            .await?
            .into(),
    ))
}

/// Creates a board with its columns.
#[utoipa::path(post, path = "/api/boards", tag = "crm", request_body = CreateBoard,
    responses((status = 201, body = Board), (status = 422, body = Problem)))]
async fn create_board(
    auth: Auth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateBoard>,
) -> ApiResult<(StatusCode, Json<Board>)> {
    auth.require(Role::Editor)?;
    let mut errors = ValidationErrors::default();
    let name = check_name(&mut errors, "name", &body.name, 200);
    check_columns(&mut errors, body.columns.len());
    let columns: Vec<String> = body
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| check_name(&mut errors, &format!("columns[{i}]"), c, 200))
        .collect();
    invalid(errors)?;
    let board = state
        .store
        .create_board(auth.workspace(), &auth.actor(), name, columns)
        .await?;
    Ok((StatusCode::CREATED, Json(board)))
}

/// One board with its columns.
#[utoipa::path(get, path = "/api/boards/{boardId}", tag = "crm",
    params(("boardId" = BoardId, Path, description = "The board")),
    responses((status = 200, body = Board), (status = 404, body = Problem)))]
async fn get_board(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<BoardId>,
) -> ApiResult<Json<Board>> {
    Ok(Json(state.store.get_board(auth.workspace(), id).await?))
}

/// Renames a board or sets its columns.
#[utoipa::path(put, path = "/api/boards/{boardId}", tag = "crm",
    params(("boardId" = BoardId, Path, description = "The board")), request_body = UpdateBoard,
    responses((status = 200, body = Board), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
async fn update_board(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<BoardId>,
    ApiJson(body): ApiJson<UpdateBoard>,
) -> ApiResult<Json<Board>> {
    auth.require(Role::Editor)?;
    let mut errors = ValidationErrors::default();
    let name = body.name.map(|n| check_name(&mut errors, "name", &n, 200));
    let columns = body.columns.map(|columns| {
        check_columns(&mut errors, columns.len());
        columns
            .into_iter()
            .enumerate()
            .map(|(i, c)| ColumnSpec {
                id: c.id,
                name: check_name(&mut errors, &format!("columns[{i}].name"), &c.name, 200),
            })
            .collect::<Vec<_>>()
    });
    invalid(errors)?;
    let board = state
        .store
        .update_board(auth.workspace(), &auth.actor(), id, name, columns)
        .await?;
    Ok(Json(board))
}

/// Deletes a board with its cards and move history.
#[utoipa::path(delete, path = "/api/boards/{boardId}", tag = "crm",
    params(("boardId" = BoardId, Path, description = "The board")),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_board(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<BoardId>,
) -> ApiResult<StatusCode> {
    auth.require(Role::Editor)?;
    state
        .store
        .delete_board(auth.workspace(), &auth.actor(), id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A board's cards, column by column.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BoardCards {
    /// The board.
    board: Board,
    /// Where each live contact sits, by column position.
    cards: Vec<Card>,
}

/// The contacts on a board, by column.
#[utoipa::path(get, path = "/api/boards/{boardId}/cards", tag = "crm",
    params(("boardId" = BoardId, Path, description = "The board")),
    responses((status = 200, body = BoardCards), (status = 404, body = Problem)))]
async fn board_cards(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<BoardId>,
) -> ApiResult<Json<BoardCards>> {
    let board = state.store.get_board(auth.workspace(), id).await?;
    let cards = state.store.list_cards(auth.workspace(), id).await?;
    Ok(Json(BoardCards { board, cards }))
}

/// Where to put a contact on a board.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MoveCard {
    /// The contact.
    #[schema(value_type = String)]
    contact_id: ContactId,
    /// The column (default: the board's first).
    #[schema(value_type = Option<String>)]
    column_id: Option<ColumnId>,
}

/// Places or moves a contact on a board; flows triggered by `contact.moved` start.
#[utoipa::path(post, path = "/api/boards/{boardId}/cards", tag = "crm",
    params(("boardId" = BoardId, Path, description = "The board")), request_body = MoveCard,
    responses((status = 200, body = Object), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn move_card(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<BoardId>,
    ApiJson(body): ApiJson<MoveCard>,
) -> ApiResult<Json<Moved>> {
    auth.require(Role::Editor)?;
    let moved = state
        .store
        .move_card(
            auth.workspace(),
            &auth.actor(),
            id,
            body.contact_id,
            body.column_id,
            &planner(&state),
        )
        .await?;
    Ok(Json(moved))
}

/// A board's moves, newest first.
#[utoipa::path(get, path = "/api/boards/{boardId}/history", tag = "crm",
    params(("boardId" = BoardId, Path, description = "The board"), PageQuery),
    responses((status = 200, body = PageBody<BoardMove>), (status = 404, body = Problem)))]
async fn board_history(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<BoardId>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<PageBody<BoardMove>>> {
    Ok(Json(
        state
            .store
            .board_history(auth.workspace(), id, query.page()?)
            .await?
            .into(),
    ))
}
