//! The man pages and help as a package ships them: `lockstep-conformance man DIR` and lockstepd's
//! pages (the same generator, from its clap definition) give one page per visible command, each
//! valid roff (groff renders it without a warning, where groff is installed), and the long runs'
//! help carries examples.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_lockstep-conformance");

/// Every visible command of `command`, as its page's name ("tool", "tool-sub").
fn page_names(command: &clap::Command, prefix: &str, names: &mut Vec<String>) {
    names.push(prefix.to_string());
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        page_names(sub, &format!("{prefix}-{}", sub.get_name()), names);
    }
}

/// The page exists, starts as a man page of `section`, and groff (when here) has nothing to say.
fn check_page(dir: &Path, name: &str, section: &str) {
    let path = dir.join(format!("{name}.{section}"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(text.contains(&format!(".TH {name} {section}")), "{}: no .TH line:\n{text}", path.display());
    assert!(text.contains(".SH NAME") && text.contains(".SH SYNOPSIS"), "{}:\n{text}", path.display());
    let groff = Command::new("groff").args(["-man", "-Tutf8", "-ww", "-z"]).arg(&path).output();
    if let Ok(out) = groff {
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && warnings.is_empty(), "groff on {}: {warnings}", path.display());
    }
}

#[test]
fn lockstep_conformance_man_writes_a_valid_page_per_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN).arg("man").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut names = Vec::new();
    page_names(&lockstep_conformance::cli::command(), "lockstep-conformance", &mut names);
    for command in ["run", "bench", "skew", "soak", "chaos", "list", "fixtures"] {
        assert!(names.contains(&format!("lockstep-conformance-{command}")), "{names:?}");
    }
    for name in &names {
        check_page(dir.path(), name, "1");
    }
    let written = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(written, names.len(), "hidden commands (daemon, man) get no page");
    // stdout names each page written, nothing else.
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), names.len());
}

#[test]
fn lockstepd_pages_cover_its_config_command() {
    let dir = tempfile::tempdir().unwrap();
    lockstep_runtime::manpages::write_all(lockstep_runtime::cli::command(), "8", dir.path()).unwrap();
    let mut names = Vec::new();
    page_names(&lockstep_runtime::cli::command(), "lockstepd", &mut names);
    assert_eq!(names, ["lockstepd", "lockstepd-config"]);
    for name in &names {
        check_page(dir.path(), name, "8");
    }
}

#[test]
fn the_long_runs_help_shows_examples() {
    for command in ["run", "bench", "skew", "soak", "chaos"] {
        let out = Command::new(BIN).args([command, "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command} --help: {help}");
        assert!(help.contains("Examples:"), "{command} --help has no examples:\n{help}");
        assert!(help.contains(&format!("lockstep-conformance {command} ")), "{command} --help:\n{help}");
    }
    let out = Command::new(BIN).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Exit status") && help.contains("Examples:"), "{help}");
    assert!(!help.contains("\n  daemon ") && !help.contains("\n  man "), "hidden commands listed:\n{help}");
}
