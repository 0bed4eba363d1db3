//! lockstep-conformance: drives the CRI calls that the kubelet and critest make, per Kubernetes
//! minor, against any CRI endpoint (lockstepd, containerd, CRI-O), and reports for people and CI.
#![deny(unsafe_code)]

pub mod bench;
pub mod cli;
pub mod critest;
pub mod expected;
pub mod fleet;
pub mod framework;
pub mod html;
pub mod kubelet;
pub mod progress;
pub mod report;
pub mod skew;
pub mod soak;
pub mod suites;
pub mod surface;
pub mod target;
