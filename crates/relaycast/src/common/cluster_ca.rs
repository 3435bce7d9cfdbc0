//! The cluster CA: nodes that can't be impersonated (F7).
//!
//! `relaycast cluster-ca init` makes a CA (its key never leaves the operator's machine);
//! `relaycast cluster-ca issue NAME` makes a node certificate signed by it. A node started with
//! `--cluster-ca`, `--node-cert` and `--node-key` speaks mutual TLS on every QUIC link: it shows
//! its certificate and accepts a neighbour only if the neighbour's chains to the cluster CA —
//! before either side sends the cluster token. `--cluster-ca` may hold several CA certificates,
//! which is how a CA is rotated (see docs/SECURITY.md).
//!
//! The CA's name is derived from its key, so the key file alone is enough to issue with.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::common::signing::{hex, write_private};

/// The name every node certificate carries (what a dialing node checks the server against).
pub const SERVER_NAME: &str = "relaycast";

/// The CA itself: what `init` creates and `issue` signs with.
pub struct ClusterCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

fn ca_params(key: &KeyPair) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let id = ring::digest::digest(&ring::digest::SHA256, &rcgen::PublicKeyData::subject_public_key_info(key));
    params.distinguished_name.push(DnType::CommonName, format!("Relaycast cluster CA {}", &hex(id.as_ref())[..16]));
    Ok(params)
}

impl ClusterCa {
    /// A new CA (kept in memory until [`ClusterCa::save`]).
    pub fn generate() -> Result<Self> {
        let key = KeyPair::generate().context("generating the CA key")?;
        let certified = CertifiedIssuer::self_signed(ca_params(&key)?, key).context("signing the CA certificate")?;
        let cert_pem = certified.pem();
        let key = KeyPair::from_pem(&certified.key().serialize_pem()).context("re-reading the CA key")?;
        Ok(Self { issuer: Issuer::new(ca_params(&key)?, key), cert_pem })
    }

    /// The CA in `dir` (`ca.pem`, `ca.key`).
    pub fn load(dir: &Path) -> Result<Self> {
        let key_path = dir.join("ca.key");
        let key_pem = std::fs::read_to_string(&key_path)
            .with_context(|| format!("reading {} (run `relaycast cluster-ca init` first)", key_path.display()))?;
        let key =
            KeyPair::from_pem(&key_pem).with_context(|| format!("{} is not a private key", key_path.display()))?;
        let cert_pem = std::fs::read_to_string(dir.join("ca.pem"))
            .with_context(|| format!("reading {}", dir.join("ca.pem").display()))?;
        Ok(Self { issuer: Issuer::new(ca_params(&key)?, key), cert_pem })
    }

    /// Write `ca.pem` (public: give it to every node) and `ca.key` (secret, mode 0600).
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        if dir.join("ca.key").exists() {
            bail!("{} already holds a CA; remove it first to replace it", dir.display());
        }
        write_private(&dir.join("ca.key"), self.issuer.key().serialize_pem().as_bytes())?;
        std::fs::write(dir.join("ca.pem"), &self.cert_pem).with_context(|| format!("writing {}", dir.display()))
    }

    /// A certificate for node `name`, valid for `days`, also naming `hosts` (DNS names or IP
    /// addresses) so it can serve HTTPS there (the tracker): (certificate chain PEM, key PEM).
    pub fn issue(&self, name: &str, days: u32, hosts: &[String]) -> Result<(String, String)> {
        let key = KeyPair::generate().context("generating the node key")?;
        let names: Vec<String> = std::iter::once(SERVER_NAME.to_string()).chain(hosts.iter().cloned()).collect();
        let mut params = CertificateParams::new(names).context("a host name or address to certify")?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let now_ms = crate::common::wall_ms();
        let (y, m, d) = ymd(now_ms.saturating_sub(86_400_000));
        params.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = ymd(now_ms + u64::from(days) * 86_400_000);
        params.not_after = rcgen::date_time_ymd(y, m, d);
        let cert = params.signed_by(&key, &self.issuer).with_context(|| format!("signing {name}'s certificate"))?;
        Ok((format!("{}{}", cert.pem(), self.cert_pem), key.serialize_pem()))
    }

    /// The identity of node `name` in memory (what `demo` uses: a throw-away CA, no files).
    pub fn identity(&self, name: &str) -> Result<ClusterIdentity> {
        let (cert, key) = self.issue(name, 30, &[])?;
        ClusterIdentity::from_pem(self.cert_pem.as_bytes(), cert.as_bytes(), key.as_bytes())
    }
}

/// Whether a QUIC connection error is a failed certificate check (a node outside the cluster
/// CA, or one without a certificate), so logs can say so in words.
pub fn is_certificate_refusal(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    ["certificate", "unknownissuer", "unknown ca", "bad certificate", "badsignature", "notvalidforname"]
        .iter()
        .any(|k| e.contains(k))
}

/// The UTC (year, month, day) of Unix milliseconds `ms` (validity is kept to whole days).
fn ymd(ms: u64) -> (i32, u8, u8) {
    let day = relaycast_core::playlist::iso8601_utc(ms);
    let num = |r: std::ops::Range<usize>| day[r].parse::<i32>().unwrap_or(1);
    (num(0..4), num(5..7) as u8, num(8..10) as u8)
}

/// What an HTTPS listener that takes node certificates as credentials (the tracker's
/// `--cluster-ca`) asks of clients: a certificate from the cluster CA if they have one. Viewers
/// show none and are served as before; a certificate from elsewhere fails the handshake.
pub fn optional_client_verifier(ca: &Path) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let pem = std::fs::read(ca).with_context(|| format!("reading the cluster CA {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.context("parsing the cluster CA")?).context("the cluster CA certificate")?;
    }
    if roots.is_empty() {
        bail!("{} holds no certificate", ca.display());
    }
    Ok(rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .allow_unauthenticated()
    .build()?)
}

/// What a node shows and trusts on its QUIC links.
#[derive(Clone)]
pub struct ClusterIdentity {
    roots: Arc<rustls::RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    /// The same in PEM, for the HTTPS client that calls the tracker.
    ca_pem: Vec<u8>,
    identity_pem: Vec<u8>,
}

impl std::fmt::Debug for ClusterIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterIdentity({} certificates)", self.chain.len())
    }
}

impl ClusterIdentity {
    /// From `--cluster-ca`, `--node-cert` and `--node-key`.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self> {
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        Self::from_pem(&read(ca)?, &read(cert)?, &read(key)?)
            .with_context(|| format!("cluster identity from {} and {}", cert.display(), ca.display()))
    }

    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca) {
            roots.add(c.context("parsing the cluster CA")?).context("the cluster CA certificate")?;
        }
        if roots.is_empty() {
            bail!("the cluster CA file holds no certificate");
        }
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert).collect::<Result<_, _>>().context("parsing the node certificate")?;
        let Some(leaf) = chain.first() else { bail!("the node certificate file holds no certificate") };
        let identity_pem = [cert, b"\n", key].concat();
        let key = PrivateKeyDer::from_pem_slice(key).context("parsing the node key")?;
        // Refuse at start what every neighbour would refuse later: a certificate from another CA.
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots.clone()),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()?;
        verifier
            .verify_client_cert(leaf, &chain[1..], rustls::pki_types::UnixTime::now())
            .context("the node certificate is not signed by the cluster CA (or has expired)")?;
        Ok(Self { roots: Arc::new(roots), chain, key: Arc::new(key), ca_pem: ca.to_vec(), identity_pem })
    }

    /// An HTTPS client for the tracker that shows this node's certificate (its credentials on
    /// the control plane) and trusts the cluster CA besides the system's roots, so the tracker
    /// may serve a certificate from either.
    pub fn tracker_client(&self, timeout: std::time::Duration) -> Result<reqwest::Client> {
        let roots = reqwest::Certificate::from_pem_bundle(&self.ca_pem).context("the cluster CA for HTTPS")?;
        let identity = reqwest::Identity::from_pem(&self.identity_pem).context("the node certificate for HTTPS")?;
        reqwest::Client::builder()
            .timeout(timeout)
            .tls_certs_merge(roots)
            .identity(identity)
            .build()
            .context("building the tracker client")
    }

    /// TLS for accepting neighbours: show our certificate, demand one from the cluster CA.
    pub fn server_config(&self) -> Result<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider.clone())
                .build()?;
        Ok(rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?)
    }

    /// TLS for dialing neighbours: check theirs against the cluster CA, show ours.
    pub fn client_config(&self) -> Result<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?)
    }
}
