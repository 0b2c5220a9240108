//! API tokens and signatures. Token values are shown once and stored only as SHA-256;
//! pre-signed storage URLs and pagination cursors are signed with HMAC-SHA256 under the
//! server's own key.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A fresh token value: `vm0_live_` and 64 lowercase hex characters.
pub(crate) fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("vm0_live_{}", hex::encode(bytes))
}

/// What the database keeps of a token.
pub(crate) fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The first 12 characters of a token, which identify it without revealing it.
pub(crate) fn token_prefix(token: &str) -> String {
    token.chars().take(12).collect()
}

/// Compares two secrets in constant time.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// A fresh random key for signing.
pub(crate) fn new_key() -> Vec<u8> {
    let mut key = vec![0u8; 32];
    rand::rng().fill_bytes(&mut key);
    key
}

/// HMAC-SHA256 of `message` under `key`, in lowercase hex.
pub(crate) fn sign(key: &[u8], message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `signature` is the signature of `message`, compared in constant time.
pub(crate) fn verify(key: &[u8], message: &str, signature: &str) -> bool {
    same(sign(key, message).as_bytes(), signature.as_bytes())
}
