//! An undo stack for multi-step creation (a sandbox, a container): each step that changes the
//! host registers how to reverse itself; on failure the steps are undone newest first, and
//! on success the stack is disarmed. Every undo runs even if an earlier one fails — except
//! after a failed *guard*: an undo that older steps depend on (a CNI DEL needs the network
//! namespace still pinned), whose failure stops the rollback so that a later retry can finish.

/// Why an undo step failed.
pub type UndoError = Box<dyn std::error::Error + Send + Sync>;

type Step = Box<dyn FnOnce() -> Result<(), UndoError> + Send>;

struct Registered {
    what: &'static str,
    step: Step,
    /// Its failure stops the rollback: the older steps stay done.
    guard: bool,
}

#[derive(Default)]
pub struct Undo {
    steps: Vec<Registered>,
}

/// An undo step that failed.
#[derive(Debug)]
pub struct UndoFailure {
    pub what: &'static str,
    pub error: UndoError,
}

impl std::fmt::Display for UndoFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.error)
    }
}

/// What a rollback did not undo.
#[derive(Debug, Default)]
pub struct Unwound {
    pub failures: Vec<UndoFailure>,
    /// The guard whose failure stopped the rollback; the steps older than it were left as they are.
    pub held_by: Option<&'static str>,
}

impl Undo {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers how to reverse the step that just succeeded.
    pub fn push<E: Into<UndoError>>(
        &mut self,
        what: &'static str,
        step: impl FnOnce() -> Result<(), E> + Send + 'static,
    ) {
        self.steps.push(Registered { what, step: Box::new(move || step().map_err(Into::into)), guard: false });
    }

    /// Registers an undo that the older steps depend on: if it fails, the rollback stops and
    /// leaves the older steps done, so that what failed can be retried later.
    pub fn push_guard<E: Into<UndoError>>(
        &mut self,
        what: &'static str,
        step: impl FnOnce() -> Result<(), E> + Send + 'static,
    ) {
        self.steps.push(Registered { what, step: Box::new(move || step().map_err(Into::into)), guard: true });
    }

    /// Creation succeeded: keep everything.
    pub fn disarm(mut self) {
        self.steps.clear();
    }

    /// Reverses the registered steps newest first, up to a failed guard; says what was not undone.
    pub fn unwind(mut self) -> Unwound {
        let mut unwound = Unwound::default();
        while let Some(Registered { what, step, guard }) = self.steps.pop() {
            if let Err(error) = step() {
                tracing::warn!(step = what, %error, "rollback step failed");
                unwound.failures.push(UndoFailure { what, error });
                if guard {
                    let left: Vec<&str> = self.steps.iter().rev().map(|s| s.what).collect();
                    tracing::warn!(step = what, ?left, "rollback stopped: the older steps wait for a retry");
                    self.steps.clear();
                    unwound.held_by = Some(what);
                    break;
                }
            }
        }
        unwound
    }

    /// Reverses every registered step (up to a failed guard); returns what could not be undone.
    pub fn rollback(self) -> Vec<String> {
        self.unwind().failures.iter().map(ToString::to_string).collect()
    }
}

impl Drop for Undo {
    /// Dropped without disarm (an early return, a panic): roll back.
    fn drop(&mut self) {
        if !self.steps.is_empty() {
            let steps = std::mem::take(&mut self.steps);
            let _ = Undo { steps }.unwind();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    type Log = Arc<Mutex<Vec<&'static str>>>;

    /// A step that records its name in the log, and fails when it is called "bad".
    fn step(log: &Log, name: &'static str) -> impl FnOnce() -> Result<(), String> + Send + 'static {
        let log = log.clone();
        move || {
            log.lock().unwrap().push(name);
            if name.starts_with("bad") {
                Err("stuck".into())
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn rollback_runs_every_step_newest_first() {
        let log = Log::default();
        let mut undo = Undo::new();
        undo.push("a", step(&log, "a"));
        undo.push("bad", step(&log, "bad"));
        undo.push("c", step(&log, "c"));
        assert_eq!(undo.rollback(), vec!["bad: stuck".to_string()]);
        assert_eq!(*log.lock().unwrap(), vec!["c", "bad", "a"]);
    }

    #[test]
    fn a_failed_guard_stops_the_rollback_and_a_good_one_does_not() {
        let log = Log::default();
        let mut undo = Undo::new();
        undo.push("unpin", step(&log, "unpin"));
        undo.push_guard("bad DEL", step(&log, "bad DEL"));
        undo.push("c", step(&log, "c"));
        let unwound = undo.unwind();
        assert_eq!(unwound.held_by, Some("bad DEL"));
        assert_eq!(unwound.failures.len(), 1);
        assert_eq!(*log.lock().unwrap(), vec!["c", "bad DEL"], "what the DEL needs stays");

        let log = Log::default();
        let mut undo = Undo::new();
        undo.push("unpin", step(&log, "unpin"));
        undo.push_guard("DEL", step(&log, "DEL"));
        let unwound = undo.unwind();
        assert!(unwound.held_by.is_none() && unwound.failures.is_empty());
        assert_eq!(*log.lock().unwrap(), vec!["DEL", "unpin"]);
    }

    #[test]
    fn a_dropped_stack_rolls_back_and_a_disarmed_one_does_not() {
        let log = Log::default();
        {
            let mut undo = Undo::new();
            undo.push("a", step(&log, "a"));
        }
        let mut kept = Undo::new();
        kept.push("b", step(&log, "b"));
        kept.disarm();
        assert_eq!(*log.lock().unwrap(), vec!["a"]);
    }
}
