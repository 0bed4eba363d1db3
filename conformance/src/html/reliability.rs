//! Reliability figures of `soak` and `chaos` results: the verdict, the load, the faults and what
//! survived them, the leak accounting, and the daemon's RSS over the cycles as a line (geometry
//! here, drawn by templates/reliability.html).

use serde::Serialize;

use super::input::{Doc, Input, Kind};
use super::schema::SoakDoc;

const RSS_WIDTH: f64 = 420.0;
const RSS_HEIGHT: f64 = 90.0;
const RSS_PAD: f64 = 8.0;

#[derive(Debug, Serialize)]
pub struct Reliability {
    pub source: String,
    /// soak or chaos.
    pub kind: String,
    pub runtime: String,
    pub passed: bool,
    pub figures: Vec<Figure>,
    pub accounting: Vec<Line>,
    pub rss: Option<Rss>,
    pub findings: Vec<String>,
    pub findings_not_shown: usize,
    pub unanswered: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Figure {
    pub label: String,
    pub value: String,
    /// Shown as a problem.
    pub bad: bool,
}

#[derive(Debug, Serialize)]
pub struct Line {
    pub resource: String,
    pub before: usize,
    pub after: usize,
    pub leaked: usize,
    pub examples: Vec<String>,
}

/// The RSS line: points in the SVG's pixels, and the range it spans.
#[derive(Debug, Serialize)]
pub struct Rss {
    pub width: f64,
    pub height: f64,
    pub points: Vec<Point>,
    pub low: String,
    pub high: String,
    pub last_cycle: usize,
}

pub fn build(inputs: &[Input]) -> Vec<Reliability> {
    inputs
        .iter()
        .filter_map(|input| match &input.doc {
            Doc::Soak(doc) => Some(one(&input.source, input.kind, doc)),
            _ => None,
        })
        .collect()
}

fn one(source: &str, kind: Kind, doc: &SoakDoc) -> Reliability {
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    let figure = |label: &str, value: String, bad: bool| Figure { label: label.to_string(), value, bad };
    let cycles = match &doc.chaos {
        Some(_) => doc.cycles_done.to_string(),
        None => format!("{} of {}", doc.cycles_done, doc.cycles),
    };
    let mut figures = vec![
        figure("pod cycles", cycles, doc.interrupted),
        figure("cycles failed", doc.cycles_failed.to_string(), doc.cycles_failed > 0),
        figure("concurrency", doc.concurrency.to_string(), false),
        figure("steady pods", doc.steady_pods.to_string(), false),
        figure("image pull/remove rounds", doc.images_cycled.to_string(), false),
        figure("duration", format!("{:.0} s", doc.duration_seconds), false),
        figure("leaked resources", doc.leaks.to_string(), doc.leaks > 0),
        figure("findings", doc.finding_count.to_string(), doc.finding_count > 0),
    ];
    if let Some(chaos) = &doc.chaos {
        figures.extend([
            figure("daemon kills", format!("{} (seed {})", chaos.kills, chaos.seed), false),
            figure("restarts verified", chaos.verified.to_string(), chaos.verified < chaos.kills),
            figure("pods lost", chaos.pods_lost.to_string(), chaos.pods_lost > 0),
            figure("containers wrongly reported", chaos.containers_wrong.to_string(), chaos.containers_wrong > 0),
            figure("duplicate sandboxes", chaos.duplicates.to_string(), chaos.duplicates > 0),
        ]);
        if chaos.rounds > chaos.kills {
            let other = format!(
                "{} helper, {} OCI runtime kills; {} disk-full, {} registry-drop rounds",
                chaos.monitor_kills, chaos.oci_runtime_kills, chaos.disk_full_rounds, chaos.registry_drops
            );
            figures.extend([
                figure("other faults", other, false),
                figure("wrong after them", chaos.fault_findings.to_string(), chaos.fault_findings > 0),
            ]);
        }
    }
    if let (Some(before), Some(after)) = (doc.rss_before_kib, doc.rss_after_kib) {
        figures.push(figure("daemon RSS", format!("{} → {}", mib(before), mib(after)), false));
    }
    if let Some(growth) = doc.rss_growth_kib_per_100_cycles {
        figures.push(figure("RSS growth per 100 cycles", format!("{growth:+.0} KiB"), false));
    }
    Reliability {
        source: source.to_string(),
        kind: kind.to_string(),
        runtime: doc.runtime.clone(),
        passed: doc.passed,
        figures,
        accounting: doc
            .accounting
            .iter()
            .map(|l| Line {
                resource: l.resource.clone(),
                before: l.before,
                after: l.after,
                leaked: l.leaked.len(),
                examples: l.leaked.iter().take(10).cloned().collect(),
            })
            .collect(),
        rss: rss(&doc.rss_by_cycles),
        findings: doc.findings.clone(),
        findings_not_shown: doc.finding_count.saturating_sub(doc.findings.len()),
        unanswered: doc.unanswered.iter().map(|u| format!("{} ({} times): {}", u.rpc, u.times, u.first)).collect(),
    }
}

#[derive(Debug, Serialize)]
pub struct Point {
    pub x: f64,
    pub y: f64,
}

/// None for fewer than two readings.
fn rss(series: &[(usize, u64)]) -> Option<Rss> {
    if series.len() < 2 {
        return None;
    }
    let last_cycle = series.iter().map(|(c, _)| *c).max().unwrap_or(0).max(1);
    let low = series.iter().map(|(_, k)| *k).min().unwrap_or(0);
    let high = series.iter().map(|(_, k)| *k).max().unwrap_or(0);
    let span = (high - low).max(1) as f64;
    let tenth = |v: f64| (v * 10.0).round() / 10.0;
    let points = series
        .iter()
        .map(|(cycle, kib)| {
            let x = RSS_PAD + *cycle as f64 / last_cycle as f64 * (RSS_WIDTH - 2.0 * RSS_PAD);
            let y = RSS_HEIGHT - RSS_PAD - (*kib - low) as f64 / span * (RSS_HEIGHT - 2.0 * RSS_PAD);
            Point { x: tenth(x), y: tenth(y) }
        })
        .collect();
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    Some(Rss { width: RSS_WIDTH, height: RSS_HEIGHT, points, low: mib(low), high: mib(high), last_cycle })
}
