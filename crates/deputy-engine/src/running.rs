//! The supervisors this node runs, by task, and how a cancel finds them.
//!
//! A cancel reaches a running task's supervisor through this set: the API's cancel and
//! the log follower (cancels made on other nodes) both call [`RunningSet::signal_cancel`]
//! after the cancel flag committed. A task is in the set only once its claim committed
//! and the scheduler registered it, so a cancel can arrive in between and find nothing.
//! The scheduler therefore opens a *claim window* before it claims: a cancel that finds
//! no supervisor while a window is open is remembered, and registration applies it. No
//! cancel is lost, and a claim costs no read of the stored flags (the window is one
//! mutex; the read was a database round trip on every claim). Only if the event bus
//! lost events during a window (a lagging receiver), so that cancels may have gone by
//! unseen, does registration ask for the stored flags to be read.

use std::collections::HashMap;
use std::sync::Mutex;

use deputy_core::{Task, TaskId};

use crate::supervisor::Stops;

struct Entry {
    stops: Stops,
    cancel_reason: Option<String>,
}

#[derive(Default)]
struct State {
    entries: HashMap<TaskId, Entry>,
    /// Claims between their start and the registration of what they claimed.
    open_windows: usize,
    /// Cancels that found no supervisor while a window was open (bounded by the cancels
    /// made during one claim; cleared when the last window closes).
    missed: HashMap<TaskId, Option<String>>,
    /// The bus lagged while a window was open: cancels may have gone by unseen.
    lagged: bool,
}

/// This node's running supervisors. Each fact about a running task in memory lives here,
/// behind one mutex.
#[derive(Default)]
pub(crate) struct RunningSet {
    state: Mutex<State>,
}

/// What registering a claim's tasks gives the scheduler.
pub(crate) struct Registered {
    /// Each task with the stops of its supervisor (already cancelled if a cancel came
    /// during the window).
    pub tasks: Vec<(Task, Stops)>,
    /// Cancels may have been missed (the bus lagged): read the stored flags.
    pub read_flags: bool,
}

/// An open claim window; closed by [`ClaimWindow::register`], or by dropping it when
/// the claim failed.
pub(crate) struct ClaimWindow<'a> {
    set: &'a RunningSet,
    open: bool,
}

impl RunningSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves only plain maps behind; carry on.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn count(&self) -> usize {
        self.lock().entries.len()
    }

    pub(crate) fn ids(&self) -> Vec<TaskId> {
        self.lock().entries.keys().copied().collect()
    }

    pub(crate) fn stops(&self, id: TaskId) -> Option<Stops> {
        self.lock().entries.get(&id).map(|e| e.stops.clone())
    }

    pub(crate) fn all_stops(&self) -> Vec<Stops> {
        self.lock()
            .entries
            .values()
            .map(|e| e.stops.clone())
            .collect()
    }

    pub(crate) fn cancel_reason(&self, id: TaskId) -> Option<String> {
        self.lock()
            .entries
            .get(&id)
            .and_then(|e| e.cancel_reason.clone())
    }

    /// Forgets a supervisor whose process is over.
    pub(crate) fn remove(&self, id: TaskId) {
        self.lock().entries.remove(&id);
    }

    /// Opens a claim window; call before the claim is sent to the store.
    pub(crate) fn open_window(&self) -> ClaimWindow<'_> {
        self.lock().open_windows += 1;
        ClaimWindow {
            set: self,
            open: true,
        }
    }

    /// Signals the supervisor of `id`. Returns whether one was found; a cancel that
    /// finds none while a claim window is open is kept for the registration.
    pub(crate) fn signal_cancel(&self, id: TaskId, reason: Option<String>) -> bool {
        let mut state = self.lock();
        match state.entries.get_mut(&id) {
            Some(entry) => {
                if entry.cancel_reason.is_none() {
                    entry.cancel_reason = reason;
                }
                entry.stops.cancel.cancel();
                true
            }
            None => {
                if state.open_windows > 0 {
                    state.missed.entry(id).or_insert(reason);
                }
                false
            }
        }
    }

    /// The event bus dropped events for this node: cancels may have gone by unseen.
    /// Returns the registered tasks, whose stored flags the caller reads; a claim window
    /// open now reads its own at registration.
    pub(crate) fn lagged(&self) -> Vec<TaskId> {
        let mut state = self.lock();
        if state.open_windows > 0 {
            state.lagged = true;
        }
        state.entries.keys().copied().collect()
    }

    fn close_window(&self, state: &mut State) {
        state.open_windows = state.open_windows.saturating_sub(1);
        if state.open_windows == 0 {
            state.missed.clear();
            state.lagged = false;
        }
    }
}

impl ClaimWindow<'_> {
    /// Registers the claimed tasks and closes the window, applying the cancels that
    /// came while it was open.
    pub(crate) fn register(mut self, tasks: Vec<Task>) -> Registered {
        let mut state = self.set.lock();
        let mut out = Vec::with_capacity(tasks.len());
        for task in tasks {
            let stops = Stops::default();
            let cancel_reason = state.missed.remove(&task.id);
            if cancel_reason.is_some() {
                stops.cancel.cancel();
            }
            state.entries.insert(
                task.id,
                Entry {
                    stops: stops.clone(),
                    cancel_reason: cancel_reason.flatten(),
                },
            );
            out.push((task, stops));
        }
        let read_flags = state.lagged;
        self.set.close_window(&mut state);
        self.open = false;
        Registered {
            tasks: out,
            read_flags,
        }
    }
}

impl Drop for ClaimWindow<'_> {
    fn drop(&mut self) {
        if self.open {
            let mut state = self.set.lock();
            self.set.close_window(&mut state);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deputy_core::submit::NewTask;

    fn task() -> Task {
        let valid = NewTask {
            command: Some(deputy_core::Command::Line("true".into())),
            ..NewTask::default()
        }
        .validate(
            &deputy_core::submit::SubmitDefaults {
                timeout_ms: None,
                output_cap: 1 << 20,
                cwd: "/tmp".into(),
            },
            0,
        )
        .unwrap();
        Task {
            id: TaskId::new(),
            status: deputy_core::Status::Running,
            attempt: 1,
            spec: valid.spec,
            depends_on: Vec::new(),
            created_at: 0,
            updated_at: 0,
            started_at: Some(0),
            finished_at: None,
            exit_code: None,
            signal: None,
            reason: None,
            ready_at: None,
            node: None,
            lease_expires_at: None,
            pgid: None,
            cancel_requested: false,
            usage: None,
            resume_session: None,
        }
    }

    #[test]
    fn a_cancel_during_the_claim_reaches_the_registered_task() {
        let set = RunningSet::default();
        let t = task();
        let window = set.open_window();
        // The claim committed; the cancel commits and is signalled before registration.
        assert!(!set.signal_cancel(t.id, Some("stop it".into())));
        let reg = window.register(vec![t.clone()]);
        assert!(!reg.read_flags);
        assert!(reg.tasks[0].1.cancel.is_cancelled());
        assert_eq!(set.cancel_reason(t.id).as_deref(), Some("stop it"));
    }

    #[test]
    fn a_cancel_after_registration_is_signalled_directly() {
        let set = RunningSet::default();
        let t = task();
        let reg = set.open_window().register(vec![t.clone()]);
        assert!(!reg.tasks[0].1.cancel.is_cancelled());
        assert!(set.signal_cancel(t.id, None));
        assert!(reg.tasks[0].1.cancel.is_cancelled());
    }

    #[test]
    fn cancels_outside_a_window_are_not_kept() {
        let set = RunningSet::default();
        let t = task();
        // A task of another node, cancelled while this node claims nothing.
        assert!(!set.signal_cancel(t.id, None));
        let reg = set.open_window().register(vec![t]);
        assert!(!reg.tasks[0].1.cancel.is_cancelled());
        assert!(set.lock().missed.is_empty());
    }

    #[test]
    fn a_failed_claim_closes_its_window_and_forgets_its_cancels() {
        let set = RunningSet::default();
        let t = task();
        {
            let _window = set.open_window();
            set.signal_cancel(t.id, None);
            set.lagged();
        }
        let state = set.lock();
        assert_eq!(state.open_windows, 0);
        assert!(state.missed.is_empty());
        assert!(!state.lagged);
    }

    #[test]
    fn a_lag_during_the_window_asks_for_the_stored_flags() {
        let set = RunningSet::default();
        let window = set.open_window();
        assert!(set.lagged().is_empty());
        let reg = window.register(vec![task()]);
        assert!(reg.read_flags);
        // The next claim starts clean.
        assert!(!set.open_window().register(vec![task()]).read_flags);
    }
}
