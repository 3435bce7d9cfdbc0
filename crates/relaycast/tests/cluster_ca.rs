//! Nodes that can't be impersonated (F7): with a cluster CA, every QUIC link is mutual TLS. A
//! relay with a certificate from the cluster CA attaches and serves; one with a certificate from
//! another CA — holding the right cluster token — is refused, and both sides log why; so is one
//! with no certificate at all.

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
