//! Reads one JSON result for the HTML report: parses it, refuses one written by a newer harness,
//! and tells its kind (run, skew, bench, soak, chaos) by its `kind` field or, for files written
//! before there was one, by its content. Touches only the file it is given.

use std::path::Path;

use super::schema::{BenchDoc, RunDoc, SkewDoc, SoakDoc};

/// This harness's version, which every JSON writer records as `harness_version`.
pub const HARNESS_VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not valid JSON: {source}")]
    Parse { path: String, source: serde_json::Error },
    #[error(
        "{path} was written by lockstep-conformance {theirs}, newer than this one ({ours}): \
         read it with lockstep-conformance {theirs} or later"
    )]
    Newer { path: String, theirs: String, ours: String },
    #[error("{path}: harness_version {value} is not a version (MAJOR.MINOR.PATCH)")]
    BadVersion { path: String, value: String },
    #[error("{path}: kind {kind} is not one this harness renders (run, skew, bench, soak, chaos)")]
    UnknownKind { path: String, kind: String },
    #[error("{path} is not a result of run, skew, bench, soak or chaos --json")]
    NotAResult { path: String },
    #[error("{path} does not read as a {kind} result: {source}")]
    Shape { path: String, kind: Kind, source: serde_json::Error },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Run,
    Skew,
    Bench,
    Soak,
    Chaos,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Run => "run",
            Kind::Skew => "skew",
            Kind::Bench => "bench",
            Kind::Soak => "soak",
            Kind::Chaos => "chaos",
        })
    }
}

/// A result as read; soak and chaos share one shape (chaos has its `chaos` figures).
#[derive(Debug, Clone)]
pub enum Doc {
    Run(RunDoc),
    Skew(SkewDoc),
    Bench(BenchDoc),
    Soak(SoakDoc),
}

/// One input file: its name as given, and what it holds.
#[derive(Debug, Clone)]
pub struct Input {
    pub source: String,
    pub kind: Kind,
    pub doc: Doc,
}

/// Reads and parses the file at `path`.
pub fn read(path: &Path) -> Result<Input, Error> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: shown.clone(), source })?;
    parse(&shown, &text)
}

/// Parses `text`, the content of the file named `source`.
pub fn parse(source: &str, text: &str) -> Result<Input, Error> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::Parse { path: source.to_string(), source: e })?;
    check_version(source, &value)?;
    let kind = kind_of(source, &value)?;
    let shape = |e| Error::Shape { path: source.to_string(), kind, source: e };
    let doc = match kind {
        Kind::Run => Doc::Run(serde_json::from_value(value).map_err(shape)?),
        Kind::Skew => Doc::Skew(serde_json::from_value(value).map_err(shape)?),
        Kind::Bench => Doc::Bench(serde_json::from_value(value).map_err(shape)?),
        Kind::Soak | Kind::Chaos => Doc::Soak(serde_json::from_value(value).map_err(shape)?),
    };
    Ok(Input { source: source.to_string(), kind, doc })
}

/// A file without `harness_version` is from before the field: older, accepted. (`fleet` checks
/// each node's report with it too.)
pub fn check_version(source: &str, value: &serde_json::Value) -> Result<(), Error> {
    let Some(field) = value.get("harness_version") else { return Ok(()) };
    let bad = || Error::BadVersion { path: source.to_string(), value: field.to_string() };
    let theirs = field.as_str().ok_or_else(bad)?;
    let theirs_parsed = version(theirs).ok_or_else(bad)?;
    let ours = version(HARNESS_VERSION).ok_or_else(bad)?;
    if theirs_parsed > ours {
        return Err(Error::Newer {
            path: source.to_string(),
            theirs: theirs.to_string(),
            ours: HARNESS_VERSION.into(),
        });
    }
    Ok(())
}

/// MAJOR.MINOR.PATCH, a pre-release or build suffix ignored.
fn version(text: &str) -> Option<(u64, u64, u64)> {
    let core = text.split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    let v = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(v)
}

fn kind_of(source: &str, value: &serde_json::Value) -> Result<Kind, Error> {
    if let Some(kind) = value.get("kind") {
        return match kind.as_str() {
            Some("run") => Ok(Kind::Run),
            Some("skew") => Ok(Kind::Skew),
            Some("bench") => Ok(Kind::Bench),
            Some("soak") => Ok(Kind::Soak),
            Some("chaos") => Ok(Kind::Chaos),
            _ => Err(Error::UnknownKind { path: source.to_string(), kind: kind.to_string() }),
        };
    }
    let has = |field: &str| value.get(field).is_some();
    if has("matrix") {
        Ok(Kind::Skew)
    } else if has("benches") {
        Ok(Kind::Bench)
    } else if has("accounting") {
        Ok(if value.get("chaos").is_some_and(|c| !c.is_null()) { Kind::Chaos } else { Kind::Soak })
    } else if has("tests") && has("kubernetes") {
        Ok(Kind::Run)
    } else {
        Err(Error::NotAResult { path: source.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_field_and_by_content() {
        let cases = [
            (r#"{"kind": "bench", "benches": []}"#, Kind::Bench),
            (r#"{"kubernetes": "1.36", "tests": []}"#, Kind::Run),
            (r#"{"runtime": null, "matrix": []}"#, Kind::Skew),
            (r#"{"iterations": 1, "benches": []}"#, Kind::Bench),
            (r#"{"accounting": [], "chaos": null}"#, Kind::Soak),
            (r#"{"accounting": [], "chaos": {"seed": 1}}"#, Kind::Chaos),
        ];
        for (text, kind) in cases {
            assert_eq!(parse("f.json", text).map(|i| i.kind).unwrap(), kind, "{text}");
        }
    }

    #[test]
    fn a_newer_harness_is_refused_naming_both_versions() {
        let text = r#"{"harness_version": "99.0.0", "kind": "run", "tests": []}"#;
        let message = parse("new.json", text).unwrap_err().to_string();
        assert!(message.contains("new.json") && message.contains("99.0.0"), "{message}");
        assert!(message.contains(&format!("({HARNESS_VERSION})")), "{message}");
        let same = format!(r#"{{"harness_version": "{HARNESS_VERSION}", "kind": "run"}}"#);
        assert!(parse("same.json", &same).is_ok());
        assert!(parse("old.json", r#"{"harness_version": "0.0.1-rc.1", "kind": "run"}"#).is_ok());
    }

    #[test]
    fn bad_input_names_the_file() {
        for (text, says) in [
            ("{not json", "not valid JSON"),
            (r#"{"harness_version": 3, "kind": "run"}"#, "is not a version"),
            (r#"{"kind": "fleet"}"#, "\"fleet\""),
            (r#"{"pods": []}"#, "is not a result"),
            (r#"{"kind": "run", "tests": "many"}"#, "does not read as a run result"),
        ] {
            let message = parse("bad.json", text).unwrap_err().to_string();
            assert!(message.starts_with("bad.json") && message.contains(says), "{message}");
        }
    }

    #[test]
    fn versions() {
        assert_eq!(version("1.2.3"), Some((1, 2, 3)));
        assert_eq!(version("0.10.0-beta.1+abc"), Some((0, 10, 0)));
        assert_eq!(version("1.2"), None);
        assert_eq!(version("1.2.3.4"), None);
    }
}
