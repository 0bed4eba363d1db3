//! Finds each configured OCI runtime and checks that it runs on this host; the default
//! handler is the configured default, or else the first one that works.
//! Runs the runtime binaries with `--version` only.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::config::RuntimeSection;

/// One configured handler and what the probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbedHandler {
    pub name: String,
    /// The binary, resolved through PATH.
    pub path: Option<PathBuf>,
    /// The first line of `--version`, when it ran.
    pub version: Option<String>,
    /// Why the handler cannot be used; None when it works.
    pub problem: Option<String>,
}

impl ProbedHandler {
    pub fn works(&self) -> bool {
        self.problem.is_none()
    }
}

/// Every configured handler, probed, and the one used when a pod names none.
#[derive(Debug, Clone)]
pub struct HandlerSet {
    pub handlers: Vec<ProbedHandler>,
    default: Option<usize>,
}

impl HandlerSet {
    /// The handler for pods that name none, if any handler works.
    pub fn default_handler(&self) -> Option<&ProbedHandler> {
        self.default.map(|i| &self.handlers[i])
    }

    /// The handlers that work, in configured order.
    pub fn working(&self) -> impl Iterator<Item = &ProbedHandler> {
        self.handlers.iter().filter(|h| h.works())
    }

    /// A handler by the name a RuntimeClass uses; "" means the default.
    pub fn get(&self, name: &str) -> Option<&ProbedHandler> {
        if name.is_empty() {
            return self.default_handler();
        }
        self.handlers.iter().find(|h| h.name == name)
    }
}

/// Probes every configured handler.
pub fn probe_handlers(section: &RuntimeSection) -> HandlerSet {
    let handlers: Vec<ProbedHandler> = section.handlers.iter().map(|h| probe_one(&h.name, &h.path)).collect();
    let default = if section.default_handler.is_empty() {
        handlers.iter().position(ProbedHandler::works)
    } else {
        handlers.iter().position(|h| h.name == section.default_handler && h.works())
    };
    HandlerSet { handlers, default }
}

fn probe_one(name: &str, binary: &Path) -> ProbedHandler {
    let mut probed = ProbedHandler { name: name.to_string(), path: None, version: None, problem: None };
    let Some(path) = resolve(binary) else {
        probed.problem = Some(format!("{} not found (PATH and absolute path checked)", binary.display()));
        return probed;
    };
    match Command::new(&path).arg("--version").output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            probed.version = text.lines().next().map(str::to_string);
        }
        Ok(out) => {
            probed.problem = Some(format!(
                "{} --version failed ({}): {}",
                path.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
        Err(e) => probed.problem = Some(format!("cannot run {}: {e}", path.display())),
    }
    probed.path = Some(path);
    probed
}

/// An absolute path as is (if it exists); a bare name through PATH.
pub fn resolve(binary: &Path) -> Option<PathBuf> {
    if binary.is_absolute() || binary.components().count() > 1 {
        return binary.is_file().then(|| binary.to_path_buf());
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).map(|dir| dir.join(binary)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Handler;

    fn section(handlers: &[(&str, &str)], default: &str) -> RuntimeSection {
        RuntimeSection {
            default_handler: default.into(),
            handlers: handlers.iter().map(|(n, p)| Handler { name: n.to_string(), path: p.into() }).collect(),
        }
    }

    #[test]
    fn the_default_is_the_first_handler_that_works() {
        // `true` exists on every machine and accepts --version; the other does not exist.
        let set = probe_handlers(&section(&[("ghost", "/nonexistent/ghost-runtime"), ("truth", "true")], ""));
        assert!(!set.handlers[0].works());
        assert!(set.handlers[0].problem.as_ref().unwrap().contains("not found"));
        assert_eq!(set.default_handler().unwrap().name, "truth");
        assert_eq!(set.get("").unwrap().name, "truth");
        assert_eq!(set.working().count(), 1);
    }

    #[test]
    fn a_configured_default_that_does_not_work_leaves_no_default() {
        let set = probe_handlers(&section(&[("ghost", "/nonexistent/ghost-runtime"), ("truth", "true")], "ghost"));
        assert!(set.default_handler().is_none());
    }

    #[test]
    fn a_binary_that_fails_its_version_check_does_not_work() {
        let set = probe_handlers(&section(&[("liar", "false")], ""));
        assert!(set.handlers[0].problem.as_ref().unwrap().contains("--version failed"));
        assert!(set.default_handler().is_none());
    }
}
