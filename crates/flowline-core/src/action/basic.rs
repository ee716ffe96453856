//! Configs of the basic actions: they change only Flowline's own data.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{COLOR_OR_TEMPLATE, IDENTIFIER, UUID_OR_TEMPLATE};
use crate::status::VariableType;
use crate::string_enum::string_enum;

/// `add_tag`: find or create a tag and attach it to the run's contact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddTagConfig {
    /// The tag's name; matched ignoring case.
    #[schemars(length(min = 1, max = 100))]
    pub tag_name: String,
    /// The color a newly created tag gets, `#rrggbb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = COLOR_OR_TEMPLATE))]
    pub tag_color: Option<String>,
}

/// `set_variable`: set a typed run variable.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetVariableConfig {
    /// The variable's name, readable later as `{{ vars.<name> }}`.
    #[schemars(regex(pattern = IDENTIFIER))]
    pub name: String,
    /// The type the rendered value is coerced to.
    #[serde(rename = "type")]
    pub variable_type: VariableType,
    /// The value: any JSON, whose strings may hold templates.
    pub value: serde_json::Value,
}

string_enum! {
    /// How `assign_agent` picks an agent when no `agentId` is given.
    AssignStrategy, "assignment strategy" {
        /// The next active agent under capacity after the last one assigned.
        RoundRobin = "round_robin",
        /// The active agent with the fewest open assignments.
        LeastLoaded = "least_loaded",
    }
}

string_enum! {
    /// The priority of an assignment.
    Priority, "priority" {
        /// Low.
        Low = "low",
        /// Normal.
        Normal = "normal",
        /// High.
        High = "high",
        /// Urgent.
        Urgent = "urgent",
    }
}

/// `assign_agent`: assign the contact to an agent, given or chosen by a strategy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssignAgentConfig {
    /// A given agent; exclusive with `strategy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = UUID_OR_TEMPLATE))]
    pub agent_id: Option<String>,
    /// How to choose among active agents; exclusive with `agentId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<AssignStrategy>,
    /// The assignment's priority (default `normal`).
    #[serde(default = "default_priority")]
    pub priority: Priority,
}

fn default_priority() -> Priority {
    Priority::Normal
}

/// `subscribe_campaign`: subscribe the contact to a campaign.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscribeCampaignConfig {
    /// The campaign.
    #[schemars(regex(pattern = UUID_OR_TEMPLATE))]
    pub campaign_id: String,
}

string_enum! {
    /// How `delete_contact` deletes.
    DeleteMode, "delete mode" {
        /// Hidden, restorable from its backup.
        Soft = "soft",
        /// Gone, but for its backup when one was taken.
        Permanent = "permanent",
    }
}

/// `delete_contact`: delete the run's contact, after a backup by default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteContactConfig {
    /// Snapshot the contact (fields, tags, cards, subscriptions, assignments) first.
    #[serde(default = "default_true")]
    pub backup: bool,
    /// `soft` (restorable) or `permanent`.
    #[serde(default = "default_delete_mode")]
    pub mode: DeleteMode,
}

fn default_true() -> bool {
    true
}

fn default_delete_mode() -> DeleteMode {
    DeleteMode::Soft
}
