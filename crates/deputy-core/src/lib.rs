//! deputy's task model: ids, task specs, the status state machine, events and validation.
//!
//! This crate owns the rules; it never does I/O. Every other crate goes through
//! [`status::check_transition`] to change a task's status and through [`submit`]
//! to turn user input into a stored [`spec::TaskSpec`].

pub mod agent;
pub mod api;
pub mod dag;
pub mod event;
pub mod id;
pub mod limits;
#[cfg(feature = "openapi")]
mod openapi;
pub mod output;
pub mod retry;
pub mod schedule;
pub mod size;
pub mod spec;
pub mod status;
pub mod submit;
pub mod task;
pub mod text;
pub mod time;
pub mod trace;

pub use event::{Event, EventBody, Stream};
pub use id::{IdRef, NodeId, TaskId};
pub use spec::{Command, DepMode, Dependency, Priority, RetryPolicy, TaskKind, TaskSpec};
pub use status::{Status, TransitionError};
pub use submit::{NewTask, SubmitDefaults, ValidationError};
pub use task::{Attempt, Task};
