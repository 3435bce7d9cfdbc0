//! Embeds hls.js in the binary so the player page works from a single binary, with no network
//! at run time. On a fresh checkout (no `web/node_modules`) the build installs the locked `web/`
//! packages itself when npm is on PATH (`npm ci --omit=dev`, hls.js only); without npm it warns
//! and the node looks for the file at run time (`RELAYCAST_WEB_DIR`).

use std::path::Path;
use std::process::Command;

fn main() {
    // Read at run time, not baked in with env!: a build script compiled for one checkout may be
    // run for another that shares the target folder (scripts/check-clean-build does).
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR for build scripts");
    let web = Path::new(&manifest).join("../../web");
    let hls = web.join("node_modules/hls.js/dist/hls.min.js");
    println!("cargo::rerun-if-changed={}", web.join("package-lock.json").display());
    println!("cargo::rerun-if-changed={}", hls.display());
    println!("cargo::rerun-if-env-changed=RELAYCAST_NO_NPM");
    println!("cargo::rustc-check-cfg=cfg(hlsjs_embedded)");
    if !hls.exists() && std::env::var_os("RELAYCAST_NO_NPM").is_none() {
        install(&web);
    }
    if hls.exists() {
        println!("cargo::rustc-cfg=hlsjs_embedded");
        println!("cargo::rustc-env=RELAYCAST_HLSJS_PATH={}", hls.display());
    } else {
        println!(
            "cargo::warning=hls.js is not installed, so the player page cannot play until it is: \
             run `npm ci --prefix web` and build again"
        );
    }
}

/// `npm ci --omit=dev` in `web/` (the lock file pins hls.js); a failure is a warning.
fn install(web: &Path) {
    let status = Command::new("npm")
        .args(["ci", "--omit=dev", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(web)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => println!("cargo::warning=`npm ci --omit=dev` in web/ failed ({s})"),
        Err(e) => println!("cargo::warning=npm not found ({e}); install Node.js to embed hls.js"),
    }
}
