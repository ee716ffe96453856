//! Configs of the integration actions: webhooks, email and CRMs.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::IDENTIFIER;
use crate::string_enum::string_enum;

/// `send_webhook`: deliver a signed event (Standard Webhooks).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendWebhookConfig {
    /// The receiver's URL, `http` or `https`.
    #[schemars(length(min = 1, max = 4096))]
    pub url: String,
    /// The body; by default an envelope `{type, timestamp, data: {contact, vars, execution}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The `whsec_...` signing secret, normally `{{ secrets.<name> }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
    /// The envelope's `type` (default `flow.webhook`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub event_type: Option<String>,
}

string_enum! {
    /// How email leaves.
    EmailProvider, "email provider" {
        /// A real SMTP session.
        Smtp = "smtp",
        /// SendGrid's v3 mail send API.
        Sendgrid = "sendgrid",
        /// Mailgun's messages API.
        Mailgun = "mailgun",
    }
}

string_enum! {
    /// How an SMTP session is secured.
    SmtpSecurity, "SMTP security" {
        /// Plain text.
        None = "none",
        /// STARTTLS after connecting.
        Starttls = "starttls",
        /// TLS from the first byte.
        Tls = "tls",
    }
}

/// Where and how to reach an SMTP server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SmtpSettings {
    /// The server's host name.
    #[schemars(length(min = 1, max = 255))]
    pub host: String,
    /// The server's port.
    #[schemars(range(min = 1, max = 65_535))]
    pub port: u16,
    /// `none`, `starttls` or `tls`.
    pub security: SmtpSecurity,
    /// The user name, if the server wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The password, normally `{{ secrets.<name> }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

/// `email_integration`: send an email through SMTP, SendGrid or Mailgun.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmailIntegrationConfig {
    /// `smtp`, `sendgrid` or `mailgun`.
    pub provider: EmailProvider,
    /// The sender address.
    #[schemars(length(min = 3, max = 320))]
    pub from: String,
    /// The recipient (default: the contact's email).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The subject; required unless `templateId` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// An HTML body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// A plain-text body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A provider-side template (SendGrid dynamic template id, Mailgun template name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    /// The template's variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customizations: Option<serde_json::Map<String, serde_json::Value>>,
    /// SMTP server settings (default: from configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpSettings>,
    /// The provider's API key, normally `{{ secrets.<name> }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// The Mailgun sending domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

string_enum! {
    /// Which CRM.
    CrmProvider, "CRM provider" {
        /// HubSpot CRM v3.
        Hubspot = "hubspot",
        /// Salesforce REST sObjects.
        Salesforce = "salesforce",
    }
}

string_enum! {
    /// What to do in the CRM.
    CrmOperation, "CRM operation" {
        /// Create or update a contact.
        UpsertContact = "upsert_contact",
    }
}

/// `crm_integration`: push the contact to a CRM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CrmIntegrationConfig {
    /// `hubspot` or `salesforce`.
    pub provider: CrmProvider,
    /// `upsert_contact`.
    pub operation: CrmOperation,
    /// CRM field → context path or template (`contact.email`, `{{ vars.plan }}`); not empty.
    pub field_mapping: BTreeMap<String, String>,
    /// The CRM field the upsert matches on (HubSpot default `email`; Salesforce: required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id_field: Option<String>,
    /// The access token, normally `{{ secrets.<name> }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// The Salesforce instance URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_url: Option<String>,
    /// A variable that receives the CRM record id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = IDENTIFIER))]
    pub output_variable: Option<String>,
}
