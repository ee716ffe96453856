//! Configs of the advanced actions: API calls, JavaScript and boards.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{IDENTIFIER, UUID_OR_TEMPLATE};
use crate::status::VariableType;
use crate::string_enum::string_enum;

string_enum! {
    /// An HTTP method.
    HttpMethod, "HTTP method" {
        /// GET.
        Get = "GET",
        /// POST.
        Post = "POST",
        /// PUT.
        Put = "PUT",
        /// PATCH.
        Patch = "PATCH",
        /// DELETE.
        Delete = "DELETE",
    }
}

string_enum! {
    /// Where an API key goes.
    ApiKeyLocation, "API key location" {
        /// In a request header.
        Header = "header",
        /// In the query string.
        Query = "query",
    }
}

/// How a request authenticates. Credentials are normally `{{ secrets.<name> }}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Authentication {
    /// No authentication.
    None,
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: String,
    },
    /// `Authorization: Basic ...`.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// A key in a header or the query string.
    ApiKey {
        /// The header or query parameter name.
        #[schemars(length(min = 1, max = 200))]
        name: String,
        /// The key.
        value: String,
        /// `header` (default) or `query`.
        #[serde(default = "default_api_key_location", rename = "in")]
        location: ApiKeyLocation,
    },
}

fn default_api_key_location() -> ApiKeyLocation {
    ApiKeyLocation::Header
}

/// One response field copied into a typed run variable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResponseMapping {
    /// A dotted path into the response (`body.data.id`, `status`, `headers.etag`).
    #[schemars(length(min = 1, max = 500))]
    pub path: String,
    /// The variable to set.
    #[schemars(regex(pattern = IDENTIFIER))]
    pub variable: String,
    /// The type the value is coerced to (default: as it comes).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub variable_type: Option<VariableType>,
}

/// `run_api_request`: call an HTTP API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunApiRequestConfig {
    /// The URL, `http` or `https`.
    #[schemars(length(min = 1, max = 4096))]
    pub url: String,
    /// The method (default `GET`).
    #[serde(default = "default_method")]
    pub method: HttpMethod,
    /// Request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Query parameters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// A JSON body; exclusive with `fieldMapping`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
    /// How the request authenticates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication: Option<Authentication>,
    /// Builds a JSON body: body field → context path or template (`contact.email`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_mapping: Option<BTreeMap<String, String>>,
    /// Response fields copied into variables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub response_mapping: Vec<ResponseMapping>,
    /// The request's own timeout, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 300_000))]
    pub timeout_ms: Option<u64>,
}

fn default_method() -> HttpMethod {
    HttpMethod::Get
}

/// `run_javascript`: run a script in the sandbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunJavascriptConfig {
    /// The body of a function that sees `contact`, `vars` and `trigger`, may call
    /// `setVariable(name, value)` and `console.log`, and may `return` a JSON value.
    #[schemars(length(min = 1, max = 65_536))]
    pub code: String,
    /// The script's deadline in milliseconds (default 1,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10_000))]
    pub timeout_ms: Option<u64>,
    /// The script's memory limit in MiB (default 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 128))]
    pub memory_limit_mb: Option<u32>,
    /// A variable that receives the return value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = IDENTIFIER))]
    pub output_variable: Option<String>,
}

/// `move_to_board`: put the contact in a column of a board.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MoveToBoardConfig {
    /// The board.
    #[schemars(regex(pattern = UUID_OR_TEMPLATE))]
    pub board_id: String,
    /// The column (default: the board's first column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = UUID_OR_TEMPLATE))]
    pub column_id: Option<String>,
}
