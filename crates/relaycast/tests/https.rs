//! HTTPS on every HTTP listener (F7): an origin and a tracker with `--tls-cert`/`--tls-key`
//! serve playlists, segments, the API, metrics and push ingest over TLS, negotiate HTTP/2 by
//! ALPN (curl and Chromium both say h2), pick up a replaced certificate without a restart, and
//! redirect plain HTTP. hls.js in headless Chromium plays, trusting only the test CA.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, PublicKeyData};
use support::{Node, TempDir, wait_until};

const TOKEN: &str = "https-token";

/// A throw-away certificate authority.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// Where its certificate is written (PEM), for curl's --cacert.
    pem: String,
}

impl TestCa {
    fn new(dir: &TempDir, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("Relaycast test CA {name}"));
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let pem = dir.join(&format!("{name}-ca.pem")).to_str().unwrap().to_string();
        std::fs::write(&pem, issuer.pem()).unwrap();
        Self { issuer, pem }
    }

    /// Issue a certificate for 127.0.0.1 and write it (with the CA, as a full chain) and its key
    /// to `cert` and `key`, each replaced atomically the way certificate tools do.
    fn issue_to(&self, cert: &Path, key: &Path) {
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &self.issuer)
            .unwrap();
        for (path, text) in [(key, leaf_key.serialize_pem()), (cert, format!("{}{}", leaf.pem(), self.issuer.pem()))] {
            let tmp = path.with_extension("new");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
    }

    /// SHA-256 of the CA's public key, base64: what Chromium is told to trust.
    fn spki_sha256(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.issuer.key().subject_public_key_info());
        base64(digest.as_ref())
    }
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() { ABC[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

#[test]
fn origin_and_tracker_serve_https_with_h2_reload_certificates_and_play_in_a_browser() {
    support::require_ffmpeg();
    let dir = TempDir::new("https");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ca = TestCa::new(&dir, "one");
    ca.issue_to(&cert, &key);
    let redirect_port = support::free_tcp_port().to_string();
    let redirect = format!("127.0.0.1:{redirect_port}");
    let tls = ["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    let mut origin_args = vec!["--sample-ll", "--push", "cam=secret", "--redirect-http", &redirect];
    origin_args.extend_from_slice(&tls);
    let origin = Node::origin("origin", TOKEN, &origin_args);
    let base = format!("https://{}", origin.http);
    assert!(origin.stdout.iter().any(|l| l.contains(&format!("listening: {base}/"))), "{:?}", origin.stdout);

    // Playlists, the API and metrics over HTTP/2; plain HTTP on the TLS port is not served.
    let (version, status, body) = wait_until(support::MEDIA_WAIT, "the LL playlist over HTTPS", || {
        support::curl(&format!("{base}/live/demo-ll/index.m3u8"), &ca.pem, &[]).filter(|(_, s, _)| *s == 200)
    });
    assert_eq!(version, "2", "h2 negotiated by ALPN: {status} {body}");
    for path in ["/api/v1/channels", "/metrics"] {
        let (v, s, _) = support::curl(&format!("{base}{path}"), &ca.pem, &[]).unwrap();
        assert_eq!((v.as_str(), s), ("2", 200), "{path}");
    }
    assert!(support::http_get(&format!("http://{}/api/v1/channels", origin.http)).map_or(true, |r| r.status != 200));
    // The plain-HTTP port redirects to the same path on HTTPS.
    let r = support::http_get(&format!("http://{redirect}/live/demo-ll/index.m3u8?x=1")).unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location"),
        Some(format!("https://127.0.0.1:{}/live/demo-ll/index.m3u8?x=1", origin.http.port()).as_str())
    );

    // Push ingest over HTTPS: ffmpeg streams MPEG-TS with PUT; the channel goes live.
    let _push = support::ffmpeg_stream("push", &format!("{base}/ingest/cam/secret"));
    wait_until(support::MEDIA_WAIT, "the pushed channel over HTTPS", || {
        support::curl(&format!("{base}/live/cam/index.m3u8"), &ca.pem, &[])
            .filter(|(_, s, b)| *s == 200 && b.contains("#EXT"))
    });

    // hls.js in Chromium, trusting only the test CA, plays over HTTP/2.
    let run = support::play_in_browser_with(
        &format!("{base}/live/demo-ll/index.m3u8"),
        10,
        r#"{"lowLatencyMode":true}"#,
        &["--trust-spki", &ca.spki_sha256()],
    );
    let summary = run.summary().clone();
    assert!(run.status.success() && summary["played"].as_f64().unwrap() >= 6.0, "hls.js over HTTPS: {summary}");
    assert_eq!(summary["protocols"], serde_json::json!(["h2"]), "every response came over h2: {summary}");

    // A certificate from another CA replaces the files: served without a restart.
    let other = TestCa::new(&dir, "two");
    assert!(support::curl(&format!("{base}/api/v1/node"), &other.pem, &[]).is_none(), "not trusted before the swap");
    other.issue_to(&cert, &key);
    wait_until(Duration::from_secs(15), "the renewed certificate is served", || {
        support::curl(&format!("{base}/api/v1/node"), &other.pem, &[]).filter(|(_, s, _)| *s == 200)
    });
    assert!(origin.log().contains("TLS certificate reloaded"), "{}", origin.log());

    // The tracker over HTTPS too.
    let tracker = Node::tracker(&["--provisioner", "none", "--token", TOKEN, tls[0], tls[1], tls[2], tls[3]]);
    let (v, s, body) = support::curl(&format!("https://{}/api/v1/nodes", tracker.http), &other.pem, &[]).unwrap();
    assert_eq!((v.as_str(), s), ("2", 200), "{body}");
    // Mismatched files are refused at start with a reason.
    let bad = support::run(Command::new(env!("CARGO_BIN_EXE_relaycast")).args([
        "origin",
        "--http",
        "127.0.0.1:0",
        "--quic",
        "127.0.0.1:0",
        "--tls-cert",
        cert.to_str().unwrap(),
    ]));
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("--tls-key"));
}
