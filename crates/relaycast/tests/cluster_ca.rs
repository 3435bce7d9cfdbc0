//! Nodes that can't be impersonated (F7): with a cluster CA, every QUIC link is mutual TLS. A
//! relay with a certificate from the cluster CA attaches and serves; one with a certificate from
//! another CA — holding the right cluster token — is refused, and both sides log why; so is one
//! with no certificate at all. The tracker takes the same certificates as node credentials.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::{Node, TempDir, http_get, wait_until};

const TOKEN: &str = "ca-token";

fn ca(dir: &Path, args: &[&str]) {
    let out = support::run(
        Command::new(env!("CARGO_BIN_EXE_relaycast")).args(["cluster-ca", "--dir", dir.to_str().unwrap()]).args(args),
    );
    assert!(out.status.success(), "cluster-ca {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `--cluster-ca --node-cert --node-key` for `name` from the CA in `dir`.
fn identity(dir: &Path, name: &str) -> Vec<String> {
    let at = |f: &str| dir.join(f).to_str().unwrap().to_string();
    vec![
        "--cluster-ca".into(),
        at("ca.pem"),
        "--node-cert".into(),
        at(&format!("{name}.pem")),
        "--node-key".into(),
        at(&format!("{name}.key")),
    ]
}

fn relay(name: &str, parent: std::net::SocketAddr, extra: &[String]) -> Node {
    let parent = parent.to_string();
    let mut args = vec!["relay", "--name", name, "--parent", &parent, "--http", "127.0.0.1:0", "--token", TOKEN];
    args.extend(extra.iter().map(String::as_str));
    Node::start(name, &args, false)
}

#[test]
fn only_relays_with_a_certificate_from_the_cluster_ca_attach() {
    let dir = TempDir::new("cluster-ca");
    let (cluster, stranger) = (dir.join("cluster"), dir.join("elsewhere"));
    ca(&cluster, &["init"]);
    ca(&cluster, &["issue", "origin"]);
    ca(&cluster, &["issue", "good"]);
    ca(&stranger, &["init"]);
    ca(&stranger, &["issue", "bad"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["ca.key", "good.key"] {
            let mode = std::fs::metadata(cluster.join(key)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{key} is private");
        }
    }

    let ids = identity(&cluster, "origin");
    let mut args = vec!["--sample"];
    args.extend(ids.iter().map(String::as_str));
    let origin = Node::origin("origin", TOKEN, &args);
    let quic = origin.quic.unwrap();

    let good = relay("good", quic, &identity(&cluster, "good"));
    wait_until(support::MEDIA_WAIT, "the relay from the cluster CA serves the channel", || {
        http_get(&good.url("/live/demo/index.m3u8")).ok().filter(|r| r.status == 200 && r.text().contains(".ts"))
    });

    let bad = relay("bad", quic, &identity(&stranger, "bad"));
    wait_until(Duration::from_secs(20), "both sides log the refusal", || {
        (origin.log().contains("refused a neighbour: certificates not from the same cluster CA")
            && bad.log().contains("not from the same cluster CA"))
        .then_some(())
    });
    let none = relay("none", quic, &[]);
    wait_until(Duration::from_secs(20), "a relay without a certificate is refused", || {
        (origin.log().matches("refused a neighbour: certificates not from the same cluster CA").count() >= 2)
            .then_some(())
    });
    for outsider in [&bad, &none] {
        let r = http_get(&outsider.url("/live/demo/index.m3u8")).unwrap();
        assert_eq!(r.status, 503, "an outsider never gets the stream: {}", r.text());
    }
    let node: serde_json::Value = serde_json::from_slice(&origin.get("/api/v1/node").body).unwrap();
    let neighbours: Vec<_> = node["neighbours"].as_array().unwrap().iter().map(|n| n["name"].clone()).collect();
    assert_eq!(neighbours, vec![serde_json::json!("good")], "only the cluster's relay is linked: {node}");

    // A certificate that does not match the CA given is refused at start, with a reason.
    let mut mixed = identity(&cluster, "good");
    mixed[1] = stranger.join("ca.pem").to_str().unwrap().to_string();
    let out = support::run(
        Command::new(env!("CARGO_BIN_EXE_relaycast"))
            .args(["relay", "--parent", "127.0.0.1:9", "--token", TOKEN])
            .args(&mixed),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not signed by the cluster CA"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The control plane takes node certificates as credentials: a tracker serving HTTPS with a
/// certificate from the cluster CA (`issue tracker --host 127.0.0.1`) and `--cluster-ca` lets
/// nodes that show theirs announce and report load although they lack its token; a caller with
/// neither is refused (401, no effect); a certificate from another CA fails the handshake.
#[test]
fn the_tracker_takes_node_certificates_as_credentials() {
    let dir = TempDir::new("ca-tracker");
    let (cluster, stranger) = (dir.join("cluster"), dir.join("elsewhere"));
    ca(&cluster, &["init"]);
    ca(&cluster, &["issue", "tracker", "--host", "127.0.0.1"]);
    ca(&cluster, &["issue", "origin"]);
    ca(&cluster, &["issue", "edge"]);
    ca(&stranger, &["init"]);
    ca(&stranger, &["issue", "bad"]);
    let at = |f: &str| cluster.join(f).to_str().unwrap().to_string();
    let tracker = Node::tracker(&[
        "--provisioner",
        "none",
        "--token",
        "only-the-operator-knows-this",
        "--tls-cert",
        &at("tracker.pem"),
        "--tls-key",
        &at("tracker.key"),
        "--cluster-ca",
        &at("ca.pem"),
    ]);
    let base = format!("https://{}", tracker.http);
    // Nodes run without the tracker's token: their certificates are what it lets in.
    let node = |name: &str, role: &[&str]| {
        let mut args: Vec<String> = role.iter().map(|s| s.to_string()).collect();
        args.extend(
            ["--name", name, "--http", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--tracker", &base].map(String::from),
        );
        args.extend(identity(&cluster, name));
        Node::start(name, &args.iter().map(String::as_str).collect::<Vec<_>>(), true)
    };
    let _origin = node("origin", &["origin", "--sample"]);
    let edge = node("edge", &["relay"]);
    let ca_pem = at("ca.pem");
    let traffic = || -> Option<serde_json::Value> {
        let (_, status, body) = support::curl(&format!("{base}/api/v1/traffic"), &ca_pem, &[])?;
        (status == 200).then(|| serde_json::from_str(&body).ok())?
    };
    let serving_edge = || {
        let t = traffic()?;
        t["edges"].as_array()?.iter().find(|e| e["name"] == "edge" && e["state"] == "serving").cloned()
    };
    // A viewer on the edge shows up in the tracker only through the edge's load report.
    wait_until(support::MEDIA_WAIT, "the edge, announced and reporting with its certificate, counts a viewer", || {
        let playing = http_get(&edge.url("/live/demo/index.m3u8")).is_ok_and(|r| r.status == 200);
        serving_edge().filter(|e| playing && e["viewers"].as_u64() >= Some(1))
    });
    assert!(!edge.log().contains("tracker refused"), "{}", edge.log());
    let (_, _, nodes) = support::curl(&format!("{base}/api/v1/nodes"), &ca_pem, &[]).unwrap();
    assert!(nodes.contains("\"origin\"") && nodes.contains("\"edge\""), "{nodes}");

    // Without credentials: refused, and nothing changes.
    let cordon = format!("{base}/api/v1/edges/edge/cordon");
    let (_, status, body) = support::curl(&cordon, &ca_pem, &["-X", "POST"]).unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("node certificate"), "the refusal says what is needed: {body}");
    let fake = r#"{"name":"intruder","role":"relay"}"#;
    let announce = format!("{base}/api/v1/announce");
    let json = ["-X", "POST", "-H", "content-type: application/json", "--data", fake];
    let (_, status, _) = support::curl(&announce, &ca_pem, &json).unwrap();
    assert_eq!(status, 401);
    assert_eq!(serving_edge().unwrap()["cordoned"], false);
    // A certificate from another CA does not get past the handshake.
    let (bad_cert, bad_key) = (stranger.join("bad.pem"), stranger.join("bad.key"));
    let with_bad = [&json[..], &["--cert", bad_cert.to_str().unwrap(), "--key", bad_key.to_str().unwrap()]].concat();
    assert!(support::curl(&announce, &ca_pem, &with_bad).is_none(), "a stranger's certificate is refused");
    // The edge's own certificate (what an operator's tooling would hold) is enough.
    let (_, status, body) =
        support::curl(&cordon, &ca_pem, &["-X", "POST", "--cert", &at("edge.pem"), "--key", &at("edge.key")]).unwrap();
    assert_eq!(status, 200, "{body}");
    let (_, _, nodes) = support::curl(&format!("{base}/api/v1/nodes"), &ca_pem, &[]).unwrap();
    assert!(!nodes.contains("intruder"), "{nodes}");
}
