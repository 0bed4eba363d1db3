//! Latency percentiles as charts: a chart per benchmark, a group of bars per operation, and in
//! each group a p50 and a p99 bar per runtime, runtime beside runtime on one millisecond axis.
//! Only the geometry is computed here (typed, in pixels); templates/chart.svg draws it.

use serde::Serialize;

use super::input::{Doc, Input};
use super::schema::BenchRuntime;

const PLOT_WIDTH: f64 = 460.0;
const VALUE_WIDTH: f64 = 110.0;
const TOP: f64 = 34.0;
const BAR_HEIGHT: f64 = 11.0;
const BAR_GAP: f64 = 1.0;
const RUNTIME_GAP: f64 = 4.0;
const GROUP_GAP: f64 = 14.0;
const AXIS_HEIGHT: f64 = 24.0;
/// Runtimes get the colours rt0 … rt3 of the page's style, then again from rt0.
const COLOURS: usize = 4;

#[derive(Debug, Serialize)]
pub struct Chart {
    pub title: String,
    pub sources: Vec<String>,
    pub iterations: usize,
    pub concurrency: usize,
    pub width: f64,
    pub height: f64,
    pub plot_x: f64,
    pub plot_width: f64,
    pub plot_top: f64,
    pub plot_bottom: f64,
    pub ticks: Vec<Tick>,
    pub legend: Vec<Legend>,
    pub groups: Vec<Group>,
    pub bar_count: usize,
    pub readings: Vec<Reading>,
    pub errors: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Tick {
    pub x: f64,
    pub label: String,
}

#[derive(Debug, Serialize)]
pub struct Legend {
    pub x: f64,
    pub class: String,
    pub label: String,
}

#[derive(Debug, Serialize)]
pub struct Group {
    pub label: String,
    pub label_y: f64,
    pub bars: Vec<Bar>,
}

#[derive(Debug, Serialize)]
pub struct Bar {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    pub class: String,
    /// The tooltip: runtime, percentile, milliseconds, samples.
    pub title: String,
    pub value: String,
    pub value_x: f64,
    pub value_y: f64,
}

#[derive(Debug, Serialize)]
pub struct Reading {
    pub runtime: String,
    pub name: String,
    pub value: String,
}

/// A benchmark's results from every input, runtime beside runtime.
struct Merged<'a> {
    title: String,
    sources: Vec<String>,
    iterations: usize,
    concurrency: usize,
    runtimes: Vec<&'a BenchRuntime>,
}

/// One chart per benchmark name, the runtimes of every bench result beside each other.
pub fn build(inputs: &[Input]) -> Vec<Chart> {
    let mut benches: Vec<Merged> = Vec::new();
    for input in inputs {
        let Doc::Bench(doc) = &input.doc else { continue };
        for entry in &doc.benches {
            let index = match benches.iter().position(|b| b.title == entry.bench) {
                Some(i) => i,
                None => {
                    benches.push(Merged {
                        title: entry.bench.clone(),
                        sources: vec![],
                        iterations: doc.iterations,
                        concurrency: doc.concurrency,
                        runtimes: vec![],
                    });
                    benches.len() - 1
                }
            };
            let bench = &mut benches[index];
            if !bench.sources.contains(&input.source) {
                bench.sources.push(input.source.clone());
            }
            bench.runtimes.extend(entry.runtimes.iter());
        }
    }
    benches.into_iter().map(chart).collect()
}

fn chart(bench: Merged) -> Chart {
    let Merged { title, sources, iterations, concurrency, runtimes } = bench;
    let runtimes = &runtimes[..];
    // The operations in the order they were first measured.
    let mut ops: Vec<&str> = Vec::new();
    for r in runtimes {
        for op in r.operations.iter().filter(|o| o.ms.is_some()) {
            if !ops.contains(&op.op.as_str()) {
                ops.push(&op.op);
            }
        }
    }
    let longest = ops.iter().map(|o| o.chars().count()).max().unwrap_or(0);
    let plot_x = (16.0 + longest as f64 * 7.0).clamp(110.0, 360.0);
    let max = runtimes
        .iter()
        .flat_map(|r| r.operations.iter().filter_map(|o| o.ms))
        .map(|p| p.p99.max(p.p50))
        .fold(0.0, f64::max);
    let (top, step) = axis(max);
    let scale = |ms: f64| if ms.is_finite() && ms > 0.0 { ms / top * PLOT_WIDTH } else { 0.0 };

    let mut groups = Vec::new();
    let mut y = TOP;
    for op in &ops {
        let mut bars = Vec::new();
        let start = y;
        for (i, r) in runtimes.iter().enumerate() {
            let Some(p) = r.operations.iter().find(|o| o.op == *op).and_then(|o| o.ms) else { continue };
            if !bars.is_empty() {
                y += RUNTIME_GAP;
            }
            for (name, ms) in [("p50", p.p50), ("p99", p.p99)] {
                let width = scale(ms);
                bars.push(Bar {
                    x: plot_x,
                    y,
                    width,
                    height: BAR_HEIGHT,
                    class: format!("bar rt{} {name}", i % COLOURS),
                    title: format!("{}: {op} {name} {} ms ({} samples)", r.runtime, short(ms), p.n),
                    value: format!("{name} {} ms", short(ms)),
                    value_x: plot_x + width + 4.0,
                    value_y: y + BAR_HEIGHT - 2.0,
                });
                y += BAR_HEIGHT + BAR_GAP;
            }
        }
        groups.push(Group { label: op.to_string(), label_y: (start + y) / 2.0 + 4.0, bars });
        y += GROUP_GAP;
    }
    let plot_bottom = y - GROUP_GAP / 2.0;
    let ticks = (0..)
        .map(|k| k as f64 * step)
        .take_while(|v| *v <= top * 1.0001)
        .map(|v| Tick { x: plot_x + scale(v), label: short(v) })
        .collect();
    let legend = runtimes
        .iter()
        .enumerate()
        .filter(|(_, r)| r.operations.iter().any(|o| o.ms.is_some()))
        .scan(plot_x, |x, (i, r)| {
            let item = Legend { x: *x, class: format!("rt{}", i % COLOURS), label: r.runtime.clone() };
            *x += 30.0 + r.runtime.chars().count() as f64 * 7.0;
            Some(item)
        })
        .collect();
    let readings = runtimes
        .iter()
        .flat_map(|r| {
            r.readings.iter().map(|reading| Reading {
                runtime: r.runtime.clone(),
                name: reading.name.clone(),
                value: match &reading.value {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
            })
        })
        .collect();
    let errors =
        runtimes.iter().filter_map(|r| r.error.as_ref().map(|e| format!("{}: not measured: {e}", r.runtime))).collect();
    let bar_count = groups.iter().map(|g: &Group| g.bars.len()).sum();
    Chart {
        title,
        sources,
        iterations,
        concurrency,
        width: plot_x + PLOT_WIDTH + VALUE_WIDTH,
        height: plot_bottom + AXIS_HEIGHT,
        plot_x,
        plot_width: PLOT_WIDTH,
        plot_top: TOP - 6.0,
        plot_bottom,
        ticks,
        legend,
        groups,
        bar_count,
        readings,
        errors,
    }
}

/// The axis end and tick step for values up to `max`: 1, 2, 2.5 or 5 × 10^k, four or five ticks.
fn axis(max: f64) -> (f64, f64) {
    if !(max.is_finite() && max > 0.0) {
        return (1.0, 0.25);
    }
    let magnitude = 10f64.powf((max / 4.0).log10().floor());
    let step =
        [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| s * 4.0 >= max).unwrap_or(10.0 * magnitude);
    ((max / step).ceil() * step, step)
}

/// Three significant figures at most, without trailing zeros: 0.125, 1.5, 12.3, 219.
fn short(ms: f64) -> String {
    let text = match ms.abs() {
        v if v >= 100.0 => format!("{ms:.0}"),
        v if v >= 10.0 => format!("{ms:.1}"),
        v if v >= 1.0 => format!("{ms:.2}"),
        _ => format!("{ms:.3}"),
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::html::input::parse;

    #[test]
    fn two_runtimes_side_by_side_on_one_axis() {
        let doc = r#"{"kind": "bench", "iterations": 20, "concurrency": 1, "benches": [
            {"bench": "pods", "runtimes": [
                {"runtime": "lockstep", "operations": [
                    {"op": "RunPodSandbox", "ms": {"n": 20, "p50": 150, "p99": 220}},
                    {"op": "StopPodSandbox", "ms": {"n": 20, "p50": 10, "p99": 12}}],
                 "readings": [{"name": "RSS", "value": "53.6 MiB"}]},
                {"runtime": "containerd", "operations": [
                    {"op": "RunPodSandbox", "ms": {"n": 20, "p50": 300, "p99": 380}}]}]},
            {"bench": "checkpoint", "runtimes": [{"runtime": "containerd", "error": "no CheckpointContainer"}]}]}"#;
        let charts = build(&[parse("b.json", doc).unwrap()]);
        assert_eq!(charts.len(), 2);
        let pods = &charts[0];
        assert_eq!(pods.groups.len(), 2);
        assert_eq!(pods.bar_count, 6);
        assert_eq!(pods.legend.len(), 2);
        // 380 ms is the longest bar and lies within the axis, which ends at 400.
        assert_eq!(pods.ticks.last().map(|t| t.label.as_str()), Some("400"));
        let widest = pods.groups[0].bars.iter().map(|b| b.width).fold(0.0, f64::max);
        assert!((widest - PLOT_WIDTH * 380.0 / 400.0).abs() < 1e-9);
        assert_eq!(pods.groups[0].bars[2].class, "bar rt1 p50");
        assert_eq!(pods.readings[0].value, "53.6 MiB");
        assert_eq!(charts[1].bar_count, 0);
        assert_eq!(charts[1].errors, ["containerd: not measured: no CheckpointContainer"]);
    }

    #[test]
    fn axes_and_labels() {
        assert_eq!(axis(380.0), (400.0, 100.0));
        assert_eq!(axis(1.8), (2.0, 0.5));
        assert_eq!(axis(0.0), (1.0, 0.25));
        assert_eq!(axis(9.0), (10.0, 2.5));
        assert_eq!(
            (short(219.3), short(1.50), short(0.1254), short(0.0)),
            ("219".into(), "1.5".into(), "0.125".into(), "0".into())
        );
    }
}
