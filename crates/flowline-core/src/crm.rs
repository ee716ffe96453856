//! The CRM side: the states of its records, the events its changes raise, and the triggers
//! that start flows on those events.

use serde::{Deserialize, Serialize};

use crate::id::{BoardId, ColumnId, ContactId, TagId};
use crate::string_enum::string_enum;

/// How many runs deep a chain of event-started runs may go: a run started by an event that a
/// run at this depth raised fails at once instead of running (a flow that re-triggers itself).
pub const MAX_EVENT_DEPTH: i32 = 8;

string_enum! {
    /// Lifecycle of a campaign.
    CampaignStatus, "campaign status" {
        /// Takes subscriptions.
        Active = "active",
        /// Closed: subscribing to it fails.
        Archived = "archived",
    }
}

string_enum! {
    /// Whether a contact receives a campaign.
    SubscriptionStatus, "subscription status" {
        /// Receives it.
        Subscribed = "subscribed",
        /// Left it.
        Unsubscribed = "unsubscribed",
    }
}

string_enum! {
    /// A change to contacts that can start flows.
    EventKind, "event" {
        /// A contact was created.
        ContactCreated = "contact.created",
        /// A contact's fields changed.
        ContactUpdated = "contact.updated",
        /// A tag was attached to a contact.
        TagAdded = "tag.added",
        /// A contact was placed in, or moved to, a board column.
        ContactMoved = "contact.moved",
    }
}

/// A change that happened to a contact.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContactEvent {
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// To whom.
    pub contact_id: ContactId,
    /// `tag.added`: the tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag_id: Option<TagId>,
    /// `tag.added`: the tag's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag_name: Option<String>,
    /// `contact.moved`: the board.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub board_id: Option<BoardId>,
    /// `contact.moved`: the column it came from, if it sat on the board before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_column_id: Option<ColumnId>,
    /// `contact.moved`: the column it sits in now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column_id: Option<ColumnId>,
}

impl ContactEvent {
    /// An event with no details beyond its contact.
    pub fn new(kind: EventKind, contact_id: ContactId) -> Self {
        Self {
            kind,
            contact_id,
            tag_id: None,
            tag_name: None,
            board_id: None,
            from_column_id: None,
            column_id: None,
        }
    }
}

/// An event a flow starts on, optionally narrowed to one tag, board or column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventTrigger {
    /// `contact.created`, `contact.updated`, `tag.added` or `contact.moved`.
    pub event: EventKind,
    /// `tag.added` only: just this tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag_id: Option<TagId>,
    /// `contact.moved` only: just moves on this board.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board_id: Option<BoardId>,
    /// `contact.moved` only: just moves into this column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column_id: Option<ColumnId>,
}

impl EventTrigger {
    /// Whether `event` starts a flow with this trigger.
    pub fn matches(&self, event: &ContactEvent) -> bool {
        self.event == event.kind
            && self.tag_id.is_none_or(|t| event.tag_id == Some(t))
            && self.board_id.is_none_or(|b| event.board_id == Some(b))
            && self.column_id.is_none_or(|c| event.column_id == Some(c))
    }

    /// Why this trigger makes no sense, if it does not: a filter its event does not have.
    pub fn problem(&self) -> Option<&'static str> {
        match self.event {
            EventKind::TagAdded if self.board_id.is_some() || self.column_id.is_some() => {
                Some("`tag.added` can be narrowed by `tagId` only")
            }
            EventKind::ContactMoved if self.tag_id.is_some() => {
                Some("`contact.moved` can be narrowed by `boardId` and `columnId` only")
            }
            EventKind::ContactCreated | EventKind::ContactUpdated
                if self.tag_id.is_some() || self.board_id.is_some() || self.column_id.is_some() =>
            {
                Some("`contact.created` and `contact.updated` take no filters")
            }
            _ => None,
        }
    }
}

/// Whether `color` is `#rrggbb`.
pub fn is_color(color: &str) -> bool {
    color.len() == 7 && color.starts_with('#') && color[1..].chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_match_their_event_and_filters() {
        let tag = TagId::new();
        let contact = ContactId::new();
        let mut event = ContactEvent::new(EventKind::TagAdded, contact);
        event.tag_id = Some(tag);
        let any_tag = EventTrigger {
            event: EventKind::TagAdded,
            tag_id: None,
            board_id: None,
            column_id: None,
        };
        assert!(any_tag.matches(&event));
        assert!(
            EventTrigger {
                tag_id: Some(tag),
                ..any_tag.clone()
            }
            .matches(&event)
        );
        assert!(
            !EventTrigger {
                tag_id: Some(TagId::new()),
                ..any_tag.clone()
            }
            .matches(&event)
        );
        assert!(
            !EventTrigger {
                event: EventKind::ContactMoved,
                ..any_tag
            }
            .matches(&event)
        );
    }

    #[test]
    fn colors_are_six_hex_digits() {
        assert!(is_color("#00ffAA"));
        for bad in ["00ffaa", "#00ffa", "#00ffaag", "#0g0000", "", "#00ffaa "] {
            assert!(!is_color(bad), "{bad}");
        }
    }
}
