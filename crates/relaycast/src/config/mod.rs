//! Command-line flags and TOML config files for the origin and relay roles.
//!
//! Every flag is optional and overrides the same key of `--config FILE` (see `configs/*.toml`);
//! what neither sets takes the default shown in `--help`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use relaycast_core::wire::DEFAULT_MAX_SEGMENT;
use relaycast_core::{Name, Playback, Role};
use reqwest::Url;
use serde::Deserialize;

use crate::common::DEV_TOKEN;
use crate::node::NodeSpec;

/// Flags common to every node.
#[derive(Args, Debug, Clone, Default)]
pub struct CommonArgs {
    /// TOML config file; flags override its keys.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Node name shown to peers and in the API; unique in the cluster [default: origin, relay-PID].
    #[arg(long)]
    pub name: Option<String>,
    /// HTTP address for viewers, the API and /metrics [default: origin 127.0.0.1:8081, relay 127.0.0.1:8082].
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// UDP address on which relays connect to this node over QUIC [default: origin 127.0.0.1:9081].
    #[arg(long)]
    pub quic: Option<SocketAddr>,
    /// Shared cluster secret every node must present.
    #[arg(long, env = "RELAYCAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Segments kept per rendition (what a reconnecting relay can resume from) [default: 30].
    #[arg(long)]
    pub window: Option<usize>,
    /// Keep-alive interval between nodes in milliseconds: a parent says it is alive this often; a child drops a parent silent for 2.25 intervals [default: 500].
    #[arg(long)]
    pub keepalive_ms: Option<u64>,
    /// Largest segment accepted, in bytes [default: 33554432].
    #[arg(long)]
    pub max_segment_bytes: Option<usize>,
    /// Children accepted at most; more are refused and attach elsewhere [default: 64].
    #[arg(long)]
    pub max_children: Option<usize>,
    /// Tracker URL (e.g. http://tracker:7070): announce this node and link to the neighbours
    /// it names; the tree then picks the parent among them.
    #[arg(long, value_name = "URL")]
    pub tracker: Option<String>,
    /// Region label announced to the tracker; neighbours in the same region are preferred.
    #[arg(long)]
    pub region: Option<String>,
    /// Host name or IP that other nodes and viewers reach this node at, announced to the
    /// tracker with the --http and --quic ports (needed when binding 0.0.0.0, e.g. in a
    /// container: `--advertise relay-1`) [default: the bound address].
    #[arg(long, value_name = "HOST", env = "RELAYCAST_ADVERTISE")]
    pub advertise: Option<String>,
    /// Cap on the egress to viewers (HLS segments), kbit/s; 0 = none. Changeable at run time
    /// with `PUT /api/v1/egress` [default: 0].
    #[arg(long)]
    pub egress_kbps: Option<u64>,
    /// Egress capacity that server-side ABR (`/live/{channel}/auto.m3u8`) shares among its
    /// viewers, kbit/s [default: the --egress-kbps cap; with neither, each viewer's measured rate].
    #[arg(long)]
    pub abr_capacity_kbps: Option<u64>,
    /// The cluster's playback key (64 hex digits): signs and checks links to `signed`
    /// channels. An origin creates the file when it is missing; copy it to every relay that
    /// serves viewers, and to the tracker.
    #[arg(long, value_name = "FILE")]
    pub playback_key: Option<PathBuf>,
    #[command(flatten)]
    pub tls: crate::common::tls::TlsArgs,
    /// The cluster CA certificate(s), PEM (`relaycast cluster-ca init`): QUIC links then use
    /// mutual TLS and a neighbour whose certificate is not from this CA is refused. Several
    /// certificates in the file = several CAs trusted (how a CA is rotated).
    #[arg(long, value_name = "FILE", env = "RELAYCAST_CLUSTER_CA")]
    pub cluster_ca: Option<PathBuf>,
    /// This node's certificate from the cluster CA (`relaycast cluster-ca issue NAME`).
    #[arg(long, value_name = "FILE", env = "RELAYCAST_NODE_CERT")]
    pub node_cert: Option<PathBuf>,
    /// The private key of --node-cert.
    #[arg(long, value_name = "FILE", env = "RELAYCAST_NODE_KEY")]
    pub node_key: Option<PathBuf>,
}

impl CommonArgs {
    fn cluster_identity(&self) -> Result<Option<crate::common::cluster_ca::ClusterIdentity>> {
        match (&self.cluster_ca, &self.node_cert, &self.node_key) {
            (Some(ca), Some(cert), Some(key)) => {
                Ok(Some(crate::common::cluster_ca::ClusterIdentity::load(ca, cert, key)?))
            }
            (None, None, None) => Ok(None),
            _ => bail!("--cluster-ca, --node-cert and --node-key go together (see `relaycast cluster-ca --help`)"),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct OriginArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Loop every media file in this folder as a live channel named after the file.
    #[arg(long)]
    pub videos: Option<PathBuf>,
    /// Serve every channel of this origin at low latency (LL-HLS: fMP4 parts of 200 ms, blocking
    /// playlist reload) instead of MPEG-TS: looped files (--videos) in 1 s segments, HLS pushes,
    /// pulls and ladders packaged segment by segment as they arrive. A live MPEG-TS push
    /// (-f mpegts) is low latency either way.
    #[arg(long)]
    pub low_latency: bool,
    /// Pull a live HLS stream: NAME=URL (master or media playlist). Repeatable.
    #[arg(long, value_name = "NAME=URL")]
    pub pull: Vec<String>,
    /// Accept ffmpeg pushes for channel NAME with stream key KEY: NAME=KEY. Repeatable.
    /// ffmpeg then pushes HLS to http://HOST/ingest/NAME/KEY/src.m3u8 (-f hls -method PUT), or a
    /// live MPEG-TS stream for low latency to http://HOST/ingest/NAME/KEY (-f mpegts -method PUT).
    #[arg(long, value_name = "NAME=KEY")]
    pub push: Vec<String>,
    /// Also loop the built-in sample clip as channel `demo`.
    #[arg(long)]
    pub sample: bool,
    /// Also loop the built-in sample clip as low-latency channel `demo-ll` (LL-HLS: fMP4 parts
    /// of 1/3 s in 1 s segments, blocking playlist reload).
    #[arg(long)]
    pub sample_ll: bool,
    /// Sign every segment with the Ed25519 key in FILE (created if absent; the public key is
    /// written to FILE.pub) so viewers can check what peers send them.
    #[arg(long, value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
    /// Who may watch: `public` (anyone with the URL, the default) or `signed` (only links made
    /// by `relaycast sign` or the tracker's /play), for every channel; `NAME=public|signed` for
    /// one. Repeatable. Signed channels need --playback-key.
    #[arg(long, value_name = "POLICY")]
    pub playback: Vec<String>,
    /// Encrypt channel NAME's segments with AES-128 (MPEG-TS channels; the channel must be
    /// signed, as only holders of a playback token get its keys). Repeatable.
    #[arg(long, value_name = "NAME")]
    pub encrypt: Vec<String>,
    /// Segments per AES-128 key: keys rotate this often.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub key_rotation: u32,
    #[command(flatten)]
    pub ladder: crate::node::ingest::ladder::LadderArgs,
    #[command(flatten)]
    pub publish: crate::node::ingest::claim::PublishArgs,
}

#[derive(Args, Debug, Clone)]
pub struct RelayArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// A parent candidate's QUIC address, HOST:PORT (an origin's or another relay's --quic).
    /// Repeatable: the relay connects to all and picks the one with the lowest latency to the
    /// origin as its parent, keeping the others as backups.
    #[arg(long, value_name = "HOST:PORT")]
    pub parent: Vec<String>,
    /// On SIGTERM, drain first: take no new viewers, offer nothing to the tracker (it moves
    /// steered viewers away), and serve those still watching for up to this many seconds.
    /// A second signal stops at once.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub drain_timeout: u64,
}

/// The TOML file: the same keys as the flags.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub name: Option<String>,
    pub http: Option<SocketAddr>,
    pub quic: Option<SocketAddr>,
    pub token: Option<String>,
    /// One parent candidate or a list of them.
    #[serde(default)]
    pub parent: OneOrMany,
    pub max_children: Option<usize>,
    pub window: Option<usize>,
    pub keepalive_ms: Option<u64>,
    pub max_segment_bytes: Option<usize>,
    pub tracker: Option<String>,
    pub region: Option<String>,
    pub advertise: Option<String>,
    pub egress_kbps: Option<u64>,
    pub videos: Option<PathBuf>,
    pub sample: Option<bool>,
    pub playback_key: Option<PathBuf>,
    /// `public` or `signed`: every channel's default.
    pub playback: Option<Playback>,
    #[serde(default)]
    pub channels: Vec<ChannelConfig>,
}

/// A string or a list of strings in TOML.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(untagged)]
pub enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::None => Vec::new(),
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// A channel of an origin: pushed (with a stream key) or pulled (from a URL).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub name: Name,
    pub push_key: Option<String>,
    pub pull: Option<String>,
    /// `public` or `signed`, overriding the file's `playback`.
    pub playback: Option<Playback>,
    /// Encrypt this channel's segments with AES-128 (needs `playback = "signed"`).
    #[serde(default)]
    pub encrypt: bool,
}

fn load(path: Option<&Path>) -> Result<FileConfig> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
}

fn split_pair(s: &str, what: &str) -> Result<(Name, String)> {
    let Some((name, value)) = s.split_once('=') else { bail!("{what} must be NAME=VALUE, got {s:?}") };
    let name = Name::new(name).with_context(|| format!("channel name in {s:?}"))?;
    if value.is_empty() {
        bail!("{what} {s:?} has an empty value");
    }
    Ok((name, value.to_string()))
}

fn base_spec(role: Role, common: &CommonArgs, file: &FileConfig, default_http: &str) -> Result<NodeSpec> {
    let token = common.token.clone().or_else(|| file.token.clone()).unwrap_or_else(|| {
        tracing::warn!("no cluster token configured: using the development default; set --token or RELAYCAST_TOKEN");
        DEV_TOKEN.to_string()
    });
    Ok(NodeSpec {
        name: common.name.clone().or_else(|| file.name.clone()).unwrap_or_else(|| match role {
            Role::Origin => "origin".into(),
            // Node ids derive from names, so default names must differ between processes.
            Role::Relay => format!("relay-{}", std::process::id()),
        }),
        role,
        http: common.http.or(file.http).unwrap_or_else(|| default_http.parse().expect("valid default address")),
        quic: common.quic.or(file.quic),
        token,
        neighbours: Vec::new(),
        max_children: common.max_children.or(file.max_children).unwrap_or(64).max(1),
        window: common.window.or(file.window).unwrap_or(30).max(3),
        keepalive: Duration::from_millis(common.keepalive_ms.or(file.keepalive_ms).unwrap_or(500).max(50)),
        max_segment_bytes: common.max_segment_bytes.or(file.max_segment_bytes).unwrap_or(DEFAULT_MAX_SEGMENT),
        tracker: match common.tracker.clone().or_else(|| file.tracker.clone()) {
            Some(t) => Some(parse_url(&t)?),
            None => None,
        },
        region: common.region.clone().or_else(|| file.region.clone()).unwrap_or_default(),
        advertise: match common.advertise.clone().or_else(|| file.advertise.clone()) {
            Some(h)
                if h.is_empty()
                    || h.contains(['/', ' ', '[', ']'])
                    || (h.contains(':') && h.parse::<std::net::Ipv6Addr>().is_err()) =>
            {
                bail!(
                    "--advertise takes a host name or IP without a port (the --http and --quic ports are added), got {h:?}"
                )
            }
            a => a,
        },
        egress_kbps: common.egress_kbps.or(file.egress_kbps).unwrap_or(0),
        videos: None,
        pulls: Vec::new(),
        pushes: BTreeMap::new(),
        sample: false,
        sample_ll: false,
        low_latency: false,
        publish: Default::default(),
        signing_key: None,
        ladders: Vec::new(),
        abr_capacity_kbps: common.abr_capacity_kbps.unwrap_or(0),
        playback_key: common.playback_key.clone().or_else(|| file.playback_key.clone()),
        encrypted: BTreeMap::new(),
        tls: common.tls.clone(),
        cluster: common.cluster_identity()?,
        default_playback: Playback::Public,
        playback: BTreeMap::new(),
    })
}

impl OriginArgs {
    pub fn into_spec(self) -> Result<NodeSpec> {
        let file = load(self.common.config.as_deref())?;
        let mut spec = base_spec(Role::Origin, &self.common, &file, "127.0.0.1:8081")?;
        spec.quic = spec.quic.or_else(|| Some("127.0.0.1:9081".parse().expect("valid default address")));
        spec.videos = self.videos.or(file.videos);
        spec.low_latency = self.low_latency;
        spec.sample = self.sample || file.sample.unwrap_or(false);
        spec.sample_ll = self.sample_ll;
        spec.signing_key = self.signing_key;
        spec.default_playback = file.playback.unwrap_or_default();
        for ch in &file.channels {
            if let Some(p) = ch.playback {
                spec.playback.insert(ch.name.clone(), p);
            }
            if ch.encrypt {
                spec.encrypted.insert(ch.name.clone(), self.key_rotation.max(1));
            }
            match (&ch.push_key, &ch.pull) {
                (Some(key), None) => {
                    spec.pushes.insert(ch.name.clone(), key.clone());
                }
                (None, Some(url)) => spec.pulls.push((ch.name.clone(), parse_url(url)?)),
                _ => bail!("channel {} must have exactly one of push_key or pull", ch.name),
            }
        }
        for p in &self.pull {
            let (name, url) = split_pair(p, "--pull")?;
            spec.pulls.push((name, parse_url(&url)?));
        }
        for p in &self.push {
            let (name, key) = split_pair(p, "--push")?;
            spec.pushes.insert(name, key);
        }
        for p in &self.playback {
            match p.split_once('=') {
                None => spec.default_playback = p.parse().map_err(anyhow::Error::msg).context("--playback")?,
                Some(_) => {
                    let (name, policy) = split_pair(p, "--playback")?;
                    spec.playback.insert(name, policy.parse().map_err(anyhow::Error::msg).context("--playback")?);
                }
            }
        }
        for name in &self.encrypt {
            let name = Name::new(name.as_str()).with_context(|| format!("--encrypt {name:?}"))?;
            spec.encrypted.insert(name, self.key_rotation.max(1));
        }
        for name in spec.encrypted.keys() {
            if spec.playback.get(name).copied().unwrap_or(spec.default_playback) != Playback::Signed {
                bail!(
                    "channel {name} is encrypted but public: add --playback {name}=signed (only token holders get keys)"
                );
            }
        }
        if !spec.encrypted.is_empty() && (self.low_latency || self.sample_ll) {
            bail!(
                "AES-128 (--encrypt) covers MPEG-TS channels; this origin serves low latency (--low-latency/--sample-ll)"
            );
        }
        spec.ladders = self.ladder.into_specs()?;
        for l in &spec.ladders {
            if let Some(source) = l.input.strip_prefix("channel:") {
                let declared =
                    spec.pushes.keys().chain(spec.pulls.iter().map(|(n, _)| n)).any(|n| n.as_str() == source);
                if !declared || source == l.channel.as_str() {
                    bail!(
                        "--ladder {}=channel:{source}: no such channel here (declare it with --push or --pull)",
                        l.channel
                    );
                }
            }
        }
        if (self.publish.rtmp.is_some() || self.publish.srt.is_some()) && spec.pushes.is_empty() {
            bail!(
                "--rtmp and --srt publish into declared channels: add --push NAME=KEY for each (KEY is the stream key)"
            );
        }
        if let Some(p) = &self.publish.srt_passphrase
            && !(10..=79).contains(&p.len())
        {
            bail!("--srt-passphrase must be 10 to 79 characters long (SRT's rule), got {}", p.len());
        }
        spec.publish = self.publish;
        let mut names: Vec<&Name> = spec.pulls.iter().map(|(n, _)| n).chain(spec.pushes.keys()).collect();
        names.extend(spec.ladders.iter().map(|l| &l.channel));
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            bail!("channel {} is declared twice", w[0]);
        }
        Ok(spec)
    }
}

impl RelayArgs {
    pub fn into_spec(self) -> Result<NodeSpec> {
        let file = load(self.common.config.as_deref())?;
        let mut spec = base_spec(Role::Relay, &self.common, &file, "127.0.0.1:8082")?;
        spec.neighbours = if self.parent.is_empty() { file.parent.into_vec() } else { self.parent };
        if spec.neighbours.is_empty() && spec.tracker.is_none() {
            bail!("a relay needs --parent HOST:PORT (the QUIC address of an origin or relay) or --tracker URL");
        }
        if !(file.channels.is_empty() && file.videos.is_none()) {
            bail!("channels and videos are origin settings; a relay takes its channels from its parent");
        }
        Ok(spec)
    }
}

fn parse_url(s: &str) -> Result<Url> {
    let url = Url::parse(s).with_context(|| format!("invalid URL {s:?}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("URL {s:?} must be http or https");
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") && !path.ends_with("topology.toml") {
                load(Some(&path)).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 2, "configs/ holds the example files");
    }

    #[test]
    fn flags_override_the_file_and_bad_pairs_are_explained() {
        let args = OriginArgs {
            common: CommonArgs { name: Some("o1".into()), ..CommonArgs::default() },
            videos: None,
            pull: vec!["tv=http://127.0.0.1:1/x.m3u8".into()],
            push: vec!["cam=k1".into()],
            sample: false,
            sample_ll: false,
            low_latency: false,
            signing_key: None,
            playback: vec![],
            encrypt: vec![],
            key_rotation: 10,
            ladder: Default::default(),
            publish: Default::default(),
        };
        let spec = args.into_spec().unwrap();
        assert_eq!(spec.name, "o1");
        assert_eq!(spec.pushes.len(), 1);
        assert_eq!(spec.pulls.len(), 1);
        let bad = OriginArgs {
            common: CommonArgs::default(),
            videos: None,
            pull: vec![],
            push: vec!["nokey".into()],
            sample: false,
            sample_ll: false,
            low_latency: false,
            signing_key: None,
            playback: vec![],
            encrypt: vec![],
            key_rotation: 10,
            ladder: Default::default(),
            publish: Default::default(),
        };
        let err = format!("{:#}", bad.into_spec().unwrap_err());
        assert!(err.contains("NAME=VALUE"), "{err}");
        let dup = OriginArgs {
            common: CommonArgs::default(),
            videos: None,
            pull: vec!["a=http://127.0.0.1/x.m3u8".into()],
            push: vec!["a=k".into()],
            sample: false,
            sample_ll: false,
            low_latency: false,
            signing_key: None,
            playback: vec![],
            encrypt: vec![],
            key_rotation: 10,
            ladder: Default::default(),
            publish: Default::default(),
        };
        assert!(format!("{:#}", dup.into_spec().unwrap_err()).contains("declared twice"));
    }

    #[test]
    fn advertise_takes_a_host_without_a_port() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: RelayArgs,
        }
        let relay = |host: &str| {
            <Cli as clap::Parser>::try_parse_from(["relay", "--parent", "origin:9081", "--advertise", host])
                .map(|c| c.args)
        };
        for good in ["relay-1", "203.0.113.7", "::1", "edge.example.net"] {
            let spec = relay(good).unwrap().into_spec().unwrap();
            assert_eq!(spec.advertise.as_deref(), Some(good));
        }
        for bad in ["relay-1:8082", "[::1]", "http://relay-1", ""] {
            let err = format!("{:#}", relay(bad).unwrap().into_spec().unwrap_err());
            assert!(err.contains("without a port"), "{bad}: {err}");
        }
    }
}
