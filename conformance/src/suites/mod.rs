//! The conformance suites, one module per area.

mod checkpoint;
pub(crate) mod conkit;
mod container_logs;
mod container_resources;
mod container_stop;
mod containers;
mod events;
mod exec;
mod images;
mod mounts;
mod multi_container;
mod networking;
mod pod_metrics;
mod pod_stats;
pub(crate) mod podkit;
mod pods;
mod runtime_info;
mod security;
pub(crate) mod spdy;
mod streaming;
mod user_namespaces;
pub(crate) mod websocket;

use crate::framework::Test;

/// Every test, in the order the reports list them.
pub fn all() -> Vec<Test> {
    let mut tests = Vec::new();
    tests.extend(runtime_info::tests());
    tests.extend(pods::tests());
    tests.extend(networking::tests());
    tests.extend(images::tests());
    tests.extend(containers::tests());
    tests.extend(container_logs::tests());
    tests.extend(exec::tests());
    tests.extend(streaming::tests());
    tests.extend(container_stop::tests());
    tests.extend(events::tests());
    tests.extend(container_resources::tests());
    tests.extend(pod_stats::tests());
    tests.extend(pod_metrics::tests());
    tests.extend(security::tests());
    tests.extend(mounts::tests());
    tests.extend(multi_container::tests());
    tests.extend(user_namespaces::tests());
    tests.extend(checkpoint::tests());
    tests
}
