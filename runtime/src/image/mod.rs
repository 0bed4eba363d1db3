//! Images: references, registries configuration, the distribution client, the store of
//! image records and blobs, layer snapshots and their safe unpacking, the signature policy, and
//! the ImageService core.

pub mod error;
pub mod policy;
pub mod pull;
pub mod reference;
pub mod registries_conf;
pub mod registry;
pub mod service;
pub mod snapshot;
pub mod store;
pub mod tarstream;
pub mod unpack;
pub mod user;
