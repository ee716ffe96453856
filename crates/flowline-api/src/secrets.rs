//! Secrets: written by admins, listed by name, never read back.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use flowline_core::role::Role;
use flowline_core::validation::ValidationErrors;
use flowline_store::secrets::{SealedSecret, SecretRecord};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiPath};

/// The secret routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_secrets))
        .routes(routes!(put_secret, delete_secret))
}

/// The largest secret value.
const MAX_VALUE_BYTES: usize = 64 * 1024;

/// A secret's value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutSecret {
    /// The value: 1 byte to 64 KiB. It is sealed at once and never shown again.
    value: String,
}

/// The secrets' names.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct SecretList {
    /// By name.
    items: Vec<SecretRecord>,
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(ApiError::Validation(ValidationErrors::single(
            "name",
            "letters, digits and _, not starting with a digit, at most 64",
        )))
    }
}

/// Sets a secret (admins); `201` when it is new, `200` when it replaced a value.
#[utoipa::path(put, path = "/api/secrets/{name}", tag = "secrets",
    params(("name" = String, Path, description = "The secret's name")), request_body = PutSecret,
    responses((status = 201, body = SecretRecord), (status = 200, body = SecretRecord), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn put_secret(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<PutSecret>,
) -> ApiResult<(StatusCode, Json<SecretRecord>)> {
    auth.require(Role::Admin)?;
    check_name(&name)?;
    if body.value.is_empty() || body.value.len() > MAX_VALUE_BYTES {
        return Err(ApiError::Validation(ValidationErrors::single(
            "value",
            "1 byte to 64 KiB",
        )));
    }
    let Some(key) = state.engine.secret_key() else {
        return Err(ApiError::Conflict(
            "no secret key is configured: set FLOWLINE_SECRET_KEY on every Flowline process".into(),
        ));
    };
    let (nonce, ciphertext) = key.seal(auth.workspace(), &name, &body.value);
    let (record, created) = state
        .store
        .put_secret(
            auth.workspace(),
            &auth.actor(),
            SealedSecret {
                workspace_id: auth.workspace(),
                name,
                nonce,
                ciphertext,
            },
        )
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(record)))
}

/// The workspace's secrets: names and times, never values (editors and up).
#[utoipa::path(get, path = "/api/secrets", tag = "secrets",
    responses((status = 200, body = SecretList), (status = 403, body = Problem)))]
async fn list_secrets(auth: Auth, State(state): State<AppState>) -> ApiResult<Json<SecretList>> {
    auth.require(Role::Editor)?;
    Ok(Json(SecretList {
        items: state.store.list_secrets(auth.workspace()).await?,
    }))
}

/// Deletes a secret (admins).
#[utoipa::path(delete, path = "/api/secrets/{name}", tag = "secrets",
    params(("name" = String, Path, description = "The secret's name")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
async fn delete_secret(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    auth.require(Role::Admin)?;
    check_name(&name)?;
    state
        .store
        .delete_secret(auth.workspace(), &auth.actor(), &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
