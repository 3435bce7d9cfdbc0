//! Ed25519 segment signatures (F53), with `ring` (already in the tree through rustls).
//!
//! The origin's key lives in a PKCS#8 file (created on first use, mode 0600); the public key is
//! written beside it as `FILE.pub` (64 hex digits) for the tracker to hand to viewers. What is
//! signed is the core's [`signed_message`]: channel, rendition, sequence number and the SHA-256
//! digest of the segment's bytes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use relaycast_core::Name;
use relaycast_core::p2p::signing::{SIGNATURE_LEN, SegmentSigner, SegmentVerifier, Signature, signed_message};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

/// The origin's signing key.
pub struct Ed25519Signer {
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for Ed25519Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ed25519Signer({})", hex(self.key.public_key().as_ref()))
    }
}

impl SegmentSigner for Ed25519Signer {
    fn sign(&self, channel: &Name, rendition: &Name, seq: u64, data: &[u8]) -> Signature {
        let digest = ring::digest::digest(&ring::digest::SHA256, data);
        let sig = self.key.sign(&signed_message(channel, rendition, seq, digest.as_ref()));
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(sig.as_ref());
        out
    }
}

impl Ed25519Signer {
    /// Load the key in `path`, or create it (and `path.pub`) if the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        let pkcs8 = if path.exists() {
            std::fs::read(path).with_context(|| format!("reading signing key {}", path.display()))?
        } else {
            let rng = ring::rand::SystemRandom::new();
            let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| anyhow::anyhow!("generating an Ed25519 key"))?;
            write_private(path, doc.as_ref())?;
            tracing::info!(key = %path.display(), "created a segment signing key");
            doc.as_ref().to_vec()
        };
        let key = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|e| anyhow::anyhow!("{} is not an Ed25519 PKCS#8 key: {e}", path.display()))?;
        let public = public_path(path);
        std::fs::write(&public, format!("{}\n", hex(key.public_key().as_ref())))
            .with_context(|| format!("writing {}", public.display()))?;
        Ok(Self { key })
    }

    pub fn public_hex(&self) -> String {
        hex(self.key.public_key().as_ref())
    }
}

/// `FILE.pub` beside the key `FILE`.
pub fn public_path(key: &Path) -> PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

/// Create `path` readable by its owner only (fails if it exists: keys are never overwritten).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).with_context(|| format!("creating key file {}", path.display()))?;
    f.write_all(bytes).with_context(|| format!("writing key file {}", path.display()))
}

/// Checks segments against the origin's public key.
#[derive(Clone)]
pub struct Ed25519Verifier {
    public: Vec<u8>,
}

impl Ed25519Verifier {
    /// From 64 hex digits (the `.pub` file's content, or the tracker's `origin_key`).
    pub fn from_hex(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("an Ed25519 public key is 64 hex digits, got {:?}", s.chars().take(80).collect::<String>());
        }
        let public = (0..32).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex checked")).collect();
        Ok(Self { public })
    }

    /// From a `.pub` file (or the private key file, whose `.pub` is read instead).
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .or_else(|_| std::fs::read_to_string(public_path(path)))
            .with_context(|| format!("reading public key {}", path.display()))?;
        Self::from_hex(&text).with_context(|| format!("public key {}", path.display()))
    }

    pub fn to_hex(&self) -> String {
        hex(&self.public)
    }
}

impl SegmentVerifier for Ed25519Verifier {
    fn verify(&self, channel: &Name, rendition: &Name, seq: u64, data: &[u8], signature: &Signature) -> bool {
        let digest = ring::digest::digest(&ring::digest::SHA256, data);
        UnparsedPublicKey::new(&ED25519, &self.public)
            .verify(&signed_message(channel, rendition, seq, digest.as_ref()), signature)
            .is_ok()
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `data` in hex (the QoE log records it so outputs can be compared to the origin).
pub fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_key_files() {
        let dir = std::env::temp_dir().join(format!("relaycast-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("origin.key");
        let _ = std::fs::remove_file(&path);
        let signer = Ed25519Signer::load_or_create(&path).unwrap();
        let again = Ed25519Signer::load_or_create(&path).unwrap();
        assert_eq!(signer.public_hex(), again.public_hex(), "an existing key is reused");
        let verifier = Ed25519Verifier::from_file(&public_path(&path)).unwrap();
        let (c, r) = (Name::new("ch").unwrap(), Name::new("src").unwrap());
        let sig = signer.sign(&c, &r, 5, b"bytes");
        assert!(verifier.verify(&c, &r, 5, b"bytes", &sig));
        assert!(!verifier.verify(&c, &r, 5, b"bytez", &sig));
        assert!(!verifier.verify(&c, &r, 6, b"bytes", &sig));
        assert!(Ed25519Verifier::from_hex("nothex").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
