//! The status state machine. Every status change anywhere in deputy is checked here
//! first; the store then applies it as a compare-and-set on the current status.
//!
//! ```text
//! blocked ──> queued ──> running ──> succeeded | failed | cancelled | timed_out | interrupted
//!    │  └──> scheduled ─┘  │                              │
//!    └─────────┴───────────┴──> cancelled                 └──> queued | scheduled (new attempt)
//! ```
//!
//! A terminal status never changes in place. Leaving one is always a *new attempt*
//! (automatic retry, recovery requeue, or `deputy retry`): the attempt number goes up
//! and the old attempt's outcome stays in the task's attempt history.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Status {
    /// Waiting for its dependencies.
    Blocked,
    /// Waiting for its `run_at` time (or a retry's backoff).
    Scheduled,
    /// Ready to run.
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
    /// Its daemon died or shut down while it ran.
    Interrupted,
}

pub const ALL_STATUSES: [Status; 9] = [
    Status::Blocked,
    Status::Scheduled,
    Status::Queued,
    Status::Running,
    Status::Succeeded,
    Status::Failed,
    Status::Cancelled,
    Status::TimedOut,
    Status::Interrupted,
];

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Blocked => "blocked",
            Status::Scheduled => "scheduled",
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::TimedOut => "timed_out",
            Status::Interrupted => "interrupted",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Succeeded
                | Status::Failed
                | Status::Cancelled
                | Status::TimedOut
                | Status::Interrupted
        )
    }

    /// Waiting to run: not started, not finished.
    pub fn is_pending(self) -> bool {
        matches!(self, Status::Blocked | Status::Scheduled | Status::Queued)
    }

    /// Whether a dependent on a `success` edge may run after this outcome.
    pub fn satisfies_success_edge(self) -> bool {
        self == Status::Succeeded
    }

    /// Whether an attempt that ended this way may be retried automatically.
    pub fn is_retryable_outcome(self) -> bool {
        matches!(
            self,
            Status::Failed | Status::TimedOut | Status::Interrupted
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_STATUSES
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = ALL_STATUSES.iter().map(|s| s.as_str()).collect();
                format!("`{s}` is not a status: use one of {}", names.join(", "))
            })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("a task cannot go from {from} to {to}")]
    NotAllowed { from: Status, to: Status },
    #[error("leaving {from} starts a new attempt; going to {to} must record one")]
    NeedsNewAttempt { from: Status, to: Status },
    #[error("only leaving a terminal status starts a new attempt ({from} -> {to})")]
    UnexpectedNewAttempt { from: Status, to: Status },
}

/// The one function that decides whether a status change is legal.
/// `new_attempt` says whether the change starts a new attempt.
pub fn check_transition(
    from: Status,
    to: Status,
    new_attempt: bool,
) -> Result<(), TransitionError> {
    use Status::*;
    if from.is_terminal() {
        return match (to, new_attempt) {
            (Queued | Scheduled, true) => Ok(()),
            (Queued | Scheduled, false) => Err(TransitionError::NeedsNewAttempt { from, to }),
            _ => Err(TransitionError::NotAllowed { from, to }),
        };
    }
    if new_attempt {
        return Err(TransitionError::UnexpectedNewAttempt { from, to });
    }
    let ok = match from {
        Blocked => matches!(to, Queued | Scheduled | Cancelled),
        Scheduled => matches!(to, Queued | Cancelled),
        Queued => matches!(to, Running | Cancelled),
        Running => matches!(to, Succeeded | Failed | Cancelled | TimedOut | Interrupted),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(TransitionError::NotAllowed { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_statuses_only_leave_through_a_new_attempt() {
        for from in ALL_STATUSES.into_iter().filter(|s| s.is_terminal()) {
            for to in ALL_STATUSES {
                let plain = check_transition(from, to, false);
                assert!(plain.is_err(), "{from} -> {to} must not happen in place");
                let retried = check_transition(from, to, true).is_ok();
                assert_eq!(retried, matches!(to, Status::Queued | Status::Scheduled));
            }
        }
    }

    #[test]
    fn running_is_reached_only_from_queued() {
        for from in ALL_STATUSES {
            let ok = check_transition(from, Status::Running, false).is_ok();
            assert_eq!(ok, from == Status::Queued, "{from} -> running");
        }
    }

    #[test]
    fn status_names_round_trip() {
        for s in ALL_STATUSES {
            assert_eq!(s.as_str().parse::<Status>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
    }
}
