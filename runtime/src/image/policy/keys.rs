//! Public keys of a signature policy: PEM `PUBLIC KEY` blocks (SubjectPublicKeyInfo, as cosign
//! writes them) read into something that verifies a signature. ECDSA P-256 (cosign's default,
//! ASN.1 signatures over SHA-256), Ed25519 and RSA PKCS#1 v1.5 with SHA-256; other algorithms
//! are refused by name. Pure: the caller reads the files.

use base64::Engine as _;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};

/// A key a signature can be verified with.
#[derive(Debug, Clone)]
pub struct PublicKey {
    algorithm: &'static dyn VerificationAlgorithm,
    /// What ring wants: the EC point, the Ed25519 key or the PKCS#1 RSA key.
    key: Vec<u8>,
    /// For messages: `ECDSA P-256`, `Ed25519`, `RSA`.
    pub kind: &'static str,
}

impl PublicKey {
    /// Whether `signature` is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(self.algorithm, &self.key).verify(message, signature).is_ok()
    }
}

const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// Every `PUBLIC KEY` block of a PEM text (a key file may hold several; all are trusted).
pub fn parse_pem(text: &[u8]) -> Result<Vec<PublicKey>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "the key is not PEM text".to_string())?;
    let mut keys = Vec::new();
    let mut rest = text;
    while let Some(begin) = rest.find("-----BEGIN ") {
        let after = &rest[begin + "-----BEGIN ".len()..];
        let label_end = after.find("-----").ok_or("a PEM header is not closed")?;
        let label = &after[..label_end];
        let body_start = &after[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let body_end = body_start.find(&end_marker).ok_or_else(|| format!("the PEM block {label:?} has no end"))?;
        let body: String = body_start[..body_end].chars().filter(|c| !c.is_whitespace()).collect();
        rest = &body_start[body_end + end_marker.len()..];
        if label != "PUBLIC KEY" {
            return Err(format!("a {label:?} PEM block where a \"PUBLIC KEY\" was expected"));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| format!("the PUBLIC KEY block is not base64: {e}"))?;
        keys.push(from_spki(&der)?);
    }
    if keys.is_empty() {
        return Err("no PEM \"PUBLIC KEY\" block".into());
    }
    Ok(keys)
}

/// A DER SubjectPublicKeyInfo.
pub fn from_spki(der: &[u8]) -> Result<PublicKey, String> {
    let bad = |what: &str| format!("the public key is not a SubjectPublicKeyInfo: {what}");
    let (spki, rest) = der::element(der, der::SEQUENCE).map_err(|e| bad(&e))?;
    if !rest.is_empty() {
        return Err(bad("bytes after it"));
    }
    let (algorithm, after_algorithm) = der::element(spki, der::SEQUENCE).map_err(|e| bad(&e))?;
    let (bits, _) = der::element(after_algorithm, der::BIT_STRING).map_err(|e| bad(&e))?;
    let key = match bits.split_first() {
        Some((0, key)) => key.to_vec(),
        _ => return Err(bad("the key's bit string has unused bits")),
    };
    let (oid, parameters) = der::element(algorithm, der::OID).map_err(|e| bad(&e))?;
    if oid == OID_EC_PUBLIC_KEY {
        let (curve, _) = der::element(parameters, der::OID).map_err(|e| bad(&e))?;
        if curve != OID_P256 {
            return Err("an ECDSA key on a curve other than P-256 (prime256v1) is not supported".into());
        }
        Ok(PublicKey { algorithm: &signature::ECDSA_P256_SHA256_ASN1, key, kind: "ECDSA P-256" })
    } else if oid == OID_ED25519 {
        Ok(PublicKey { algorithm: &signature::ED25519, key, kind: "Ed25519" })
    } else if oid == OID_RSA {
        Ok(PublicKey { algorithm: &signature::RSA_PKCS1_2048_8192_SHA256, key, kind: "RSA" })
    } else {
        Err("the key's algorithm is not supported (ECDSA P-256, Ed25519 and RSA are)".into())
    }
}

/// Just enough DER to take a SubjectPublicKeyInfo apart.
mod der {
    pub const SEQUENCE: u8 = 0x30;
    pub const BIT_STRING: u8 = 0x03;
    pub const OID: u8 = 0x06;

    /// The content of the element at the start of `input`, which must have tag `tag`, and what
    /// follows it.
    pub fn element(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), String> {
        let (&found, rest) = input.split_first().ok_or("it ends early")?;
        if found != tag {
            return Err(format!("tag {found:#04x} where {tag:#04x} was expected"));
        }
        let (&first, rest) = rest.split_first().ok_or("it ends early")?;
        let (len, rest) = if first < 0x80 {
            (first as usize, rest)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || rest.len() < n {
                return Err("a bad length".into());
            }
            (rest[..n].iter().fold(0usize, |len, &b| (len << 8) | b as usize), &rest[n..])
        };
        if rest.len() < len {
            return Err("it ends early".into());
        }
        Ok(rest.split_at(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_ASN1_SIGNING};

    /// The SubjectPublicKeyInfo prefix of an uncompressed P-256 point (RFC 5480).
    const P256_SPKI_PREFIX: &[u8] = &[
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
        0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    const ED25519_SPKI_PREFIX: &[u8] = &[0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

    fn pem(der: &[u8]) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"))
    }

    #[test]
    fn an_ecdsa_p256_key_verifies_its_signatures_and_no_others() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let keys = parse_pem(pem(&[P256_SPKI_PREFIX, pair.public_key().as_ref()].concat()).as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kind, "ECDSA P-256");
        let signature = pair.sign(&rng, b"payload").unwrap();
        assert!(keys[0].verifies(b"payload", signature.as_ref()));
        assert!(!keys[0].verifies(b"payload!", signature.as_ref()), "another message");
        assert!(!keys[0].verifies(b"payload", b"not a signature"), "garbage is no signature");
    }

    #[test]
    fn an_ed25519_key_verifies_its_signatures() {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let keys = parse_pem(pem(&[ED25519_SPKI_PREFIX, pair.public_key().as_ref()].concat()).as_bytes()).unwrap();
        assert_eq!(keys[0].kind, "Ed25519");
        assert!(keys[0].verifies(b"m", pair.sign(b"m").as_ref()));
    }

    #[test]
    fn what_is_not_a_public_key_is_refused_with_the_reason() {
        assert!(parse_pem(b"no pem here").unwrap_err().contains("no PEM"));
        let private = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(parse_pem(private.as_bytes()).unwrap_err().contains("PRIVATE KEY"));
        let cut = pem(&P256_SPKI_PREFIX[..10]);
        assert!(parse_pem(cut.as_bytes()).unwrap_err().contains("SubjectPublicKeyInfo"));
        let unclosed = "-----BEGIN PUBLIC KEY-----\nAAAA\n";
        assert!(parse_pem(unclosed.as_bytes()).unwrap_err().contains("no end"));
        // A P-384 key: the curve is named.
        let p384 = [
            &[
                0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81,
                0x04,
            ][..],
            &[0x00, 0x22, 0x03, 0x62, 0x00],
            &[4u8; 97],
        ]
        .concat();
        assert!(parse_pem(pem(&p384).as_bytes()).unwrap_err().contains("P-256"));
    }
}
