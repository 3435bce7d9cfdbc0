//! Static assets of the player page: hls.js from npm (`web/node_modules`), embedded at build
//! time when present, else looked up at run time.

use std::path::PathBuf;

/// The hls.js bundle, if this build embedded it or it can be found on disk.
pub fn hls_js() -> Option<Vec<u8>> {
    #[cfg(hlsjs_embedded)]
    {
        return Some(include_bytes!(env!("RELAYCAST_HLSJS_PATH")).to_vec());
    }
    #[allow(unreachable_code)]
    candidates().into_iter().find_map(|p| std::fs::read(p).ok())
}

fn candidates() -> Vec<PathBuf> {
    let rel = "node_modules/hls.js/dist/hls.min.js";
    let mut dirs = Vec::new();
    if let Ok(dir) = std::env::var("RELAYCAST_WEB_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    dirs.push(PathBuf::from("web"));
    dirs.into_iter().map(|d| d.join(rel)).collect()
}
