//! For property tests (test builds only): CRI requests as the wire brings them — a real
//! request's encoding, mutated — decoded in each minor's types and carried to the model through
//! the window, as lockstepd does with what a kubelet sends.

use lockstep_cri::window::transcode;
use proptest::prelude::*;
use prost::Message;

/// `seed`'s bytes with up to 8 bytes replaced, and perhaps cut short or extended.
pub fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len().max(1);
    (
        prop::collection::vec((0..len, any::<u8>()), 0..8),
        prop::option::of(0..len),
        prop::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(move |(edits, cut, tail)| {
            let mut bytes = seed.clone();
            for (at, value) in edits {
                if at < bytes.len() {
                    bytes[at] = value;
                }
            }
            if let Some(cut) = cut {
                bytes.truncate(cut);
            }
            bytes.extend(tail);
            bytes
        })
}

/// `bytes` decoded as minor `From`'s message and carried to the model's `To`; None when the
/// bytes are no such message (the gRPC layer answers those itself).
pub fn via<From: Message + Default, To: Message + Default>(bytes: &[u8]) -> Option<To> {
    transcode(&From::decode(bytes).ok()?).ok()
}

/// `bytes` as message `$msg` of every minor, each carried to the model.
macro_rules! in_every_minor {
    ($bytes:expr, $msg:ident) => {
        [
            $crate::wire_cases::via::<lockstep_cri::v1_30::$msg, lockstep_cri::model::$msg>($bytes),
            $crate::wire_cases::via::<lockstep_cri::v1_31::$msg, lockstep_cri::model::$msg>($bytes),
            $crate::wire_cases::via::<lockstep_cri::v1_32::$msg, lockstep_cri::model::$msg>($bytes),
            $crate::wire_cases::via::<lockstep_cri::v1_33::$msg, lockstep_cri::model::$msg>($bytes),
            $crate::wire_cases::via::<lockstep_cri::v1_34::$msg, lockstep_cri::model::$msg>($bytes),
            $crate::wire_cases::via::<lockstep_cri::v1_35::$msg, lockstep_cri::model::$msg>($bytes),
            $crate::wire_cases::via::<lockstep_cri::v1_36::$msg, lockstep_cri::model::$msg>($bytes),
            $crate::wire_cases::via::<lockstep_cri::model::$msg, lockstep_cri::model::$msg>($bytes),
        ]
    };
}
pub(crate) use in_every_minor;
