//! CNI: the network configuration lockstepd wires pods with, found by the CNI spec's rules,
//! the plugins run by the spec, and the attachments cached for DEL.

pub mod config;
pub mod exec;
pub mod network;
