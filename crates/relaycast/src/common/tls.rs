//! TLS for every HTTP listener (`--tls-cert` / `--tls-key`): rustls with the ring provider,
//! ALPN h2 and http/1.1, and the certificate reloaded from disk without a restart — when either
//! file changes (checked every two seconds) or on SIGHUP. A file that fails to load is logged
//! and the previous certificate stays in service, so a half-written renewal never takes an edge
//! down.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// How often the certificate files are checked for a change.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// The TLS flags of every role that serves HTTP.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Serve HTTPS (HTTP/2 and HTTP/1.1) with this PEM certificate chain, given with --tls-key.
    /// A renewed certificate is picked up without a restart: when the file changes, or on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// With TLS: also listen for plain HTTP on this address and redirect every request to HTTPS.
    #[arg(long, value_name = "HOST:PORT")]
    pub redirect_http: Option<SocketAddr>,
}

impl TlsArgs {
    /// Start TLS for a listener on `https_port` as the flags ask: the acceptor to serve with
    /// (none without --tls-cert), and the plain-HTTP redirect if asked for. `clients` checks
    /// the certificates clients show, for a listener that takes them as credentials.
    pub async fn start(&self, https_port: u16, clients: Option<ClientVerifier>) -> Result<Option<TlsAcceptor>> {
        let files = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => TlsFiles { cert: cert.clone(), key: key.clone() },
            (None, None) if self.redirect_http.is_some() => bail!("--redirect-http needs --tls-cert and --tls-key"),
            (None, None) => return Ok(None),
            _ => bail!("--tls-cert and --tls-key go together (a PEM certificate chain and its private key)"),
        };
        let acceptor = acceptor(files, clients)?;
        if let Some(addr) = self.redirect_http {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the HTTP redirect on tcp {addr}"))?;
            tracing::info!(%addr, https_port, "redirecting plain HTTP to HTTPS");
            tokio::spawn(crate::common::http::redirect_to_https(listener, https_port));
        }
        Ok(Some(acceptor))
    }
}

/// Where a listener's certificate chain and private key live (PEM).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    fn load(&self) -> Result<CertifiedKey> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .with_context(|| format!("reading certificate {}", self.cert.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing certificate {}", self.cert.display()))?;
        if certs.is_empty() {
            bail!("{} holds no PEM certificate", self.cert.display());
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .with_context(|| format!("reading private key {} (PEM: PKCS#8, PKCS#1 or SEC1)", self.key.display()))?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key)
            .with_context(|| format!("{} is not a usable private key", self.key.display()))?;
        let certified = CertifiedKey::new(certs, signer);
        certified.keys_match().with_context(|| {
            format!("the key {} does not belong to the certificate {}", self.key.display(), self.cert.display())
        })?;
        Ok(certified)
    }

    fn modified(&self) -> Option<(SystemTime, SystemTime)> {
        let at = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        Some((at(&self.cert)?, at(&self.key)?))
    }
}

/// The certificate in service, swapped in place when the files change.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().expect("certificate lock").clone())
    }
}

/// How a listener checks the certificates its clients show.
pub type ClientVerifier = Arc<dyn rustls::server::danger::ClientCertVerifier>;

/// A TLS acceptor for `files`, and a task that keeps its certificate fresh. Fails at start if
/// the files cannot be loaded (a typo should stop the node, not serve without TLS).
pub fn acceptor(files: TlsFiles, clients: Option<ClientVerifier>) -> Result<TlsAcceptor> {
    let current = Arc::new(Current(RwLock::new(Arc::new(files.load()?))));
    let builder = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(current.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio::spawn(keep_fresh(files, current));
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn keep_fresh(files: TlsFiles, current: Arc<Current>) {
    let mut seen = files.modified();
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        let signalled = tokio::select! {
            _ = tokio::time::sleep(WATCH_EVERY) => false,
            Some(()) = async { hangup.as_mut()?.recv().await } => true,
        };
        let now = files.modified();
        if !signalled && now == seen {
            continue;
        }
        seen = now;
        match files.load() {
            Ok(fresh) => {
                *current.0.write().expect("certificate lock") = Arc::new(fresh);
                tracing::info!(cert = %files.cert.display(), signalled, "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "TLS certificate not reloaded; the previous one stays in service")
            }
        }
    }
}
