//! CNI: the network configuration lockstepd wires pods with, found by the CNI spec's rules.

pub mod config;
