//! Progress of long runs (bench series, soak cycles, skew minors, fixture pushes) on stderr: an
//! indicatif bar when stderr is a terminal, else sparse plain lines ("soak: 50/100 cycles") for
//! CI logs. Never writes to stdout, which holds the result tables.

use std::io::{IsTerminal as _, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// How many plain lines a task with a known total prints at most (one per tenth).
const PLAIN_STEPS: u64 = 10;
/// Without a known total, a plain line every this many units.
const PLAIN_EVERY: u64 = 50;

/// One task's progress: `inc` as units finish, `note` for a line that stays, `finish` at the end.
/// Shared by reference between the futures doing the work.
pub struct Progress {
    task: String,
    unit: String,
    total: Option<u64>,
    done: AtomicU64,
    sink: Sink,
}

enum Sink {
    Bar(indicatif::ProgressBar),
    Lines(Mutex<Box<dyn Write + Send>>),
}

impl Progress {
    /// A bar on a terminal, plain lines on stderr otherwise. `total` None: a count without end.
    pub fn start(task: &str, total: Option<u64>, unit: &str) -> Progress {
        if std::io::stderr().is_terminal() {
            Progress::bar(task, total, unit)
        } else {
            Progress::lines(task, total, unit, Box::new(std::io::stderr()))
        }
    }

    /// Plain lines into `out`, whatever it is.
    pub fn lines(task: &str, total: Option<u64>, unit: &str, out: Box<dyn Write + Send>) -> Progress {
        Progress::with_sink(task, total, unit, Sink::Lines(Mutex::new(out)))
    }

    fn bar(task: &str, total: Option<u64>, unit: &str) -> Progress {
        let target = indicatif::ProgressDrawTarget::stderr();
        let (bar, template) = match total {
            Some(total) => (
                indicatif::ProgressBar::with_draw_target(Some(total), target),
                "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
            ),
            // Without a unit (one step, as fixtures' push), no count: the spinner and the time.
            None if unit.is_empty() => {
                (indicatif::ProgressBar::with_draw_target(None, target), "{prefix} {spinner} ({elapsed})")
            }
            None => {
                (indicatif::ProgressBar::with_draw_target(None, target), "{prefix} {spinner} {pos} {msg} ({elapsed})")
            }
        };
        // The templates are constants: a bad one is a bug, shown as the default style.
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(format!("{task}:"));
        bar.set_message(unit.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress::with_sink(task, total, unit, Sink::Bar(bar))
    }

    fn with_sink(task: &str, total: Option<u64>, unit: &str, sink: Sink) -> Progress {
        Progress { task: task.to_string(), unit: unit.to_string(), total, done: AtomicU64::new(0), sink }
    }

    /// `n` more units done.
    pub fn inc(&self, n: u64) {
        let before = self.done.fetch_add(n, Ordering::SeqCst);
        let done = before + n;
        match &self.sink {
            Sink::Bar(bar) => bar.set_position(done),
            Sink::Lines(out) => {
                let step = match self.total {
                    Some(total) => (total / PLAIN_STEPS).max(1),
                    None => PLAIN_EVERY,
                };
                let last = self.total.is_some_and(|t| done == t);
                if done / step > before / step || last {
                    let count = match self.total {
                        Some(total) => format!("{done}/{total}"),
                        None => done.to_string(),
                    };
                    self.write_line(out, &format!("{} {}", count, self.unit));
                }
            }
        }
    }

    /// A line that stays above the bar (or one plain line): a phase, a kill, a finished step.
    pub fn note(&self, message: &str) {
        match &self.sink {
            // Above the bar while it runs; a plain line once it is finished.
            Sink::Bar(bar) => bar.suspend(|| eprintln!("{}: {message}", self.task)),
            Sink::Lines(out) => self.write_line(out, message),
        }
    }

    /// Units done so far.
    pub fn done(&self) -> u64 {
        self.done.load(Ordering::SeqCst)
    }

    /// Removes the bar; plain lines need no end.
    pub fn finish(&self) {
        if let Sink::Bar(bar) = &self.sink {
            bar.finish_and_clear();
        }
    }

    fn write_line(&self, out: &Mutex<Box<dyn Write + Send>>, text: &str) {
        let mut out = out.lock().unwrap_or_else(|p| p.into_inner());
        // Progress is best effort: a closed stderr must not end the run.
        let _ = writeln!(out, "{}: {text}", self.task);
        let _ = out.flush();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A writer whose bytes the test reads afterwards.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn a_known_total_prints_one_line_per_tenth_and_the_last() {
        let out = Shared::default();
        let progress = Progress::lines("soak", Some(25), "cycles", Box::new(out.clone()));
        for _ in 0..25 {
            progress.inc(1);
        }
        progress.finish();
        let lines: Vec<String> = out.text().lines().map(str::to_string).collect();
        assert_eq!(lines.first().map(String::as_str), Some("soak: 2/25 cycles"));
        assert_eq!(lines.last().map(String::as_str), Some("soak: 25/25 cycles"));
        assert_eq!(lines.len(), 13, "{lines:?}");
        assert_eq!(progress.done(), 25);
    }

    #[test]
    fn an_open_count_prints_every_fifty_and_notes_as_given() {
        let out = Shared::default();
        let progress = Progress::lines("chaos", None, "cycles", Box::new(out.clone()));
        progress.inc(49);
        progress.note("kill 1/3 at 2.0s");
        progress.inc(2);
        assert_eq!(out.text(), "chaos: kill 1/3 at 2.0s\nchaos: 51 cycles\n");
    }

    #[test]
    fn a_jump_over_several_steps_prints_one_line() {
        let out = Shared::default();
        let progress = Progress::lines("skew", Some(8), "minors", Box::new(out.clone()));
        progress.inc(8);
        assert_eq!(out.text(), "skew: 8/8 minors\n");
    }
}
