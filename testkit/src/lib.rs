//! What the tests of Lockstep share, and what the conformance harness runs on: the fixture
//! images and their registry, one lockstepd process harness (with the sweep that releases what
//! a killed daemon left), the leak checker, CRI requests shaped as the kubelet sends them, the
//! test CNI network, probes of the host, and cosign-format image signing.
#![deny(unsafe_code)]

pub mod certs;
pub mod cni;
pub mod fixtures;
pub mod host;
pub mod leaks;
pub mod lockstepd;
pub mod requests;
pub mod signing;
mod sweep;

pub use lockstepd::{Launch, Lockstepd, Program};
