//! Renders the page: the views of grid.rs, suites.rs, plot.rs and reliability.rs handed to the
//! templates under templates/ (compiled into the binary), HTML-escaped, strict about undefined
//! values so that a template's typo fails the tests instead of printing nothing.

use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use super::input::{Input, HARNESS_VERSION};
use super::{grid, plot, reliability, suites};

#[derive(Debug, thiserror::Error)]
#[error("cannot render the HTML report: {0:#}")]
pub struct Error(#[from] minijinja::Error);

const TEMPLATES: &[(&str, &str)] = &[
    ("page.html", include_str!("templates/page.html")),
    ("grid.html", include_str!("templates/grid.html")),
    ("suites.html", include_str!("templates/suites.html")),
    ("bench.html", include_str!("templates/bench.html")),
    ("chart.svg", include_str!("templates/chart.svg")),
    ("reliability.html", include_str!("templates/reliability.html")),
    ("style.css", include_str!("templates/style.css")),
    ("check.js", include_str!("templates/check.js")),
];

#[derive(Serialize)]
struct View {
    harness_version: &'static str,
    sources: Vec<Source>,
    grid: Option<grid::Grid>,
    runs: Vec<suites::Run>,
    charts: Vec<plot::Chart>,
    reliability: Vec<reliability::Reliability>,
}

#[derive(Serialize)]
struct Source {
    name: String,
    kind: String,
}

/// The whole page for these inputs.
pub fn render(inputs: &[Input]) -> Result<String, Error> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // Our own style and script go in as they are; everything else is HTML (SVG included).
    env.set_auto_escape_callback(|name| match name.rsplit('.').next() {
        Some("css" | "js") => AutoEscape::None,
        _ => AutoEscape::Html,
    });
    for (name, source) in TEMPLATES {
        env.add_template(name, source)?;
    }
    let view = View {
        harness_version: HARNESS_VERSION,
        sources: inputs.iter().map(|i| Source { name: i.source.clone(), kind: i.kind.to_string() }).collect(),
        grid: grid::build(inputs),
        runs: suites::build(inputs),
        charts: plot::build(inputs),
        reliability: reliability::build(inputs),
    };
    Ok(env.get_template("page.html")?.render(Serde(&view))?)
}
