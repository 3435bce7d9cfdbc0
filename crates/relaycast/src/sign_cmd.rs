//! `relaycast sign`: print a playable link to a `signed` channel.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use relaycast_core::Name;

use crate::common::playback::{PARAM, PlaybackKey, parse_ttl};

/// Make a signed link to a channel.
#[derive(Args, Debug)]
pub struct SignArgs {
    /// The cluster's playback key (the origin's and edges' --playback-key).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The channel the link opens.
    #[arg(long)]
    pub channel: String,
    /// How long the link stays valid: seconds, or with a unit (90s, 30m, 2h, 1d).
    #[arg(long, value_parser = parse_ttl)]
    pub ttl: u64,
    /// Only this client address may use the link (as the edge sees it: behind a proxy, the proxy's).
    #[arg(long)]
    pub ip: Option<IpAddr>,
    /// The edge (or tracker-chosen edge) the link points at.
    #[arg(long, default_value = "http://127.0.0.1:8082", value_name = "URL")]
    pub base: String,
}

pub fn run(args: SignArgs) -> Result<()> {
    let key = PlaybackKey::load(&args.key)?;
    let channel = Name::new(args.channel.as_str()).with_context(|| format!("channel {:?}", args.channel))?;
    let base = args.base.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        bail!("--base must be an http:// or https:// URL, got {base:?}");
    }
    let expires = crate::common::wall_ms() / 1000 + args.ttl;
    let token = key.token(&channel, expires, args.ip);
    println!("{base}/live/{channel}/index.m3u8?{PARAM}={token}");
    Ok(())
}
