//! lockstep-runtime: lockstepd, a CRI runtime in the spirit of CRI-O, pinned to one Kubernetes
//! minor per build. The library is minor-agnostic (it speaks the model, see lockstep-cri); the
//! `lockstepd` binary picks the minor from its cargo feature.
#![deny(unsafe_code)]

pub mod authority;
pub mod cli;
pub mod cni;
pub mod config;
pub mod container;
pub mod daemon;
pub mod filter;
pub mod fstree;
pub mod helpers;
pub mod host;
pub mod ids;
pub mod image;
pub mod info;
pub mod manpages;
pub mod metrics;
pub mod monitor;
pub mod oci;
pub mod persist;
pub mod pin_patterns;
pub mod sandbox;
pub mod server;
pub mod socket;
pub mod streaming;
pub mod timing;
pub mod undo;
#[cfg(test)]
mod wire_cases;
