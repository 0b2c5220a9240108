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

/// Seals the values of run secrets at rest, with ChaCha20-Poly1305 under a key that lives
/// in a file (`<data dir>/secrets.key` by default, readable by the server's user only) and
/// never in the database: a copy of the database, its backups and its journal hold no
/// secret in clear. A run's secrets are erased from the database when it ends. Instances
/// sharing a database share the file, as a run may execute on another instance than the
/// one that took its secrets.
pub(crate) struct Sealer {
    cipher: chacha20poly1305::ChaCha20Poly1305,
}

/// What begins a sealed value: the scheme's version, so another can follow.
const SEALED: &str = "sealed:v1:";

impl Sealer {
    /// The sealer whose key is the file `path`: 32 bytes, made on first use.
    pub(crate) fn open(path: &std::path::Path) -> std::io::Result<Sealer> {
        use chacha20poly1305::KeyInit;
        let key = match read_key(path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => make_key(path)?,
            read => read?,
        };
        Ok(Sealer { cipher: chacha20poly1305::ChaCha20Poly1305::new(&key.into()) })
    }

    /// `value`, sealed: a fresh nonce and the ciphertext, in base64.
    pub(crate) fn seal(&self, value: &str) -> String {
        use base64::Engine as _;
        use chacha20poly1305::aead::Aead;
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(&nonce.into(), value.as_bytes())
            .expect("ChaCha20-Poly1305 seals any length we store");
        format!(
            "{SEALED}{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode([&nonce[..], &sealed].concat())
        )
    }

    /// The value that `sealed` holds; `None` when another key sealed it, or nobody did.
    pub(crate) fn unseal(&self, sealed: &str) -> Option<String> {
        use base64::Engine as _;
        use chacha20poly1305::aead::Aead;
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(sealed.strip_prefix(SEALED)?)
            .ok()?;
        let (nonce, ciphertext) = bytes.split_at_checked(12)?;
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        String::from_utf8(self.cipher.decrypt(&nonce.into(), ciphertext).ok()?).ok()
    }
}

/// The key in the file `path`, which must be 32 bytes.
fn read_key(path: &std::path::Path) -> std::io::Result<[u8; 32]> {
    use std::io::Read;
    let mut key = [0u8; 32];
    let mut file = std::fs::File::open(path)?;
    file.read_exact(&mut key)?;
    if file.read(&mut [0])? != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a secrets key is 32 bytes, and this file is longer",
        ));
    }
    Ok(key)
}

/// A new key at `path`, or the one another server starting at the same moment made
/// there. The key is written whole under another name, then linked to `path`, so a
/// server never reads a key file that is still being written (which a file created at
/// `path` and then written would let it do).
fn make_key(path: &std::path::Path) -> std::io::Result<[u8; 32]> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let draft = path.with_file_name(format!(".{name}.{:016x}", rand::rng().next_u64()));
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&draft)?;
    let written = file.write_all(&key).and_then(|()| file.sync_all());
    let linked = written.and_then(|()| std::fs::hard_link(&draft, path));
    std::fs::remove_file(&draft).ok();
    match linked {
        Ok(()) => Ok(key),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => read_key(path),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::Sealer;

    /// Servers that start at the same moment over one data directory end with one key:
    /// none reads the file while another is still writing it.
    #[test]
    fn servers_starting_together_share_one_key() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let key = dir.path().join("secrets.key");
            let sealers: Vec<Sealer> = std::thread::scope(|scope| {
                let opening: Vec<_> =
                    (0..8).map(|_| scope.spawn(|| Sealer::open(&key).unwrap())).collect();
                opening.into_iter().map(|thread| thread.join().unwrap()).collect()
            });
            let sealed = sealers[0].seal("one key");
            assert!(sealers.iter().all(|s| s.unseal(&sealed).as_deref() == Some("one key")));
            let files = std::fs::read_dir(dir.path()).unwrap().count();
            assert_eq!(files, 1, "no draft is left behind");
        }
    }

    #[test]
    fn a_sealed_value_opens_only_under_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("secrets.key");
        let sealer = Sealer::open(&key).unwrap();
        let sealed = sealer.seal("sk-live-123");
        assert!(
            !sealed.contains("sk-live-123") && sealed != sealer.seal("sk-live-123"),
            "a fresh nonce each time"
        );
        assert_eq!(
            Sealer::open(&key).unwrap().unseal(&sealed).as_deref(),
            Some("sk-live-123"),
            "the key is kept"
        );
        assert_eq!(Sealer::open(&dir.path().join("other.key")).unwrap().unseal(&sealed), None);
        assert_eq!(sealer.unseal("sk-live-123"), None, "a value never sealed");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&key).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&key, [7u8; 33]).unwrap();
        assert!(Sealer::open(&key).is_err(), "a key file of another length is refused");
    }
}
