//! `run_api_request` and `send_webhook`: HTTP calls through the guarded client, with secrets
//! opened at the moment of use and masked in everything the step leaves behind.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use flowline_core::action::advanced::{
    ApiKeyLocation, Authentication, HttpMethod, RunApiRequestConfig,
};
use flowline_core::action::integration::SendWebhookConfig;
use flowline_core::status::{ErrorCategory, VariableType};
use flowline_store::execution::Variable;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Map, Value, json};
use sha2::Sha256;

use super::set_variable::coerce;
use super::{Executor, StepContext, StepOutput, WithSecrets};
use crate::failure::Failure;
use crate::outbound::{Outbound, OutboundRequest, OutboundResponse, status_failure};
use crate::template::Renderer;

/// A request's timeout when its action names none.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Renders a config string to text.
pub(crate) fn text(renderer: &Renderer, field: &str, source: &str) -> Result<String, Failure> {
    Ok(
        match renderer
            .render_str(field, source)
            .map_err(Failure::template)?
        {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        },
    )
}

/// A header value: no line breaks, which would start another header.
fn header_value(field: &str, value: String) -> Result<String, Failure> {
    if value.contains(['\r', '\n']) {
        return Err(Failure::new(
            ErrorCategory::Validation,
            format!("`{field}` renders to a value with a line break"),
            "remove line breaks from header values",
        ));
    }
    Ok(value)
}

/// The value at a dotted path (`contact.email`, `body.data.0.id`).
pub(crate) fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(root, |value, part| match value {
        Value::Object(map) => map.get(part),
        Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// Sets `value` at a dotted path of `object`, creating objects on the way.
fn insert(object: &mut Map<String, Value>, path: &str, value: Value) {
    let mut parts = path.split('.').peekable();
    let mut here = object;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            here.insert(part.to_owned(), value);
            return;
        }
        let next = here
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !next.is_object() {
            *next = Value::Object(Map::new());
        }
        let Value::Object(map) = next else { return };
        here = map;
    }
}

/// A body built from the context: each field is a context path (`contact.email`) or a
/// template.
pub(crate) fn mapped_body(
    step: &StepContext<'_>,
    renderer: &Renderer,
    mapping: &std::collections::BTreeMap<String, String>,
) -> Result<Value, Failure> {
    let mut body = Map::new();
    for (field, source) in mapping {
        let value = if source.contains("{{") || source.contains("{%") {
            renderer
                .render_str(&format!("fieldMapping.{field}"), source)
                .map_err(Failure::template)?
        } else {
            lookup(step.data.json(), source.trim())
                .cloned()
                .ok_or_else(|| {
                    Failure::new(
                        ErrorCategory::Validation,
                        format!("fieldMapping.{field}: the context has no `{source}`"),
                        "name a path such as contact.email or vars.plan, or use a template",
                    )
                })?
        };
        insert(&mut body, field, value);
    }
    Ok(Value::Object(body))
}

/// Masks a failure's message and suggestion.
pub(crate) fn masked(failure: Failure, secrets: &WithSecrets) -> Failure {
    let mut failure = failure;
    failure.error.message = secrets.masker.text(&failure.error.message);
    failure.error.suggestion = secrets.masker.text(&failure.error.suggestion);
    failure
}

fn response_json(response: &OutboundResponse) -> Value {
    json!({
        "status": response.status.as_u16(),
        "headers": response.headers.iter().map(|(n, v)| (n.clone(), Value::String(v.clone()))).collect::<Map<_, _>>(),
        "body": response.body_value(),
        "truncated": response.truncated,
    })
}

/// Calls an HTTP API.
pub struct RunApiRequest {
    outbound: Outbound,
}

impl RunApiRequest {
    /// Calls through `outbound`.
    pub fn new(outbound: Outbound) -> Self {
        Self { outbound }
    }
}

#[async_trait]
impl Executor for RunApiRequest {
    async fn execute(&self, step: &StepContext<'_>) -> Result<StepOutput, Failure> {
        let config: RunApiRequestConfig = step.saved_config()?;
        let secrets = step.with_secrets().await?;
        self.call(step, &config, &secrets)
            .await
            .map_err(|f| masked(f, &secrets))
    }
}

impl RunApiRequest {
    async fn call(
        &self,
        step: &StepContext<'_>,
        config: &RunApiRequestConfig,
        secrets: &WithSecrets,
    ) -> Result<StepOutput, Failure> {
        if config.body.is_some() && config.field_mapping.is_some() {
            return Err(Failure::new(
                ErrorCategory::Validation,
                "give `body` or `fieldMapping`, not both",
                "edit the action",
            ));
        }
        let (real, shown) = (&secrets.real, &secrets.masked);
        let mut url = self.outbound.check_url(&text(real, "url", &config.url)?)?;
        let mut shown_query = Map::new();
        {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in &config.query {
                pairs.append_pair(name, &text(real, &format!("query.{name}"), value)?);
                shown_query.insert(
                    name.clone(),
                    Value::String(text(shown, &format!("query.{name}"), value)?),
                );
            }
        }
        let mut headers = Vec::new();
        let mut shown_headers = Map::new();
        for (name, value) in &config.headers {
            let field = format!("headers.{name}");
            headers.push((
                name.clone(),
                header_value(&field, text(real, &field, value)?)?,
            ));
            shown_headers.insert(name.clone(), Value::String(text(shown, &field, value)?));
        }
        match &config.authentication {
            None | Some(Authentication::None) => {}
            Some(Authentication::Bearer { token }) => {
                let token = header_value(
                    "authentication.token",
                    text(real, "authentication.token", token)?,
                )?;
                headers.push(("Authorization".into(), format!("Bearer {token}")));
            }
            Some(Authentication::Basic { username, password }) => {
                let user = text(real, "authentication.username", username)?;
                let pass = text(real, "authentication.password", password)?;
                let pair =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
                headers.push(("Authorization".into(), format!("Basic {pair}")));
            }
            Some(Authentication::ApiKey {
                name,
                value,
                location,
            }) => {
                let key = text(real, "authentication.value", value)?;
                match location {
                    ApiKeyLocation::Header => {
                        headers.push((name.clone(), header_value("authentication.value", key)?))
                    }
                    ApiKeyLocation::Query => {
                        url.query_pairs_mut().append_pair(name, &key);
                    }
                }
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        headers.push(("Idempotency-Key".into(), step.idempotency_key()));
        // Headers carrying a secret (an API key, a custom token header) do not follow a redirect
        // to another origin.
        let mut sensitive: Vec<String> = headers
            .iter()
            .filter(|(_, v)| secrets.masker.text(v) != *v)
            .map(|(n, _)| n.clone())
            .collect();
        if let Some(Authentication::ApiKey { name, .. }) = &config.authentication {
            sensitive.push(name.clone());
        }
        let (body, shown_body) = match (&config.body, &config.field_mapping) {
            (Some(body), _) => (
                Some(real.render_value("body", body).map_err(Failure::template)?),
                Some(
                    shown
                        .render_value("body", body)
                        .map_err(Failure::template)?,
                ),
            ),
            (None, Some(mapping)) => (
                Some(mapped_body(step, real, mapping)?),
                Some(mapped_body(step, shown, mapping)?),
            ),
            (None, None) => (None, None),
        };
        let method = match config.method {
            HttpMethod::Get => Method::GET,
            HttpMethod::Post => Method::POST,
            HttpMethod::Put => Method::PUT,
            HttpMethod::Patch => Method::PATCH,
            HttpMethod::Delete => Method::DELETE,
        };
        let shown_url = {
            let mut u = self
                .outbound
                .check_url(&text(shown, "url", &config.url)?)
                .map(|u| u.to_string())
                .unwrap_or_default();
            if !shown_query.is_empty() {
                u = format!("{u} (query: {})", Value::Object(shown_query.clone()));
            }
            u
        };
        let input = secrets.masker.json(json!({
            "method": config.method,
            "url": shown_url,
            "headers": shown_headers,
            "authentication": config.authentication.as_ref().map(|a| match a {
                Authentication::None => "none",
                Authentication::Bearer { .. } => "bearer",
                Authentication::Basic { .. } => "basic",
                Authentication::ApiKey { .. } => "api_key",
            }),
            "body": shown_body,
        }));
        step.show(&input);
        let request = OutboundRequest {
            kind: "run_api_request",
            method,
            url: url.to_string(),
            headers,
            sensitive,
            body: body.map(|b| {
                (
                    serde_json::to_vec(&b).unwrap_or_default(),
                    "application/json",
                )
            }),
            timeout: config
                .timeout_ms
                .map_or(DEFAULT_REQUEST_TIMEOUT, Duration::from_millis),
        };
        let response = self.outbound.send(request, &secrets.masker).await?;
        if let Some(failure) = status_failure(&response, &secrets.masker, "the API") {
            return Err(failure);
        }
        let output = secrets.masker.json(response_json(&response));
        let mut variables = Vec::new();
        for mapping in &config.response_mapping {
            let value = lookup(&output, &mapping.path).cloned().ok_or_else(|| {
                Failure::new(
                    ErrorCategory::Validation,
                    format!("the response has no `{}` for variable `{}`", mapping.path, mapping.variable),
                    "check responseMapping's path (body.…, status or headers.…) against the API's answer",
                )
            })?;
            let (variable_type, value) = match mapping.variable_type {
                Some(t) => (
                    t,
                    coerce(value, t).map_err(|why| {
                        Failure::new(
                            ErrorCategory::Validation,
                            format!("variable `{}`: {why}", mapping.variable),
                            "change the mapping's type",
                        )
                    })?,
                ),
                None => (
                    inferred(&value).ok_or_else(|| {
                        Failure::new(
                            ErrorCategory::Validation,
                            format!("`{}` is null in the response", mapping.path),
                            "map a field that has a value",
                        )
                    })?,
                    value,
                ),
            };
            variables.push(Variable {
                name: mapping.variable.clone(),
                variable_type,
                value,
            });
        }
        Ok(StepOutput {
            output,
            variables,
            input: Some(input),
        })
    }
}

fn inferred(value: &Value) -> Option<VariableType> {
    Some(match value {
        Value::String(_) => VariableType::String,
        Value::Number(_) => VariableType::Number,
        Value::Bool(_) => VariableType::Boolean,
        Value::Object(_) => VariableType::Object,
        Value::Array(_) => VariableType::Array,
        Value::Null => return None,
    })
}

/// Sends signed webhooks (Standard Webhooks).
pub struct SendWebhook {
    outbound: Outbound,
}

impl SendWebhook {
    /// Sends through `outbound`.
    pub fn new(outbound: Outbound) -> Self {
        Self { outbound }
    }
}

/// `v1,<base64 HMAC-SHA256 of id.timestamp.body>` under a `whsec_<base64>` secret (a secret
/// without the prefix is used as raw bytes).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, Failure> {
    let key = match secret.strip_prefix("whsec_") {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| {
                Failure::new(
                    ErrorCategory::Validation,
                    "the signing secret is `whsec_` followed by something that is not base64",
                    "store the secret exactly as the receiver gave it",
                )
            })?,
        None => secret.as_bytes().to_vec(),
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).map_err(|_| {
        Failure::new(
            ErrorCategory::Validation,
            "the signing secret is empty",
            "store the receiver's signing secret",
        )
    })?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    ))
}

#[async_trait]
impl Executor for SendWebhook {
    async fn execute(&self, step: &StepContext<'_>) -> Result<StepOutput, Failure> {
        let config: SendWebhookConfig = step.saved_config()?;
        let secrets = step.with_secrets().await?;
        self.send(step, &config, &secrets)
            .await
            .map_err(|f| masked(f, &secrets))
    }
}

impl SendWebhook {
    async fn send(
        &self,
        step: &StepContext<'_>,
        config: &SendWebhookConfig,
        secrets: &WithSecrets,
    ) -> Result<StepOutput, Failure> {
        let (real, shown) = (&secrets.real, &secrets.masked);
        let url = text(real, "url", &config.url)?;
        self.outbound.check_url(&url)?;
        let now = chrono::Utc::now();
        let event_type = match &config.event_type {
            Some(t) => text(real, "eventType", t)?,
            None => "flowline.step".to_owned(),
        };
        let payload = match &config.payload {
            Some(payload) => real
                .render_value("payload", payload)
                .map_err(Failure::template)?,
            None => json!({
                "type": event_type,
                "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "data": {
                    "contact": step.data.json().get("contact"),
                    "vars": step.data.json().get("vars"),
                    "execution": step.data.json().get("execution"),
                },
            }),
        };
        let body = serde_json::to_vec(&payload).unwrap_or_default();
        // The same id on every attempt: receivers deduplicate by it.
        let id = format!("msg_{}", step.step_id);
        let timestamp = now.timestamp();
        let mut headers = vec![
            ("webhook-id".to_owned(), id.clone()),
            ("webhook-timestamp".to_owned(), timestamp.to_string()),
        ];
        let mut shown_headers = Map::new();
        for (name, value) in &config.headers {
            let field = format!("headers.{name}");
            headers.push((
                name.clone(),
                header_value(&field, text(real, &field, value)?)?,
            ));
            shown_headers.insert(name.clone(), Value::String(text(shown, &field, value)?));
        }
        if let Some(secret) = &config.signing_secret {
            let secret = text(real, "signingSecret", secret)?;
            headers.push((
                "webhook-signature".to_owned(),
                sign(&secret, &id, timestamp, &body)?,
            ));
        }
        let input = secrets.masker.json(json!({
            "url": text(shown, "url", &config.url)?,
            "webhookId": id,
            "headers": shown_headers,
            "signed": config.signing_secret.is_some(),
            "payload": payload,
        }));
        step.show(&input);
        let request = OutboundRequest {
            kind: "send_webhook",
            method: Method::POST,
            url,
            headers,
            sensitive: Vec::new(),
            body: Some((body, "application/json")),
            timeout: DEFAULT_REQUEST_TIMEOUT,
        };
        let response = self.outbound.send(request, &secrets.masker).await?;
        if response.status.as_u16() == 410 {
            let mut failure = Failure::new(
                ErrorCategory::Validation,
                "the receiver answered 410 Gone: it no longer accepts these webhooks",
                "remove or update the webhook's URL; it is not retried",
            );
            failure.error.retryable = false;
            return Err(failure);
        }
        if let Some(failure) = status_failure(&response, &secrets.masker, "the webhook receiver") {
            return Err(failure);
        }
        Ok(StepOutput {
            output: secrets.masker.json(json!({
                "status": response.status.as_u16(),
                "webhookId": id,
                "body": response.body_value(),
            })),
            variables: Vec::new(),
            input: Some(input),
        })
    }
}
