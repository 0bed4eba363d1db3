//! `lockstep-conformance report --html`: one self-contained page (inline CSS, SVG and a small
//! self-check script; no fetches) from JSON results of run, skew, bench, soak and chaos. Reads
//! only the files it is given; the CLI writes the page.

mod grid;
mod input;
mod page;
mod plot;
mod reliability;
mod schema;
mod suites;

pub use input::{check_version, parse, read, Doc, Error as InputError, Input, Kind, HARNESS_VERSION};
pub use page::{render, Error as RenderError};

#[cfg(test)]
mod tests;
