//! Embeds hls.js in the binary when `npm ci --prefix web` has installed it, so the player page
//! works from a single binary. Without it the node looks for the file at run time.

use std::path::Path;

fn main() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
    let hls = web.join("node_modules/hls.js/dist/hls.min.js");
    println!("cargo::rerun-if-changed={}", web.display());
    println!("cargo::rustc-check-cfg=cfg(hlsjs_embedded)");
    if hls.exists() {
        println!("cargo::rustc-cfg=hlsjs_embedded");
        println!("cargo::rustc-env=RELAYCAST_HLSJS_PATH={}", hls.display());
    }
}
