//! GPG "simple signing" (containers-signature(5)), what `signedBy` requires: a signature is an
//! OpenPGP signed message (usually compressed, as `gpg --sign` makes it) whose content is a
//! JSON payload of type `atomic container signature`. Keys are OpenPGP keyrings, binary (`gpg
//! --export`) or armored. Verification by rPGP (the `pgp` crate). Pure: no I/O.

use std::io::Read as _;

use pgp::composed::{Deserializable as _, Message, SignedPublicKey};

use super::sigstore::{self, Payload};

/// The payload's `critical.type` for simple signing.
pub const PAYLOAD_TYPE: &str = "atomic container signature";
/// A signed message larger than this is refused unread; a payload is a few hundred bytes.
pub const MAX_SIGNATURE_BYTES: usize = 64 << 10;

/// Every key of a keyring: its primary key and subkeys may sign.
pub fn parse_keyring(bytes: &[u8]) -> Result<Vec<SignedPublicKey>, String> {
    let armored = bytes.first().is_some_and(|b| b & 0x80 == 0);
    let keys: Vec<SignedPublicKey> = if armored {
        let (keys, _) = SignedPublicKey::from_armor_many(bytes).map_err(|e| format!("not an OpenPGP keyring: {e}"))?;
        keys.collect::<Result<_, _>>().map_err(|e| format!("not an OpenPGP keyring: {e}"))?
    } else {
        SignedPublicKey::from_bytes_many(bytes)
            .map_err(|e| format!("not an OpenPGP keyring: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("not an OpenPGP keyring: {e}"))?
    };
    if keys.is_empty() {
        return Err("the keyring holds no public key".into());
    }
    Ok(keys)
}

/// The payload of `signature` when one of `keys` (or a subkey of one) made it.
pub fn verify(keys: &[SignedPublicKey], signature: &[u8]) -> Result<Payload, String> {
    if signature.len() > MAX_SIGNATURE_BYTES {
        return Err(format!("a signature of {} bytes, more than {MAX_SIGNATURE_BYTES}", signature.len()));
    }
    let unreadable = |e: &dyn std::fmt::Display| format!("not an OpenPGP signed message: {e}");
    let message = Message::from_bytes(signature).map_err(|e| unreadable(&e))?;
    let mut message = message.decompress().map_err(|e| unreadable(&e))?;
    if !message.is_signed() {
        return Err("an OpenPGP message without a signature".into());
    }
    let mut content = Vec::new();
    (&mut message).take(MAX_SIGNATURE_BYTES as u64 + 1).read_to_end(&mut content).map_err(|e| unreadable(&e))?;
    if content.len() > MAX_SIGNATURE_BYTES {
        return Err("the signed content is larger than a payload can be".into());
    }
    let signed_by_a_key = keys.iter().any(|key| {
        message.verify(key).is_ok() || key.public_subkeys.iter().any(|subkey| message.verify(subkey).is_ok())
    });
    if !signed_by_a_key {
        return Err("not made by a key of the policy's keyring".into());
    }
    sigstore::parse_payload_of(&content, PAYLOAD_TYPE)
}
