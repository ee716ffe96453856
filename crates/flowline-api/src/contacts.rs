//! Contacts, what is attached to them, and the backups of deleted ones.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use flowline_core::action::basic::DeleteMode;
use flowline_core::email::Email;
use flowline_core::id::{AgentId, BackupId, ColumnId, ContactId, TagId};
use flowline_core::role::Role;
use flowline_core::validation::ValidationErrors;
use flowline_store::crm::{
    Contact, ContactBackup, ContactDetail, ContactFilter, ContactUpdate, NewContact, RunPlanner,
};
use flowline_store::execution::Execution;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::nullable::nullable;
use crate::page::{PageBody, PageQuery, page_request};

/// The contact and backup routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_contacts, create_contact))
        .routes(routes!(get_contact, update_contact, delete_contact))
        .routes(routes!(contact_executions))
        .routes(routes!(tag_contact))
        .routes(routes!(untag_contact))
        .routes(routes!(list_backups))
        .routes(routes!(get_backup))
        .routes(routes!(restore_backup))
}

/// The most bytes a contact's attributes may take as JSON.
const MAX_ATTRIBUTES_BYTES: usize = 64 * 1024;

pub(crate) fn planner(state: &AppState) -> Arc<dyn RunPlanner> {
    state.engine.clone()
}

/// A new contact.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateContact {
    /// Up to 200 characters.
    name: Option<String>,
    /// An email address, unique among the workspace's live contacts (ignoring case).
    email: Option<String>,
    /// Up to 50 characters.
    phone: Option<String>,
    /// Up to 200 characters.
    company: Option<String>,
    /// Free attributes: a JSON object of at most 64 KiB.
    #[schema(value_type = Option<Object>)]
    attributes: Option<serde_json::Value>,
}

/// Changes to a contact; absent fields are kept, `null` clears.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateContact {
    /// Name.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    name: Option<Option<String>>,
    /// Email.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    email: Option<Option<String>>,
    /// Phone.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    phone: Option<Option<String>>,
    /// Company.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    company: Option<Option<String>>,
    /// New attributes, replacing the old ones.
    #[schema(value_type = Option<Object>)]
    attributes: Option<serde_json::Value>,
}

fn check_text(
    errors: &mut ValidationErrors,
    field: &str,
    value: Option<String>,
    max: usize,
) -> Option<String> {
    let value = value
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())?;
    if value.chars().count() > max {
        errors.push(field, format!("at most {max} characters"));
    }
    if value.chars().any(|c| c.is_control()) {
        errors.push(field, "must not contain control characters");
    }
    Some(value)
}

fn check_email(errors: &mut ValidationErrors, email: Option<String>) -> Option<String> {
    let email = email.filter(|e| !e.trim().is_empty())?;
    match Email::parse(&email) {
        Ok(e) => Some(e.into_string()),
        Err(e) => {
            errors.push("email", e.to_string());
            None
        }
    }
}

fn check_attributes(errors: &mut ValidationErrors, attributes: &serde_json::Value) {
    if !attributes.is_object() {
        errors.push("attributes", "must be a JSON object");
    } else if attributes.to_string().len() > MAX_ATTRIBUTES_BYTES {
        errors.push("attributes", "at most 64 KiB as JSON");
    }
}

/// Which contacts to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ContactQuery {
    /// 1 to 200 (default 50).
    limit: Option<u32>,
    /// A previous page's `nextCursor`.
    cursor: Option<String>,
    /// Only the contact with this email (ignoring case).
    email: Option<String>,
    /// Only contacts with this tag.
    #[param(value_type = Option<String>)]
    tag_id: Option<TagId>,
    /// Only contacts in this board column.
    #[param(value_type = Option<String>)]
    column_id: Option<ColumnId>,
    /// Only contacts assigned to this agent.
    #[param(value_type = Option<String>)]
    agent_id: Option<AgentId>,
}

/// Live contacts, newest first, optionally filtered.
#[utoipa::path(get, path = "/api/contacts", tag = "contacts", params(ContactQuery),
    responses((status = 200, body = PageBody<Contact>), (status = 400, body = Problem)))]
async fn list_contacts(
    auth: Auth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ContactQuery>,
) -> ApiResult<Json<PageBody<Contact>>> {
    let page = page_request(query.limit, query.cursor.as_deref())?;
    let filter = ContactFilter {
        email: query.email.map(|e| e.trim().to_owned()),
        tag: query.tag_id,
        column: query.column_id,
        agent: query.agent_id,
    };
    Ok(Json(
        state
            .store
            .list_contacts(auth.workspace(), filter, page)
            .await?
            .into(),
    ))
}

/// Creates a contact; flows triggered by `contact.created` start with it.
#[utoipa::path(post, path = "/api/contacts", tag = "contacts", request_body = CreateContact,
    responses((status = 201, body = Contact), (status = 403, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
async fn create_contact(
    auth: Auth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateContact>,
) -> ApiResult<(StatusCode, Json<Contact>)> {
    auth.require(Role::Editor)?;
    let mut errors = ValidationErrors::default();
    let params = NewContact {
        name: check_text(&mut errors, "name", body.name, 200),
        email: check_email(&mut errors, body.email),
        phone: check_text(&mut errors, "phone", body.phone, 50),
        company: check_text(&mut errors, "company", body.company, 200),
        attributes: body.attributes.unwrap_or_else(|| serde_json::json!({})),
    };
    check_attributes(&mut errors, &params.attributes);
    errors.into_result().map_err(ApiError::Validation)?;
    let contact = state
        .store
        .create_contact(auth.workspace(), &auth.actor(), params, &planner(&state))
        .await?;
    Ok((StatusCode::CREATED, Json(contact)))
}

/// A contact with its tags, assignments, subscriptions and board positions.
#[utoipa::path(get, path = "/api/contacts/{contactId}", tag = "contacts",
    params(("contactId" = ContactId, Path, description = "The contact")),
    responses((status = 200, body = ContactDetail), (status = 404, body = Problem)))]
async fn get_contact(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<ContactId>,
) -> ApiResult<Json<ContactDetail>> {
    Ok(Json(state.store.get_contact(auth.workspace(), id).await?))
}

/// Changes a contact; flows triggered by `contact.updated` start when something changed.
#[utoipa::path(put, path = "/api/contacts/{contactId}", tag = "contacts",
    params(("contactId" = ContactId, Path, description = "The contact")), request_body = UpdateContact,
    responses((status = 200, body = Contact), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
async fn update_contact(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<ContactId>,
    ApiJson(body): ApiJson<UpdateContact>,
) -> ApiResult<Json<Contact>> {
    auth.require(Role::Editor)?;
    let mut errors = ValidationErrors::default();
    let update = ContactUpdate {
        name: body.name.map(|v| check_text(&mut errors, "name", v, 200)),
        email: body.email.map(|v| check_email(&mut errors, v)),
        phone: body.phone.map(|v| check_text(&mut errors, "phone", v, 50)),
        company: body
            .company
            .map(|v| check_text(&mut errors, "company", v, 200)),
        attributes: body.attributes,
    };
    if let Some(attributes) = &update.attributes {
        check_attributes(&mut errors, attributes);
    }
    errors.into_result().map_err(ApiError::Validation)?;
    let contact = state
        .store
        .update_contact(
            auth.workspace(),
            &auth.actor(),
            id,
            update,
            &planner(&state),
        )
        .await?;
    Ok(Json(contact))
}

/// How to delete a contact.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// `soft` (default: hidden, restorable) or `permanent` (gone; its backup remains).
    #[param(value_type = Option<String>)]
    mode: Option<DeleteMode>,
}

/// Deletes a contact (admins), always after a backup; answers the backup.
#[utoipa::path(delete, path = "/api/contacts/{contactId}", tag = "contacts",
    params(("contactId" = ContactId, Path, description = "The contact"), DeleteQuery),
    responses((status = 200, body = ContactBackup), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn delete_contact(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<ContactId>,
    ApiQuery(query): ApiQuery<DeleteQuery>,
) -> ApiResult<Json<ContactBackup>> {
    auth.require(Role::Admin)?;
    let backup = state
        .store
        .delete_contact(
            auth.workspace(),
            &auth.actor(),
            id,
            query.mode.unwrap_or(DeleteMode::Soft),
        )
        .await?;
    Ok(Json(backup))
}

/// The runs for a contact, newest first.
#[utoipa::path(get, path = "/api/contacts/{contactId}/executions", tag = "contacts",
    params(("contactId" = ContactId, Path, description = "The contact"), PageQuery),
    responses((status = 200, body = PageBody<Execution>), (status = 404, body = Problem)))]
async fn contact_executions(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<ContactId>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<PageBody<Execution>>> {
    Ok(Json(
        state
            .store
            .contact_executions(auth.workspace(), id, query.page()?)
            .await?
            .into(),
    ))
}

/// Attaches a tag; flows triggered by `tag.added` start when it was not attached. 201 when
/// attached now, 200 when it was already.
#[utoipa::path(put, path = "/api/contacts/{contactId}/tags/{tagId}", tag = "contacts",
    params(("contactId" = ContactId, Path, description = "The contact"), ("tagId" = TagId, Path, description = "The tag")),
    responses((status = 201, body = ContactDetail), (status = 200, body = ContactDetail), (status = 404, body = Problem)))]
async fn tag_contact(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath((contact, tag)): ApiPath<(ContactId, TagId)>,
) -> ApiResult<(StatusCode, Json<ContactDetail>)> {
    auth.require(Role::Editor)?;
    let attached = state
        .store
        .tag_contact(
            auth.workspace(),
            &auth.actor(),
            contact,
            tag,
            &planner(&state),
        )
        .await?;
    let detail = state.store.get_contact(auth.workspace(), contact).await?;
    let status = if attached {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(detail)))
}

/// Detaches a tag.
#[utoipa::path(delete, path = "/api/contacts/{contactId}/tags/{tagId}", tag = "contacts",
    params(("contactId" = ContactId, Path, description = "The contact"), ("tagId" = TagId, Path, description = "The tag")),
    responses((status = 204), (status = 404, body = Problem)))]
async fn untag_contact(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath((contact, tag)): ApiPath<(ContactId, TagId)>,
) -> ApiResult<StatusCode> {
    auth.require(Role::Editor)?;
    if state
        .store
        .untag_contact(auth.workspace(), &auth.actor(), contact, tag)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("tag on this contact".into()))
    }
}

/// Backups of deleted contacts, newest first.
#[utoipa::path(get, path = "/api/contact-backups", tag = "contacts", params(PageQuery),
    responses((status = 200, body = PageBody<ContactBackup>)))]
async fn list_backups(
    auth: Auth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<PageBody<ContactBackup>>> {
    Ok(Json(
        state
            .store
            .list_backups(auth.workspace(), query.page()?)
            .await?
            .into(),
    ))
}

/// One backup.
#[utoipa::path(get, path = "/api/contact-backups/{backupId}", tag = "contacts",
    params(("backupId" = BackupId, Path, description = "The backup")),
    responses((status = 200, body = ContactBackup), (status = 404, body = Problem)))]
async fn get_backup(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<BackupId>,
) -> ApiResult<Json<ContactBackup>> {
    Ok(Json(state.store.get_backup(auth.workspace(), id).await?))
}

/// Restores a deleted contact as its backup shows it.
#[utoipa::path(post, path = "/api/contact-backups/{backupId}/restore", tag = "contacts",
    params(("backupId" = BackupId, Path, description = "The backup")),
    responses((status = 200, body = ContactDetail), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn restore_backup(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<BackupId>,
) -> ApiResult<Json<ContactDetail>> {
    auth.require(Role::Editor)?;
    Ok(Json(
        state
            .store
            .restore_backup(auth.workspace(), &auth.actor(), id)
            .await?,
    ))
}
