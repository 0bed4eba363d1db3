//! An undo stack for multi-step creation (a sandbox, a container): each step that changes the
//! host registers how to reverse itself; on failure the steps are undone newest first, and
//! on success the stack is disarmed. Every undo runs even if an earlier one fails.

type Step = Box<dyn FnOnce() -> Result<(), String> + Send>;

#[derive(Default)]
pub struct Undo {
    steps: Vec<(&'static str, Step)>,
}

impl Undo {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers how to reverse the step that just succeeded.
    pub fn push(&mut self, what: &'static str, step: impl FnOnce() -> Result<(), String> + Send + 'static) {
        self.steps.push((what, Box::new(step)));
    }

    /// Creation succeeded: keep everything.
    pub fn disarm(mut self) {
        self.steps.clear();
    }

    /// Reverses every registered step, newest first; returns what could not be undone.
    pub fn rollback(mut self) -> Vec<String> {
        let mut problems = Vec::new();
        while let Some((what, step)) = self.steps.pop() {
            if let Err(e) = step() {
                tracing::warn!(step = what, error = %e, "rollback step failed");
                problems.push(format!("{what}: {e}"));
            }
        }
        problems
    }
}

impl Drop for Undo {
    /// Dropped without disarm (an early return, a panic): roll back.
    fn drop(&mut self) {
        if !self.steps.is_empty() {
            let steps = std::mem::take(&mut self.steps);
            let _ = Undo { steps }.rollback();
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
            if name == "bad" {
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
