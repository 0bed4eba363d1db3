//! Runs the tests of one minor's profile: selection by --focus/--skip, needs checked against
//! the runtime, each test in its own task with a deadline (a panic or a hang is a failure,
//! not a crash of the run), --parallel tests at a time, reports in declaration order.

use std::time::Instant;

use futures::StreamExt;
use lockstep_cri::Minor;
use regex::Regex;

use super::{Ctx, Failure, Need, Outcome, Test, TestReport};

/// Which tests a run includes: those whose `area/name` matches focus (if any) and not skip.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub focus: Option<Regex>,
    pub skip: Option<Regex>,
}

impl Selection {
    pub fn includes(&self, test: &Test) -> bool {
        let id = test.id();
        self.focus.as_ref().is_none_or(|f| f.is_match(&id)) && !self.skip.as_ref().is_some_and(|s| s.is_match(&id))
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub selection: Selection,
    pub parallel: usize,
}

/// The tests of `minor`'s profile: those that apply to it (since <= minor), selected.
pub fn profile(tests: &[Test], minor: Minor, selection: &Selection) -> Vec<Test> {
    tests.iter().filter(|t| t.since <= minor && selection.includes(t)).cloned().collect()
}

pub async fn run(tests: &[Test], ctx: &Ctx, options: &RunOptions) -> Vec<TestReport> {
    let selected = profile(tests, ctx.minor, &options.selection);
    let alone = std::sync::Arc::new(tokio::sync::RwLock::new(()));
    futures::stream::iter(selected.into_iter().map(|test| run_one(test, ctx.clone(), alone.clone())))
        .buffered(options.parallel.max(1))
        .collect()
        .await
}

/// Runs one test; one that restarts the runtime runs alone (`alone` held for writing), as
/// the others' calls would fail while the runtime is down.
async fn run_one(test: Test, ctx: Ctx, alone: std::sync::Arc<tokio::sync::RwLock<()>>) -> TestReport {
    let (_shared, _exclusive) = if test.needs.contains(&Need::Restart) {
        (None, Some(alone.write().await))
    } else {
        (Some(alone.read().await), None)
    };
    let started = Instant::now();
    let outcome = match unmet_need(&test, &ctx) {
        Some(reason) => Outcome::Skipped(reason),
        None => {
            let body = tokio::spawn(tokio::time::timeout(test.timeout, (test.body)(ctx)));
            match body.await {
                Ok(Ok(Ok(()))) => Outcome::Passed,
                Ok(Ok(Err(Failure::Fail(reason)))) => Outcome::Failed(reason),
                Ok(Ok(Err(Failure::Skip(reason)))) => Outcome::Skipped(reason),
                Ok(Err(_)) => Outcome::Failed(format!("did not finish within {:?}", test.timeout)),
                Err(e) if e.is_panic() => Outcome::Failed(format!("the test panicked: {}", panic_text(e.into_panic()))),
                Err(e) => Outcome::Failed(format!("the test was cancelled: {e}")),
            }
        }
    };
    TestReport { area: test.area, name: test.name, since: test.since, outcome, duration: started.elapsed() }
}

fn unmet_need(test: &Test, ctx: &Ctx) -> Option<String> {
    test.needs.iter().find_map(|need| match need {
        Need::PinnedMinor if ctx.runtime.pinned_minor.is_none() => Some(format!(
            "{} {} does not say which Kubernetes minor it is pinned to",
            ctx.runtime.name, ctx.runtime.version
        )),
        Need::PinnedMinor => None,
        Need::Rpc(rpc) if !ctx.surface.serves(rpc) => {
            Some(format!("the runtime has no {rpc}; a kubelet of this minor falls back ({})", fallback(rpc)))
        }
        Need::Rpc(_) => None,
        Need::Feature(feature) if !feature.reported_by(&ctx.status) => {
            Some(format!("the runtime does not report {} in Status", feature.name()))
        }
        Need::Feature(_) => None,
        Need::Handler(name) if !ctx.status.runtime_handlers.iter().any(|h| h.name == *name) => {
            Some(format!("the runtime reports no runtime handler {name:?} in Status"))
        }
        Need::Handler(_) => None,
        Need::Restart if !ctx.can_restart() => {
            Some(format!("the harness does not own {}'s process, so it cannot restart it", ctx.endpoint))
        }
        Need::Restart => None,
        Need::ExecInPod if ctx.registry.is_none() => {
            Some("needs a container of the pod to exec in, and no registry holds its image".into())
        }
        Need::ExecInPod => None,
        Need::Registry if ctx.registry.is_none() => {
            Some("no registry: the run started none (and --registry was not given)".into())
        }
        Need::LocalRegistry if ctx.registry.as_ref().is_none_or(|r| r.tampered.is_none()) => {
            Some("needs a registry started by this run (its storage is tampered with); --registry was given".into())
        }
        Need::AuthRegistry if ctx.registry.as_ref().is_none_or(|r| r.auth_host.is_none()) => {
            Some("needs a registry with auth started by this run; --registry was given".into())
        }
        Need::Registry | Need::LocalRegistry | Need::AuthRegistry => None,
    })
}

/// What the kubelet does without an optional RPC (../shared/KUBELET.md).
fn fallback(rpc: &str) -> &'static str {
    match rpc {
        "RuntimeConfig" => "to its own cgroupDriver setting",
        "UpdatePodSandboxResources" => "resizes the containers alone",
        r if r.starts_with("Stream") => "to the unary List RPC",
        _ => "as the CRI allows",
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn test(area: &'static str, name: &'static str, since: Minor) -> Test {
        Test { area, name, since, needs: &[], timeout: Duration::from_secs(1), body: |_| Box::pin(async { Ok(()) }) }
    }

    #[test]
    fn a_profile_holds_the_tests_that_apply_to_its_minor() {
        let tests = [test("a", "old", Minor::V1_30), test("a", "new", Minor::V1_36)];
        let at_1_35: Vec<_> = profile(&tests, Minor::V1_35, &Selection::default()).iter().map(|t| t.name).collect();
        assert_eq!(at_1_35, vec!["old"]);
        assert_eq!(profile(&tests, Minor::V1_36, &Selection::default()).len(), 2);
    }

    #[test]
    fn features_are_read_from_status() {
        use super::super::Feature;
        use lockstep_cri::model;
        let status = model::StatusResponse {
            features: Some(model::RuntimeFeatures { supplemental_groups_policy: true, ..Default::default() }),
            runtime_handlers: vec![model::RuntimeHandler {
                name: String::new(),
                features: Some(model::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: true,
                    user_namespaces: false,
                }),
            }],
            ..Default::default()
        };
        assert!(Feature::SupplementalGroupsPolicy.reported_by(&status));
        assert!(Feature::RecursiveReadOnlyMounts.reported_by(&status));
        assert!(!Feature::UserNamespaces.reported_by(&status));
        assert!(!Feature::UserNamespacesHostNetwork.reported_by(&status));
        assert!(!Feature::SupplementalGroupsPolicy.reported_by(&model::StatusResponse::default()));
    }

    #[test]
    fn focus_and_skip_match_area_and_name() {
        let tests = [test("images", "pull by tag", Minor::V1_30), test("pods", "pull secrets", Minor::V1_30)];
        let selection =
            Selection { focus: Some(Regex::new("pull").unwrap()), skip: Some(Regex::new("^pods/").unwrap()) };
        let picked: Vec<_> = profile(&tests, Minor::V1_36, &selection).iter().map(|t| t.id()).collect();
        assert_eq!(picked, vec!["images/pull by tag"]);
    }
}
