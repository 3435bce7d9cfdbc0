//! `relaycast check-config` (issue 19): the shipped configs pass; a typo, a bad address or a
//! topology that links a node to itself is named and exits non-zero; nothing is started.

mod support;

use std::process::Command;

use support::TempDir;

fn check(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_relaycast"))
        .arg("check-config")
        .arg(path)
        .env("RUST_BACKTRACE", "0")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn shipped_configs_pass_and_mistakes_are_named() {
    let configs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    for (file, role) in [("origin.toml", "origin"), ("relay.toml", "relay"), ("topology.toml", "topology")] {
        let (ok, out) = check(&configs.join(file));
        assert!(ok && out.contains(&format!("a valid {role} config")), "{file}: {out}");
    }
    let dir = TempDir::new("check-config");
    let cases = [
        ("typo.toml", "name = \"r\"\nparent = \"127.0.0.1:9081\"\nwindoww = 3\n", "unknown field `windoww`"),
        ("addr.toml", "parent = \"127.0.0.1\"\n", "is not HOST:PORT"),
        ("http.toml", "http = \"localhost:80:80\"\n", "http"),
        ("self.toml", "[neighbours]\na = [\"b\", \"a\"]\n", "a lists itself"),
        ("toml.toml", "name = \n", "not valid TOML"),
    ];
    for (file, text, expected) in cases {
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap();
        let (ok, out) = check(&path);
        assert!(!ok, "{file} must fail: {out}");
        assert!(out.contains(expected), "{file}: expected {expected:?} in {out}");
    }
}
