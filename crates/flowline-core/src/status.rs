//! The closed sets of states and categories the engine and storage share.

use crate::string_enum::string_enum;

string_enum! {
    /// Lifecycle of a flow.
    FlowStatus, "flow status" {
        /// Being edited; cannot run.
        Draft = "draft",
        /// Published; runs start on its current version.
        Active = "active",
        /// Retired; cannot run or be published.
        Archived = "archived",
    }
}

string_enum! {
    /// Lifecycle of one run of a flow.
    ExecutionStatus, "execution status" {
        /// Accepted, first step queued.
        Pending = "pending",
        /// At least one step has started.
        Running = "running",
        /// Every step it walked completed.
        Completed = "completed",
        /// A step failed with no error edge to follow.
        Failed = "failed",
        /// Cancelled by a person or the API.
        Cancelled = "cancelled",
    }
}

impl ExecutionStatus {
    /// Whether no further change can happen.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

string_enum! {
    /// Lifecycle of one step (action execution); the step row is also the queue entry.
    StepStatus, "step status" {
        /// Waiting in its queue until `run_at`.
        Pending = "pending",
        /// Claimed by a worker holding a lease.
        Running = "running",
        /// Finished successfully.
        Completed = "completed",
        /// Finished with an error, no attempts left or not retryable.
        Failed = "failed",
        /// Cancelled with its run.
        Cancelled = "cancelled",
        /// Ran past its timeout on the last attempt.
        Timeout = "timeout",
    }
}

impl StepStatus {
    /// Whether no further change can happen.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Cancelled | Self::Timeout
        )
    }
}

string_enum! {
    /// The three work queues, one per action category, each with its own concurrency limit.
    Queue, "queue" {
        /// Actions that only touch Flowline's own data.
        Basic = "basic",
        /// API calls, JavaScript and boards.
        Advanced = "advanced",
        /// Webhooks, email and CRM.
        Integration = "integration",
    }
}

string_enum! {
    /// What kind of failure a step attempt met (DESIGN.md §4); decides whether it is retried.
    ErrorCategory, "error category" {
        /// The input or configuration is wrong.
        Validation = "validation",
        /// Credentials or permissions were refused.
        Permission = "permission",
        /// Something referenced does not exist.
        NotFound = "not_found",
        /// The change conflicts with the current state.
        Conflict = "conflict",
        /// A peer asked to slow down.
        RateLimited = "rate_limited",
        /// The peer could not be reached.
        Network = "network",
        /// The step ran past its deadline.
        Timeout = "timeout",
        /// The peer failed (5xx).
        Upstream = "upstream",
        /// The JavaScript sandbox refused or failed the script.
        Sandbox = "sandbox",
        /// The worker holding the step disappeared.
        WorkerLost = "worker_lost",
        /// A fault inside Flowline.
        Internal = "internal",
    }
}

impl ErrorCategory {
    /// Whether an attempt failing this way is worth another attempt by default.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::RateLimited
                | Self::Network
                | Self::Timeout
                | Self::Upstream
                | Self::WorkerLost
                | Self::Internal
        )
    }
}

string_enum! {
    /// How bad a failure is.
    Severity, "severity" {
        /// Expected now and then; nothing to do.
        Low = "low",
        /// Worth a look.
        Medium = "medium",
        /// Needs a person.
        High = "high",
        /// Needs a person now.
        Critical = "critical",
    }
}

string_enum! {
    /// The type of a run variable.
    VariableType, "variable type" {
        /// A string.
        String = "string",
        /// A number.
        Number = "number",
        /// `true` or `false`.
        Boolean = "boolean",
        /// A JSON object.
        Object = "object",
        /// A JSON array.
        Array = "array",
    }
}

string_enum! {
    /// What started a run.
    TriggerKind, "trigger kind" {
        /// The API or the UI.
        Manual = "manual",
        /// An inbound webhook.
        Webhook = "webhook",
        /// A cron schedule.
        Schedule = "schedule",
        /// A change to Flowline's own data (contact created, tag added, ...).
        Event = "event",
    }
}

#[cfg(test)]
mod tests {
    use super::Queue;

    #[test]
    fn a_queue_is_indexed_by_its_place_among_all_three() {
        assert_eq!(Queue::ALL.len(), 3);
        for (i, queue) in Queue::ALL.iter().enumerate() {
            assert_eq!(queue.index(), i);
        }
    }
}
