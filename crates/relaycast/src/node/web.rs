//! Static assets of the player page: hls.js and p2p-media-loader from npm (`web/node_modules`),
//! embedded at build time when present (build.rs), else looked up at run time.

use std::path::PathBuf;

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The script served as `/assets/{name}`, if this build embedded it or it can be found on disk;
/// `None` for a name that is not one of the page's scripts.
pub fn asset(name: &str) -> Option<Vec<u8>> {
    let (_, rel, embedded) = ASSETS.iter().find(|(n, _, _)| *n == name)?;
    if let Some(bytes) = embedded {
        return Some(bytes.to_vec());
    }
    web_dirs().into_iter().find_map(|d| std::fs::read(d.join(rel)).ok())
}

fn web_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(dir) = std::env::var("RELAYCAST_WEB_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    dirs.push(PathBuf::from("web"));
    dirs
}
