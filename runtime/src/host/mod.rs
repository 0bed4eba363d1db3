//! Facts and primitives of the host below every part of lockstepd: the kernel objects that
//! sandboxes, containers and CNI all look at. Imports nothing above it.

pub mod cgroups;
pub mod idmap;
pub mod mounts;
pub mod namespaces;
