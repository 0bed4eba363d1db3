//! The emulation's report: the call sequence with latencies, the checks, a summary.

use std::fmt::Write as _;

use super::Emulation;

pub fn to_table(e: &Emulation, pod: &str, runtime: &str, kube: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "kubelet {kube} emulation of pod {pod} against {runtime}\n");
    let _ = writeln!(s, "{:>3}  {:<22} {:<28} {:>9}  result", "#", "call", "for", "ms");
    for (i, call) in e.calls.iter().enumerate() {
        let result = call.error.as_deref().unwrap_or("ok");
        let _ = writeln!(
            s,
            "{:>3}  {:<22} {:<28} {:>9.1}  {result}",
            i + 1,
            call.rpc,
            truncate(&call.detail, 28),
            call.latency.as_secs_f64() * 1000.0
        );
    }
    let _ = writeln!(s, "\nchecks:");
    for check in &e.checks {
        let mark = if check.ok { "ok  " } else { "FAIL" };
        let _ = writeln!(
            s,
            "  {mark} {}{}",
            check.what,
            if check.ok { String::new() } else { format!(": {}", check.detail) }
        );
    }
    if !e.notes.is_empty() {
        let _ = writeln!(s, "\nnotes:");
        for note in &e.notes {
            let _ = writeln!(s, "  {note}");
        }
    }
    if let Some(reason) = &e.aborted {
        let _ = writeln!(s, "\nthe pod did not come up: {reason}");
    }
    let total: f64 = e.calls.iter().map(|c| c.latency.as_secs_f64() * 1000.0).sum();
    let failed = e.checks.iter().filter(|c| !c.ok).count();
    let _ = writeln!(
        s,
        "\n{} calls, {total:.1} ms in calls; {} checks, {failed} failed: {}",
        e.calls.len(),
        e.checks.len(),
        if e.passed() { "PASSED" } else { "FAILED" }
    );
    s
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let cut: String = text.chars().take(width - 1).collect();
        format!("{cut}…")
    }
}
