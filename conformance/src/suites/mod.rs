//! The conformance suites, one module per area.

mod images;
mod networking;
pub(crate) mod podkit;
mod pods;
mod runtime_info;

use crate::framework::Test;

/// Every test, in the order the reports list them.
pub fn all() -> Vec<Test> {
    let mut tests = Vec::new();
    tests.extend(runtime_info::tests());
    tests.extend(pods::tests());
    tests.extend(networking::tests());
    tests.extend(images::tests());
    tests
}
