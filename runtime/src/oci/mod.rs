//! The OCI runtimes that lockstepd can run containers with, one per runtime handler
//! (RuntimeClass), and which of them work on this host.

mod probe;

pub use probe::{probe_handlers, HandlerSet, ProbedHandler};
