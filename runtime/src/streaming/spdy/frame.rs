//! SPDY/3.1 frames as bytes (draft-mbelshe-httpbis-spdy-00 and the 3.1 flow-control additions):
//! the 8-byte head of control and data frames, and the payload of each control frame the
//! session reads or writes. Pure: no I/O and no header compression (that is `headers`).

/// The protocol version every control frame carries.
pub const VERSION: u16 = 3;
/// DATA, SYN_STREAM, SYN_REPLY, HEADERS: the sender's half of the stream ends here.
pub const FLAG_FIN: u8 = 0x01;
/// SYN_STREAM: the receiver may not send on this stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

pub const SYN_STREAM: u16 = 1;
pub const SYN_REPLY: u16 = 2;
pub const RST_STREAM: u16 = 3;
pub const SETTINGS: u16 = 4;
pub const PING: u16 = 6;
pub const GOAWAY: u16 = 7;
pub const HEADERS: u16 = 8;
pub const WINDOW_UPDATE: u16 = 9;

/// SETTINGS id of the initial per-stream window.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
/// The window every stream and the session start with.
pub const DEFAULT_WINDOW: u32 = 64 * 1024;
/// The largest length a frame head can state (24 bits).
pub const MAX_LENGTH: u32 = 0x00ff_ffff;

/// RST_STREAM status codes.
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    pub const STREAM_IN_USE: u32 = 8;
    pub const FRAME_TOO_LARGE: u32 = 11;
}

/// GOAWAY status codes.
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INTERNAL_ERROR: u32 = 2;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("SPDY version {0} (only 3 is spoken)")]
    Version(u16),
    #[error("a {kind} frame of {length} bytes is malformed")]
    Malformed { kind: &'static str, length: usize },
    #[error("stream id 0 in a {0} frame")]
    ZeroStream(&'static str),
}

/// The first 8 bytes of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    Control { kind: u16, flags: u8, length: u32 },
    Data { stream_id: u32, flags: u8, length: u32 },
}

pub fn parse_head(b: [u8; 8]) -> Result<Head, FrameError> {
    let flags = b[4];
    let length = u32::from_be_bytes([0, b[5], b[6], b[7]]);
    if b[0] & 0x80 != 0 {
        let version = u16::from_be_bytes([b[0] & 0x7f, b[1]]);
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        Ok(Head::Control { kind: u16::from_be_bytes([b[2], b[3]]), flags, length })
    } else {
        Ok(Head::Data { stream_id: u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff, flags, length })
    }
}

fn put_head(out: &mut Vec<u8>, first: u32, second_byte_flags: u8, length: usize) {
    debug_assert!(length as u32 <= MAX_LENGTH);
    out.extend_from_slice(&first.to_be_bytes());
    out.push(second_byte_flags);
    out.extend_from_slice(&(length as u32).to_be_bytes()[1..]);
}

/// A DATA frame's head; the payload follows it on the wire.
pub fn data_head(stream_id: u32, flags: u8, length: usize) -> [u8; 8] {
    let mut out = Vec::with_capacity(8);
    put_head(&mut out, stream_id & 0x7fff_ffff, flags, length);
    let mut head = [0u8; 8];
    head.copy_from_slice(&out);
    head
}

/// A control frame as the session reads or writes it. Header blocks are kept compressed:
/// the session's one zlib context per direction must see them in wire order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    SynStream {
        stream_id: u32,
        associated: u32,
        priority: u8,
        flags: u8,
        block: Vec<u8>,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        block: Vec<u8>,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        block: Vec<u8>,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    /// A type this side does not know; SPDY says to ignore it.
    Other {
        kind: u16,
    },
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A control frame's payload (the bytes after its head) read as `kind`.
pub fn parse_control(kind: u16, flags: u8, p: &[u8]) -> Result<Control, FrameError> {
    let malformed = |kind| FrameError::Malformed { kind, length: p.len() };
    let stream = |name, p: &[u8]| -> Result<u32, FrameError> {
        let id = be32(p, 0) & 0x7fff_ffff;
        if id == 0 {
            Err(FrameError::ZeroStream(name))
        } else {
            Ok(id)
        }
    };
    Ok(match kind {
        SYN_STREAM => {
            if p.len() < 10 {
                return Err(malformed("SYN_STREAM"));
            }
            Control::SynStream {
                stream_id: stream("SYN_STREAM", p)?,
                associated: be32(p, 4) & 0x7fff_ffff,
                priority: p[8] >> 5,
                flags,
                block: p[10..].to_vec(),
            }
        }
        SYN_REPLY | HEADERS => {
            if p.len() < 4 {
                return Err(malformed(if kind == SYN_REPLY { "SYN_REPLY" } else { "HEADERS" }));
            }
            let stream_id = stream("SYN_REPLY", p)?;
            let block = p[4..].to_vec();
            if kind == SYN_REPLY {
                Control::SynReply { stream_id, flags, block }
            } else {
                Control::Headers { stream_id, flags, block }
            }
        }
        RST_STREAM => {
            if p.len() != 8 {
                return Err(malformed("RST_STREAM"));
            }
            Control::RstStream { stream_id: stream("RST_STREAM", p)?, status: be32(p, 4) }
        }
        SETTINGS => {
            if p.len() < 4 {
                return Err(malformed("SETTINGS"));
            }
            let count = be32(p, 0) as usize;
            if p.len() != 4 + count.checked_mul(8).ok_or(malformed("SETTINGS"))? {
                return Err(malformed("SETTINGS"));
            }
            let entries = (0..count)
                .map(|i| {
                    let at = 4 + i * 8;
                    (p[at], be32(p, at) & 0x00ff_ffff, be32(p, at + 4))
                })
                .collect();
            Control::Settings { entries }
        }
        PING => {
            if p.len() != 4 {
                return Err(malformed("PING"));
            }
            Control::Ping { id: be32(p, 0) }
        }
        GOAWAY => {
            // SPDY/2 had no status; 3 has it.
            if p.len() != 8 {
                return Err(malformed("GOAWAY"));
            }
            Control::GoAway { last_good: be32(p, 0) & 0x7fff_ffff, status: be32(p, 4) }
        }
        WINDOW_UPDATE => {
            if p.len() != 8 {
                return Err(malformed("WINDOW_UPDATE"));
            }
            Control::WindowUpdate { stream_id: be32(p, 0) & 0x7fff_ffff, delta: be32(p, 4) & 0x7fff_ffff }
        }
        other => Control::Other { kind: other },
    })
}

/// The whole frame (head and payload) for `control`.
pub fn encode_control(control: &Control) -> Vec<u8> {
    let mut payload = Vec::new();
    let (kind, flags) = match control {
        Control::SynStream { stream_id, associated, priority, flags, block } => {
            payload.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            payload.extend_from_slice(&(associated & 0x7fff_ffff).to_be_bytes());
            payload.push((priority & 0x7) << 5);
            payload.push(0);
            payload.extend_from_slice(block);
            (SYN_STREAM, *flags)
        }
        Control::SynReply { stream_id, flags, block } | Control::Headers { stream_id, flags, block } => {
            payload.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            payload.extend_from_slice(block);
            (if matches!(control, Control::SynReply { .. }) { SYN_REPLY } else { HEADERS }, *flags)
        }
        Control::RstStream { stream_id, status } => {
            payload.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            payload.extend_from_slice(&status.to_be_bytes());
            (RST_STREAM, 0)
        }
        Control::Settings { entries } => {
            payload.extend_from_slice(&(entries.len() as u32).to_be_bytes());
            for (flags, id, value) in entries {
                payload.extend_from_slice(&((u32::from(*flags) << 24) | (id & 0x00ff_ffff)).to_be_bytes());
                payload.extend_from_slice(&value.to_be_bytes());
            }
            (SETTINGS, 0)
        }
        Control::Ping { id } => {
            payload.extend_from_slice(&id.to_be_bytes());
            (PING, 0)
        }
        Control::GoAway { last_good, status } => {
            payload.extend_from_slice(&(last_good & 0x7fff_ffff).to_be_bytes());
            payload.extend_from_slice(&status.to_be_bytes());
            (GOAWAY, 0)
        }
        Control::WindowUpdate { stream_id, delta } => {
            payload.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            payload.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
            (WINDOW_UPDATE, 0)
        }
        Control::Other { kind } => (*kind, 0),
    };
    let mut out = Vec::with_capacity(8 + payload.len());
    put_head(&mut out, 0x8000_0000 | (u32::from(VERSION) << 16) | u32::from(kind), flags, payload.len());
    out.extend_from_slice(&payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(control: Control) {
        let bytes = encode_control(&control);
        let head: [u8; 8] = bytes[..8].try_into().unwrap();
        let Head::Control { kind, flags, length } = parse_head(head).unwrap() else { panic!("not a control frame") };
        assert_eq!(length as usize, bytes.len() - 8);
        assert_eq!(parse_control(kind, flags, &bytes[8..]).unwrap(), control);
    }

    #[test]
    fn control_frames_round_trip() {
        round_trip(Control::SynStream { stream_id: 1, associated: 0, priority: 3, flags: FLAG_FIN, block: vec![1, 2] });
        round_trip(Control::SynReply { stream_id: 7, flags: 0, block: vec![9; 20] });
        round_trip(Control::Headers { stream_id: 7, flags: FLAG_FIN, block: vec![] });
        round_trip(Control::RstStream { stream_id: 3, status: rst::CANCEL });
        round_trip(Control::Settings { entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20), (1, 4, 100)] });
        round_trip(Control::Ping { id: 0xdead_beef });
        round_trip(Control::GoAway { last_good: 9, status: goaway::OK });
        round_trip(Control::WindowUpdate { stream_id: 0, delta: 65536 });
    }

    #[test]
    fn heads_match_the_wire_layout() {
        // A PING as Go's framer writes it: 0x8003 0006, flags 0, length 4.
        let ping = encode_control(&Control::Ping { id: 1 });
        assert_eq!(ping, [0x80, 0x03, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1]);
        assert_eq!(data_head(5, FLAG_FIN, 300), [0, 0, 0, 5, 1, 0, 1, 44]);
        assert_eq!(
            parse_head(data_head(5, FLAG_FIN, 300)).unwrap(),
            Head::Data { stream_id: 5, flags: 1, length: 300 }
        );
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        assert_eq!(parse_head([0x80, 0x02, 0, 1, 0, 0, 0, 0]).unwrap_err(), FrameError::Version(2));
        assert!(parse_control(RST_STREAM, 0, &[0, 0, 0, 1]).is_err());
        assert!(parse_control(SYN_STREAM, 0, &[0; 9]).is_err());
        assert_eq!(parse_control(SYN_STREAM, 0, &[0; 10]).unwrap_err(), FrameError::ZeroStream("SYN_STREAM"));
        assert!(parse_control(SETTINGS, 0, &[0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 1]).is_err());
        assert!(parse_control(SETTINGS, 0, &[0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(parse_control(PING, 0, &[]).is_err());
        assert_eq!(parse_control(99, 0, &[1, 2, 3]).unwrap(), Control::Other { kind: 99 });
    }

    mod properties {
        //! Any bytes as a control frame's payload: read or refused, never a panic, and what is
        //! read is written back to the same frame.
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn any_control_payload_is_read_or_refused_and_what_is_read_round_trips(
                kind in prop_oneof![1u16..=9, any::<u16>()],
                flags in any::<u8>(),
                payload in prop::collection::vec(any::<u8>(), 0..64),
            ) {
                if let Ok(control) = parse_control(kind, flags, &payload) {
                    if matches!(control, Control::Other { .. }) {
                        return Ok(());
                    }
                    let wire = encode_control(&control);
                    let head: [u8; 8] = wire[..8].try_into().unwrap();
                    let Head::Control { kind, flags, length } = parse_head(head).unwrap() else {
                        panic!("a control frame was written with a data head");
                    };
                    prop_assert_eq!(length as usize, wire.len() - 8);
                    prop_assert_eq!(parse_control(kind, flags, &wire[8..]).unwrap(), control);
                }
            }

            #[test]
            fn any_frame_head_is_read_or_refused(head in any::<[u8; 8]>()) {
                match parse_head(head) {
                    Ok(Head::Data { stream_id, length, .. }) => {
                        prop_assert!(stream_id <= 0x7fff_ffff && length <= MAX_LENGTH);
                    }
                    Ok(Head::Control { length, .. }) => prop_assert!(length <= MAX_LENGTH),
                    Err(FrameError::Version(v)) => prop_assert_ne!(v, VERSION),
                    Err(e) => prop_assert!(false, "unexpected {e:?}"),
                }
            }
        }
    }
}
