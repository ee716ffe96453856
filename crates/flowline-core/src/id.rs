//! Newtype identifiers. Every id is a UUIDv7, so ids sort by creation time.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! ids {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    )*};
}

ids! {
    /// A workspace (tenant).
    WorkspaceId,
    /// A member of a workspace.
    MemberId,
    /// An API token.
    TokenId,
    /// A flow.
    FlowId,
    /// An action of a flow.
    ActionId,
    /// One run of a flow.
    ExecutionId,
    /// One step (action execution) of a run.
    StepId,
    /// An audit log entry.
    AuditId,
    /// A contact.
    ContactId,
    /// A tag.
    TagId,
    /// An agent who takes assignments.
    AgentId,
    /// One assignment of a contact to an agent.
    AssignmentId,
    /// A campaign.
    CampaignId,
    /// A contact's subscription to a campaign.
    SubscriptionId,
    /// A kanban board.
    BoardId,
    /// A column (stage) of a board.
    ColumnId,
    /// Where a contact sits on a board.
    CardId,
    /// A move of a contact on a board.
    MoveId,
    /// A snapshot of a deleted contact.
    BackupId,
}
