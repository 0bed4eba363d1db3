//! A soak or chaos report for people (a table: each resource before and after, what leaked, the
//! daemon's RSS, the faults and what was found after them) and for CI (JSON).

use std::fmt::Write as _;

use super::Report;

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// RSS growth per hundred cycles, in KiB, from the start and end readings.
pub fn rss_growth_per_100(report: &Report) -> Option<f64> {
    let (before, after) = (report.accounting.rss_before_kib?, report.accounting.rss_after_kib?);
    (report.cycles_done > 0).then(|| (after as f64 - before as f64) * 100.0 / report.cycles_done as f64)
}

pub fn to_table(report: &Report) -> String {
    let mut out = String::new();
    let what = if report.chaos.is_some() { "chaos" } else { "soak" };
    let _ = writeln!(
        out,
        "{what} of {}: {} of {} cycles at concurrency {} ({} failed), {} steady pods, {} image pull/remove rounds, {:.0?}{}",
        report.runtime,
        report.cycles_done,
        if report.chaos.is_some() { "unbounded".to_string() } else { report.cycles.to_string() },
        report.concurrency,
        report.cycles_failed,
        report.steady_pods,
        report.images_cycled,
        report.duration,
        if report.interrupted { " (interrupted)" } else { "" },
    );
    if let Some(chaos) = &report.chaos {
        let _ = writeln!(
            out,
            "faults: {} daemon kills (seed {}; replay with --seed {}), {} restarts verified; pods lost {}, containers wrongly reported {}, duplicate sandboxes {}",
            chaos.kills,
            chaos.seed,
            chaos.seed,
            chaos.verified,
            chaos.pods_lost,
            chaos.containers_wrong,
            chaos.duplicates
        );
        if chaos.rounds > chaos.kills {
            let kinds: Vec<&str> = chaos.faults.iter().map(|k| k.name()).collect();
            let _ = writeln!(
                out,
                "other faults ({}): {} helper kills, {} OCI runtime kills, {} disk-full rounds, {} registry drops; {} wrong after them; {} cycles broken by them (not counted as failures)",
                kinds.join(", "),
                chaos.monitor_kills,
                chaos.oci_runtime_kills,
                chaos.disk_full_rounds,
                chaos.registry_drops,
                chaos.fault_findings,
                report.cycles_faulted
            );
            for outcome in &chaos.outcomes {
                let _ = writeln!(out, "    {outcome}");
            }
        }
    }
    let _ = writeln!(out, "{:<36} {:>7} {:>7} {:>7}", "resource", "before", "after", "leaked");
    for line in &report.accounting.lines {
        let _ = writeln!(out, "{:<36} {:>7} {:>7} {:>7}", line.resource, line.before, line.after, line.leaked.len());
        for leaked in line.leaked.iter().take(10) {
            let _ = writeln!(out, "    {leaked}");
        }
        if line.leaked.len() > 10 {
            let _ = writeln!(out, "    … and {} more", line.leaked.len() - 10);
        }
    }
    if let (Some(before), Some(after)) = (report.accounting.rss_before_kib, report.accounting.rss_after_kib) {
        let growth = rss_growth_per_100(report).map_or(String::new(), |g| format!("; {:+.0} KiB per 100 cycles", g));
        let _ = writeln!(
            out,
            "daemon RSS: {} at the start, {} after {} cycles ({:+.1} MiB{growth})",
            mib(before),
            mib(after),
            report.cycles_done,
            (after as f64 - before as f64) / 1024.0
        );
    }
    if let (Some(before), Some(after)) = (report.accounting.rss_anon_before_kib, report.accounting.rss_anon_after_kib) {
        let _ = writeln!(
            out,
            "    of which anonymous (heap, stacks): {} at the start, {} at the end ({:+.1} MiB); the rest is code and files paged in",
            mib(before),
            mib(after),
            (after as f64 - before as f64) / 1024.0
        );
    }
    for (what, series) in [("daemon RSS", &report.rss), ("anonymous", &report.rss_anon)] {
        if !series.is_empty() {
            let series: Vec<String> = series.iter().map(|(n, kib)| format!("{n}: {}", mib(*kib))).collect();
            let _ = writeln!(out, "{what} by cycles: {}", series.join(", "));
        }
    }
    for (rpc, (times, first)) in &report.unanswered {
        let _ = writeln!(out, "not answered (optional, not counted as a failure): {rpc} {times} times; first: {first}");
    }
    if report.finding_count > 0 {
        let _ = writeln!(out, "findings ({}):", report.finding_count);
        for finding in &report.findings {
            let _ = writeln!(out, "    {finding}");
        }
        if report.finding_count > report.findings.len() {
            let _ = writeln!(out, "    … and {} more", report.finding_count - report.findings.len());
        }
    }
    let leaks = report.accounting.leaks();
    let _ = writeln!(
        out,
        "verdict: {}",
        match (leaks, report.finding_count) {
            (0, 0) => "no leaks, nothing wrong".to_string(),
            (l, f) => format!("{l} leaked resources, {f} findings"),
        }
    );
    out
}

pub fn to_json(report: &Report) -> serde_json::Value {
    serde_json::json!({
        "harness_version": crate::html::HARNESS_VERSION,
        "kind": if report.chaos.is_some() { "chaos" } else { "soak" },
        "runtime": report.runtime,
        "cycles": report.cycles,
        "cycles_done": report.cycles_done,
        "cycles_failed": report.cycles_failed,
        "cycles_faulted": report.cycles_faulted,
        "fault_effects": report.fault_effects,
        "concurrency": report.concurrency,
        "steady_pods": report.steady_pods,
        "images_cycled": report.images_cycled,
        "interrupted": report.interrupted,
        "duration_seconds": report.duration.as_secs_f64(),
        "leaks": report.accounting.leaks(),
        "accounting": report.accounting.lines,
        "veths_seen": report.accounting.veths_seen,
        "rss_before_kib": report.accounting.rss_before_kib,
        "rss_after_kib": report.accounting.rss_after_kib,
        "rss_growth_kib_per_100_cycles": rss_growth_per_100(report),
        "rss_by_cycles": report.rss,
        "rss_anon_before_kib": report.accounting.rss_anon_before_kib,
        "rss_anon_after_kib": report.accounting.rss_anon_after_kib,
        "rss_anon_by_cycles": report.rss_anon,
        "unanswered": report.unanswered.iter().map(|(rpc, (times, first))| serde_json::json!({"rpc": rpc, "times": times, "first": first})).collect::<Vec<_>>(),
        "finding_count": report.finding_count,
        "findings": report.findings,
        "chaos": report.chaos,
        "passed": !report.failed(),
    })
}
