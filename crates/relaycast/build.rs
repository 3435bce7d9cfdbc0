//! Embeds the player page's scripts from npm — hls.js, and p2p-media-loader for sharing between
//! browsers — in the binary, so the page works from a single binary with no network at run
//! time. On a fresh checkout (no `web/node_modules`) the build installs the locked `web/`
//! packages itself when npm is on PATH (`npm ci --omit=dev`); without npm it warns and the node
//! looks for the files at run time (`RELAYCAST_WEB_DIR`).

use std::path::Path;
use std::process::Command;

/// The page's scripts: the name served under `/assets/`, and the file under `web/`.
const ASSETS: &[(&str, &str)] = &[
    ("sharing.js", "sharing.js"),
    ("hls.min.js", "node_modules/hls.js/dist/hls.min.js"),
    ("p2p-media-loader-core.es.min.js", "node_modules/p2p-media-loader-core/dist/p2p-media-loader-core.es.min.js"),
    ("p2p-media-loader-hlsjs.es.min.js", "node_modules/p2p-media-loader-hlsjs/dist/p2p-media-loader-hlsjs.es.min.js"),
];

fn main() {
    // Read at run time, not baked in with env!: a build script compiled for one checkout may be
    // run for another that shares the target folder (scripts/check-clean-build does).
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR for build scripts");
    let web = Path::new(&manifest).join("../../web");
    println!("cargo::rerun-if-changed={}", web.join("package-lock.json").display());
    println!("cargo::rerun-if-env-changed=RELAYCAST_NO_NPM");
    let missing = |web: &Path| ASSETS.iter().any(|(_, rel)| !web.join(rel).exists());
    if missing(&web) && std::env::var_os("RELAYCAST_NO_NPM").is_none() {
        install(&web);
    }
    let mut table =
        String::from("/// The page's scripts: (name under /assets/, file under web/, bytes if embedded).\n");
    table.push_str("pub const ASSETS: &[(&str, &str, Option<&[u8]>)] = &[\n");
    for (name, rel) in ASSETS {
        let file = web.join(rel);
        println!("cargo::rerun-if-changed={}", file.display());
        let bytes = match file.canonicalize() {
            Ok(path) => format!("Some(include_bytes!({:?}))", path.display().to_string()),
            Err(_) => "None".to_string(),
        };
        table.push_str(&format!("    ({name:?}, {rel:?}, {bytes}),\n"));
    }
    table.push_str("];\n");
    let out = Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("assets.rs");
    std::fs::write(out, table).expect("writing the asset table");
    if missing(&web) {
        println!(
            "cargo::warning=the player page's scripts are not installed, so it cannot play until they are: \
             run `npm ci --prefix web` and build again"
        );
    }
}

/// `npm ci --omit=dev` in `web/` (the lock file pins the versions); a failure is a warning.
fn install(web: &Path) {
    let status = Command::new("npm")
        .args(["ci", "--omit=dev", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(web)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => println!("cargo::warning=`npm ci --omit=dev` in web/ failed ({s})"),
        Err(e) => println!("cargo::warning=npm not found ({e}); install Node.js to embed the player's scripts"),
    }
}
