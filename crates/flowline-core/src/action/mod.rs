//! The eleven action types, their categories, and one typed config struct each.
//!
//! A config arrives as JSON. [`ActionType::parse_config`] checks it against the JSON Schema
//! generated from the typed struct (reporting every problem with its field path), then parses it
//! into an [`ActionConfig`] and runs the cross-field rules a schema cannot say.

pub mod advanced;
pub mod basic;
pub mod integration;

use std::collections::HashMap;
use std::sync::LazyLock;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::status::Queue;
use crate::string_enum::string_enum;
use crate::validation::ValidationErrors;
use advanced::{MoveToBoardConfig, RunApiRequestConfig, RunJavascriptConfig};
use basic::{
    AddTagConfig, AssignAgentConfig, DeleteContactConfig, SetVariableConfig,
    SubscribeCampaignConfig,
};
use integration::{
    CrmIntegrationConfig, CrmProvider, EmailIntegrationConfig, EmailProvider, SendWebhookConfig,
};

/// `#rrggbb`, or a template.
pub(crate) const COLOR_OR_TEMPLATE: &str = r"^(#[0-9a-fA-F]{6}|.*\{\{.*\}\}.*)$";
/// A UUID, or a template.
pub(crate) const UUID_OR_TEMPLATE: &str = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|.*\{\{.*\}\}.*)$";
/// A variable name.
pub(crate) const IDENTIFIER: &str = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$";

/// Whether a config string holds a template.
pub fn is_template(s: &str) -> bool {
    s.contains("{{")
}

string_enum! {
    /// Which of the three categories (and so which queue) an action type belongs to.
    ActionCategory, "action category" {
        /// Changes only Flowline's own data.
        Basic = "basic",
        /// API calls, JavaScript and boards.
        Advanced = "advanced",
        /// Webhooks, email and CRM.
        Integration = "integration",
    }
}

impl ActionCategory {
    /// The queue steps of this category wait in.
    pub fn queue(self) -> Queue {
        match self {
            ActionCategory::Basic => Queue::Basic,
            ActionCategory::Advanced => Queue::Advanced,
            ActionCategory::Integration => Queue::Integration,
        }
    }
}

string_enum! {
    /// The eleven things an action can do.
    ActionType, "action type" {
        /// Find or create a tag and attach it to the contact.
        AddTag = "add_tag",
        /// Set a typed run variable.
        SetVariable = "set_variable",
        /// Assign the contact to an agent.
        AssignAgent = "assign_agent",
        /// Subscribe the contact to a campaign.
        SubscribeCampaign = "subscribe_campaign",
        /// Delete the contact, after a backup by default.
        DeleteContact = "delete_contact",
        /// Call an HTTP API.
        RunApiRequest = "run_api_request",
        /// Run JavaScript in the sandbox.
        RunJavascript = "run_javascript",
        /// Move the contact to a board column.
        MoveToBoard = "move_to_board",
        /// Deliver a signed webhook.
        SendWebhook = "send_webhook",
        /// Send an email.
        EmailIntegration = "email_integration",
        /// Push the contact to a CRM.
        CrmIntegration = "crm_integration",
    }
}

/// A validated, typed action config.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum ActionConfig {
    AddTag(AddTagConfig),
    SetVariable(SetVariableConfig),
    AssignAgent(AssignAgentConfig),
    SubscribeCampaign(SubscribeCampaignConfig),
    DeleteContact(DeleteContactConfig),
    RunApiRequest(RunApiRequestConfig),
    RunJavascript(RunJavascriptConfig),
    MoveToBoard(MoveToBoardConfig),
    SendWebhook(SendWebhookConfig),
    EmailIntegration(EmailIntegrationConfig),
    CrmIntegration(CrmIntegrationConfig),
}

impl ActionType {
    /// The category, and so the queue.
    pub fn category(self) -> ActionCategory {
        use ActionType::*;
        match self {
            AddTag | SetVariable | AssignAgent | SubscribeCampaign | DeleteContact => {
                ActionCategory::Basic
            }
            RunApiRequest | RunJavascript | MoveToBoard => ActionCategory::Advanced,
            SendWebhook | EmailIntegration | CrmIntegration => ActionCategory::Integration,
        }
    }

    /// A short human name.
    pub fn label(self) -> &'static str {
        use ActionType::*;
        match self {
            AddTag => "Add tag",
            SetVariable => "Set variable",
            AssignAgent => "Assign agent",
            SubscribeCampaign => "Subscribe to campaign",
            DeleteContact => "Delete contact",
            RunApiRequest => "Run API request",
            RunJavascript => "Run JavaScript",
            MoveToBoard => "Move to board",
            SendWebhook => "Send webhook",
            EmailIntegration => "Send email",
            CrmIntegration => "Sync to CRM",
        }
    }

    /// What the action does, for a person choosing one.
    pub fn description(self) -> &'static str {
        use ActionType::*;
        match self {
            AddTag => "Finds or creates a tag by name and attaches it to the contact. Idempotent.",
            SetVariable => {
                "Sets a typed run variable; the rendered value is coerced to the type or the step fails."
            }
            AssignAgent => {
                "Assigns the contact to a given agent, or picks one round-robin or least-loaded among active agents."
            }
            SubscribeCampaign => {
                "Subscribes the contact to a campaign, re-subscribing one who unsubscribed. Idempotent."
            }
            DeleteContact => {
                "Deletes the contact, soft (restorable) or permanently, after a full backup by default."
            }
            RunApiRequest => {
                "Calls an HTTP API with templated URL, headers, query and body, and maps the response into variables."
            }
            RunJavascript => {
                "Runs a script in an isolated QuickJS sandbox with the contact, variables and trigger as plain data."
            }
            MoveToBoard => "Moves the contact to a column of a kanban board and records the move.",
            SendWebhook => {
                "Delivers a JSON event signed per Standard Webhooks, retried over hours when the receiver fails."
            }
            EmailIntegration => "Sends an email through SMTP, SendGrid or Mailgun.",
            CrmIntegration => "Creates or updates the contact in HubSpot or Salesforce.",
        }
    }

    /// The JSON Schema (draft 2020-12, self-contained) of this type's config.
    pub fn config_schema(self) -> &'static Value {
        &SCHEMAS[&self].schema
    }

    /// Whether editors need an admin to add or change actions of this type by default.
    pub fn restricted_by_default(self) -> bool {
        matches!(self, ActionType::RunJavascript | ActionType::DeleteContact)
    }

    /// Checks `config` against this type's schema and rules, and parses it. Field paths in the
    /// errors are relative to the config object (`tagColor`, `smtp.port`).
    pub fn parse_config(self, config: &Value) -> Result<ActionConfig, ValidationErrors> {
        let compiled = &SCHEMAS[&self];
        let mut errors = ValidationErrors::default();
        for error in compiled.validator.iter_errors(config) {
            let mut field = pointer_to_path(error.instance_path().as_str());
            match error.kind() {
                jsonschema::error::ValidationErrorKind::Required { property } => {
                    let name = property.as_str().unwrap_or_default();
                    field = join_path(&field, name);
                    errors.push(field, "is required");
                }
                jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                    for name in unexpected {
                        errors.push(join_path(&field, name), "is not a known field");
                    }
                }
                _ => errors.push(field, error.to_string()),
            }
        }
        errors.into_result()?;
        use ActionType::*;
        let parsed = match self {
            AddTag => ActionConfig::AddTag(parse(config)?),
            SetVariable => ActionConfig::SetVariable(parse(config)?),
            AssignAgent => ActionConfig::AssignAgent(parse(config)?),
            SubscribeCampaign => ActionConfig::SubscribeCampaign(parse(config)?),
            DeleteContact => ActionConfig::DeleteContact(parse(config)?),
            RunApiRequest => ActionConfig::RunApiRequest(parse(config)?),
            RunJavascript => ActionConfig::RunJavascript(parse(config)?),
            MoveToBoard => ActionConfig::MoveToBoard(parse(config)?),
            SendWebhook => ActionConfig::SendWebhook(parse(config)?),
            EmailIntegration => ActionConfig::EmailIntegration(parse(config)?),
            CrmIntegration => ActionConfig::CrmIntegration(parse(config)?),
        };
        parsed.check_rules()?;
        Ok(parsed)
    }
}

impl ActionConfig {
    /// The rules across fields that a JSON Schema does not express.
    fn check_rules(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        match self {
            ActionConfig::AssignAgent(c) => match (&c.agent_id, &c.strategy) {
                (Some(_), Some(_)) => {
                    errors.push("strategy", "give either agentId or strategy, not both")
                }
                (None, None) => errors.push("agentId", "give an agentId or a strategy"),
                _ => {}
            },
            ActionConfig::RunApiRequest(c) => {
                check_url(&mut errors, "url", &c.url);
                if c.body.is_some() && c.field_mapping.is_some() {
                    errors.push("fieldMapping", "give either body or fieldMapping, not both");
                }
            }
            ActionConfig::SendWebhook(c) => check_url(&mut errors, "url", &c.url),
            ActionConfig::EmailIntegration(c) => {
                if c.template_id.is_none() {
                    if c.subject.as_deref().is_none_or(str::is_empty) {
                        errors.push("subject", "is required unless templateId is given");
                    }
                    if c.html.is_none() && c.text.is_none() {
                        errors.push("html", "give html or text (or a templateId)");
                    }
                }
                if c.template_id.is_some() && c.provider == EmailProvider::Smtp {
                    errors.push("templateId", "provider templates need sendgrid or mailgun");
                }
                if c.provider == EmailProvider::Mailgun && c.domain.is_none() {
                    errors.push("domain", "is required for mailgun");
                }
                if c.provider != EmailProvider::Smtp && c.smtp.is_some() {
                    errors.push("smtp", "only applies to provider smtp");
                }
                for (field, value) in [
                    ("from", Some(&c.from)),
                    ("to", c.to.as_ref()),
                    ("subject", c.subject.as_ref()),
                ] {
                    if value.is_some_and(|v| v.contains(['\r', '\n'])) {
                        errors.push(field, "must not contain line breaks");
                    }
                }
            }
            ActionConfig::CrmIntegration(c) => {
                if c.field_mapping.is_empty() {
                    errors.push("fieldMapping", "map at least one field");
                }
                if c.provider == CrmProvider::Salesforce {
                    if c.instance_url.is_none() {
                        errors.push("instanceUrl", "is required for salesforce");
                    }
                    if c.external_id_field.is_none() {
                        errors.push("externalIdField", "is required for salesforce");
                    }
                }
                if let Some(url) = &c.instance_url {
                    check_url(&mut errors, "instanceUrl", url);
                }
            }
            _ => {}
        }
        errors.into_result()
    }
}

/// A literal URL must be http(s); a templated one is checked when rendered.
fn check_url(errors: &mut ValidationErrors, field: &str, url: &str) {
    if is_template(url) {
        return;
    }
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        errors.push(field, "must be an http:// or https:// URL");
    }
}

fn parse<T: DeserializeOwned>(config: &Value) -> Result<T, ValidationErrors> {
    T::deserialize(config).map_err(|e| ValidationErrors::single("", e.to_string()))
}

fn join_path(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_owned()
    } else {
        format!("{base}.{name}")
    }
}

/// `/smtp/port` → `smtp.port`, `/headers/0` → `headers[0]`.
fn pointer_to_path(pointer: &str) -> String {
    let mut out = String::new();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{segment}]"));
        } else {
            out = join_path(&out, &segment);
        }
    }
    out
}

struct CompiledSchema {
    schema: Value,
    validator: jsonschema::Validator,
}

fn compile<T: JsonSchema>() -> CompiledSchema {
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let schema = generator.into_root_schema_for::<T>().to_value();
    let validator = jsonschema::options()
        .build(&schema)
        .expect("schemas generated from config structs are valid");
    CompiledSchema { schema, validator }
}

static SCHEMAS: LazyLock<HashMap<ActionType, CompiledSchema>> = LazyLock::new(|| {
    use ActionType::*;
    ActionType::ALL
        .iter()
        .map(|&t| {
            let compiled = match t {
                AddTag => compile::<AddTagConfig>(),
                SetVariable => compile::<SetVariableConfig>(),
                AssignAgent => compile::<AssignAgentConfig>(),
                SubscribeCampaign => compile::<SubscribeCampaignConfig>(),
                DeleteContact => compile::<DeleteContactConfig>(),
                RunApiRequest => compile::<RunApiRequestConfig>(),
                RunJavascript => compile::<RunJavascriptConfig>(),
                MoveToBoard => compile::<MoveToBoardConfig>(),
                SendWebhook => compile::<SendWebhookConfig>(),
                EmailIntegration => compile::<EmailIntegrationConfig>(),
                CrmIntegration => compile::<CrmIntegrationConfig>(),
            };
            (t, compiled)
        })
        .collect()
});

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_type_has_a_self_contained_object_schema() {
        for t in ActionType::ALL {
            let schema = t.config_schema();
            assert_eq!(schema["type"], "object", "{t}");
            assert!(
                !schema.to_string().contains("#/$defs"),
                "{t} schema has refs"
            );
        }
        assert_eq!(ActionType::ALL.len(), 11);
    }

    #[test]
    fn a_valid_add_tag_config_parses() {
        let parsed = ActionType::AddTag
            .parse_config(&json!({"tagName": "lead", "tagColor": "#ff0088"}))
            .unwrap();
        assert!(matches!(parsed, ActionConfig::AddTag(c) if c.tag_name == "lead"));
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let errors = ActionType::AddTag
            .parse_config(&json!({"tagColor": "red", "extra": 1}))
            .unwrap_err();
        let fields: Vec<_> = errors.0.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"tagName"), "{fields:?}");
        assert!(fields.contains(&"tagColor"), "{fields:?}");
        assert!(fields.contains(&"extra"), "{fields:?}");
    }

    #[test]
    fn nested_fields_get_dotted_paths() {
        let errors = ActionType::EmailIntegration
            .parse_config(&json!({
                "provider": "smtp", "from": "a@b.c", "subject": "Hi", "text": "x",
                "smtp": {"host": "h", "port": "25", "security": "none"}
            }))
            .unwrap_err();
        assert_eq!(errors.0[0].field, "smtp.port");
    }

    #[test]
    fn templates_pass_format_rules_until_rendered() {
        ActionType::AddTag
            .parse_config(&json!({"tagName": "x", "tagColor": "{{ vars.color }}"}))
            .unwrap();
        ActionType::SubscribeCampaign
            .parse_config(&json!({"campaignId": "{{ vars.campaign }}"}))
            .unwrap();
        ActionType::SubscribeCampaign
            .parse_config(&json!({"campaignId": "not-a-uuid"}))
            .unwrap_err();
    }

    #[test]
    fn cross_field_rules_are_enforced() {
        let errors = ActionType::AssignAgent
            .parse_config(&json!({}))
            .unwrap_err();
        assert_eq!(errors.0[0].field, "agentId");
        ActionType::AssignAgent
            .parse_config(&json!({"strategy": "round_robin", "priority": "urgent"}))
            .unwrap();
        let errors = ActionType::EmailIntegration
            .parse_config(&json!({"provider": "sendgrid", "from": "a@b.c", "subject": "x\r\nBcc: e@f.g", "text": "t"}))
            .unwrap_err();
        assert_eq!(errors.0[0].field, "subject");
        let errors = ActionType::RunApiRequest
            .parse_config(&json!({"url": "file:///etc/passwd"}))
            .unwrap_err();
        assert_eq!(errors.0[0].field, "url");
    }

    #[test]
    fn json_pointers_become_readable_paths() {
        assert_eq!(pointer_to_path(""), "");
        assert_eq!(pointer_to_path("/smtp/port"), "smtp.port");
        assert_eq!(
            pointer_to_path("/responseMapping/0/path"),
            "responseMapping[0].path"
        );
    }
}
