//! QUIC endpoints shared by nodes (the tree) and viewers (peer links): one TLS provider (ring),
//! one transport configuration.
//!
//! Nodes with a cluster identity (`--cluster-ca`, `--node-cert`, `--node-key`) speak mutual TLS:
//! each checks the other's certificate against the cluster CA before the cluster token is sent.
//! Without one, certificates are generated at start-up and not checked, and the token sent
//! inside the encrypted channel is all that authenticates a node (fine on one machine or a
//! trusted network; see docs/SECURITY.md). Viewers authenticate what peers send with the
//! origin's signatures (see docs/PROTOCOL.md).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use quinn::Endpoint;

use crate::common::cluster_ca::{ClusterIdentity, SERVER_NAME};

const ALPN: &[u8] = b"relaycast/1";

/// Install the one TLS crypto provider (ring) used by QUIC and HTTPS clients.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_uni_streams(1024u32.into());
    t.keep_alive_interval(Some(Duration::from_secs(1)));
    // Invariant: 10 s fits in a QUIC VarInt of milliseconds.
    t.max_idle_timeout(Some(Duration::from_secs(10).try_into().expect("idle timeout fits")));
    Arc::new(t)
}

/// A QUIC endpoint that accepts children (and can dial a parent).
pub fn server_endpoint(addr: SocketAddr, identity: Option<&ClusterIdentity>) -> Result<Endpoint> {
    let mut tls = match identity {
        Some(id) => id.server_config()?,
        None => {
            let cert =
                rcgen::generate_simple_self_signed(vec![SERVER_NAME.into()]).context("generating certificate")?;
            let cert_der = cert.cert.der().clone();
            let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
            rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(vec![cert_der], key)?
        }
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport_config());
    let mut endpoint = Endpoint::server(config, addr).with_context(|| format!("binding QUIC on udp {addr}"))?;
    endpoint.set_default_client_config(client_config(identity)?);
    Ok(endpoint)
}

/// A client-only endpoint (for relays that do not accept children).
pub fn client_endpoint(identity: Option<&ClusterIdentity>) -> Result<Endpoint> {
    let mut endpoint = Endpoint::client("0.0.0.0:0".parse()?)?;
    endpoint.set_default_client_config(client_config(identity)?);
    Ok(endpoint)
}

fn client_config(identity: Option<&ClusterIdentity>) -> Result<quinn::ClientConfig> {
    let mut tls = match identity {
        Some(id) => id.client_config()?,
        None => rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(TokenAuthenticated))
            .with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport_config());
    Ok(config)
}

/// Accepts any server certificate (nodes without a cluster identity, and viewers' peer links):
/// the channel is encrypted by TLS, and peers are authenticated by the cluster token they
/// exchange in `Hello` (viewers: by the origin's segment signatures).
#[derive(Debug)]
struct TokenAuthenticated;

impl rustls::client::danger::ServerCertVerifier for TokenAuthenticated {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}
