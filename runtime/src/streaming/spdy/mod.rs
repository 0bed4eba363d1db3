//! SPDY/3.1, as much as the Kubernetes streaming protocols use: streams the client opens (each
//! answered with SYN_REPLY), data both ways with flow control, RST_STREAM, PING, SETTINGS,
//! GOAWAY. `frame` is the wire layout, `headers` the compressed header blocks, `session` the
//! connection with its streams (server side, and `open` for clients), `dial` a client's
//! upgrade (the conformance harness and the tests use it).

pub mod dial;
pub mod frame;
pub mod headers;
pub mod session;

pub use headers::Headers;
pub use session::{start, Closed, Incoming, Session, StreamReader, StreamWriter};
