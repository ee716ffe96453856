//! `crm_integration`: upsert the contact into HubSpot or Salesforce, in their own API shapes.

use std::time::Duration;

use async_trait::async_trait;
use flowline_core::action::integration::{CrmIntegrationConfig, CrmOperation, CrmProvider};
use flowline_core::status::{ErrorCategory, VariableType};
use flowline_store::execution::Variable;
use reqwest::Method;
use serde_json::{Map, Value, json};

use super::http::{lookup, masked, text};
use super::{Executor, StepContext, StepOutput, WithSecrets};
use crate::failure::Failure;
use crate::outbound::{Outbound, OutboundRequest, status_failure};
use crate::secrets::url_encode;

/// The Salesforce REST API version called.
const SALESFORCE_API: &str = "v60.0";

/// Upserts contacts into a CRM.
pub struct SyncCrm {
    outbound: Outbound,
    hubspot_url: String,
}

impl SyncCrm {
    /// Calls through `outbound`; HubSpot's API at `hubspot_url` (`https://api.hubapi.com`).
    pub fn new(outbound: Outbound, hubspot_url: String) -> Self {
        Self {
            outbound,
            hubspot_url,
        }
    }
}

fn invalid(message: impl Into<String>, suggestion: impl Into<String>) -> Failure {
    Failure::new(ErrorCategory::Validation, message, suggestion)
}

/// The CRM record's fields: CRM field → context path (`contact.email`) or template, flat.
fn properties(
    step: &StepContext<'_>,
    secrets: &WithSecrets,
    mapping: &std::collections::BTreeMap<String, String>,
) -> Result<Map<String, Value>, Failure> {
    let mut out = Map::new();
    for (field, source) in mapping {
        let value = if source.contains("{{") || source.contains("{%") {
            secrets
                .real
                .render_str(&format!("fieldMapping.{field}"), source)
                .map_err(Failure::template)?
        } else {
            lookup(step.data.json(), source.trim())
                .cloned()
                .ok_or_else(|| {
                    invalid(
                        format!("fieldMapping.{field}: the context has no `{source}`"),
                        "name a path such as contact.email, or use a template",
                    )
                })?
        };
        out.insert(field.clone(), value);
    }
    Ok(out)
}

fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[async_trait]
impl Executor for SyncCrm {
    async fn execute(&self, step: &StepContext<'_>) -> Result<StepOutput, Failure> {
        let config: CrmIntegrationConfig = step.saved_config()?;
        let secrets = step.with_secrets().await?;
        self.sync(step, &config, &secrets)
            .await
            .map_err(|f| masked(f, &secrets))
    }
}

impl SyncCrm {
    async fn sync(
        &self,
        step: &StepContext<'_>,
        config: &CrmIntegrationConfig,
        secrets: &WithSecrets,
    ) -> Result<StepOutput, Failure> {
        let CrmOperation::UpsertContact = config.operation;
        let token = config
            .access_token
            .as_ref()
            .map(|t| text(&secrets.real, "accessToken", t))
            .transpose()?
            .filter(|t| !t.is_empty() && !t.contains(['\r', '\n']))
            .ok_or_else(|| {
                invalid(
                    "the CRM needs `accessToken`",
                    "set accessToken to {{ secrets.<name> }} holding the CRM's token",
                )
            })?;
        let fields = properties(step, secrets, &config.field_mapping)?;
        let id_field = config
            .external_id_field
            .clone()
            .unwrap_or_else(|| match config.provider {
                CrmProvider::Hubspot => "email".into(),
                CrmProvider::Salesforce => String::new(),
            });
        let id_value = fields.get(&id_field).map(as_text).filter(|v| !v.is_empty());
        let (method, url, body) = match config.provider {
            CrmProvider::Hubspot => {
                let id = id_value.ok_or_else(|| {
                    invalid(
                        format!("fieldMapping has no value for `{id_field}`, the property HubSpot matches contacts by"),
                        format!("map `{id_field}` (for example to contact.email)"),
                    )
                })?;
                (
                    Method::POST,
                    format!(
                        "{}/crm/v3/objects/contacts/batch/upsert",
                        self.hubspot_url.trim_end_matches('/')
                    ),
                    json!({"inputs": [{"idProperty": id_field, "id": id, "properties": fields}]}),
                )
            }
            CrmProvider::Salesforce => {
                if id_field.is_empty() {
                    return Err(invalid(
                        "Salesforce upserts by an external id field: give `externalIdField`",
                        "name the Contact's external id field (for example Flowline_Id__c or Email)",
                    ));
                }
                let id = id_value.ok_or_else(|| {
                    invalid(
                        format!(
                            "fieldMapping has no value for `{id_field}`, the external id field"
                        ),
                        format!("map `{id_field}`"),
                    )
                })?;
                let instance = config
                    .instance_url
                    .as_ref()
                    .map(|u| text(&secrets.real, "instanceUrl", u))
                    .transpose()?
                    .ok_or_else(|| {
                        invalid(
                            "Salesforce needs `instanceUrl` (https://<your domain>.my.salesforce.com)",
                            "give the org's instance URL",
                        )
                    })?;
                let mut body = fields.clone();
                body.remove(&id_field);
                (
                    Method::PATCH,
                    format!(
                        "{}/services/data/{SALESFORCE_API}/sobjects/Contact/{}/{}",
                        instance.trim_end_matches('/'),
                        url_encode(&id_field),
                        url_encode(&id)
                    ),
                    Value::Object(body),
                )
            }
        };
        let input = secrets.masker.json(json!({
            "provider": config.provider,
            "operation": config.operation,
            "method": method.as_str(),
            "url": url,
            "body": body,
        }));
        step.show(&input);
        let response = self
            .outbound
            .send(
                OutboundRequest {
                    kind: "crm",
                    method,
                    url,
                    headers: vec![("Authorization".into(), format!("Bearer {token}"))],
                    sensitive: Vec::new(),
                    body: Some((
                        serde_json::to_vec(&body).unwrap_or_default(),
                        "application/json",
                    )),
                    timeout: Duration::from_secs(30),
                },
                &secrets.masker,
            )
            .await?;
        let provider = match config.provider {
            CrmProvider::Hubspot => "HubSpot",
            CrmProvider::Salesforce => "Salesforce",
        };
        if let Some(failure) = status_failure(&response, &secrets.masker, provider) {
            return Err(failure);
        }
        let answer = response.body_value();
        let (record, created) = match config.provider {
            CrmProvider::Hubspot => {
                let first = answer.pointer("/results/0");
                (
                    first.and_then(|r| r.get("id")).map(as_text),
                    first.and_then(|r| r.get("new")).and_then(Value::as_bool),
                )
            }
            CrmProvider::Salesforce => (
                // An update may answer 204 without a body: the record is the one its external
                // id names.
                answer.get("id").map(as_text).or_else(|| {
                    (response.status.as_u16() == 204).then(|| {
                        format!(
                            "{id_field}/{}",
                            fields.get(&id_field).map(as_text).unwrap_or_default()
                        )
                    })
                }),
                answer
                    .get("created")
                    .and_then(Value::as_bool)
                    .or(Some(response.status.as_u16() == 201)),
            ),
        };
        let record = record.ok_or_else(|| {
            Failure::new(
                ErrorCategory::Upstream,
                format!(
                    "{provider} answered {} without a record id",
                    response.status
                ),
                "check the CRM's answer in its logs; the step is retried per its policy",
            )
        })?;
        let mut variables = Vec::new();
        if let Some(name) = &config.output_variable {
            variables.push(Variable {
                name: name.clone(),
                variable_type: VariableType::String,
                value: Value::String(record.clone()),
            });
        }
        Ok(StepOutput {
            output: secrets.masker.json(json!({
                "provider": config.provider,
                "recordId": record,
                "created": created,
                "status": response.status.as_u16(),
            })),
            variables,
            input: Some(input),
        })
    }
}
