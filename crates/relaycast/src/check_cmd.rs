//! `relaycast check-config FILE`: read a config file the way the node or tracker would, report
//! what it describes or what is wrong with it, and start nothing.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, ValueEnum};

use crate::config::{OriginArgs, RelayArgs};
use crate::node::NodeSpec;

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The file: an origin or relay config (see configs/origin.toml, configs/relay.toml) or a
    /// tracker topology (configs/topology.toml).
    pub file: PathBuf,
    /// What the file configures [default: a topology if it has [neighbours], a relay if it
    /// names a parent, else an origin].
    #[arg(long, value_enum)]
    pub role: Option<CheckedRole>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckedRole {
    Origin,
    Relay,
    Topology,
}

/// The node commands' flags with only `--config` given, as `relaycast origin -c FILE` would
/// read them (environment variables such as RELAYCAST_TOKEN included).
#[derive(Parser)]
struct AsOrigin {
    #[command(flatten)]
    args: OriginArgs,
}

#[derive(Parser)]
struct AsRelay {
    #[command(flatten)]
    args: RelayArgs,
}

pub fn run(args: CheckArgs) -> Result<()> {
    let path = &args.file;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let role = args.role.unwrap_or(if table.contains_key("neighbours") {
        CheckedRole::Topology
    } else if table.contains_key("parent") {
        CheckedRole::Relay
    } else {
        CheckedRole::Origin
    });
    let file = path.display().to_string();
    let summary = match role {
        CheckedRole::Topology => check_topology(path)?,
        CheckedRole::Origin => {
            let spec = AsOrigin::try_parse_from(["origin", "--config", &file])?.args.into_spec()?;
            describe(&spec, path)?
        }
        CheckedRole::Relay => {
            let spec = AsRelay::try_parse_from(["relay", "--config", &file])?.args.into_spec()?;
            describe(&spec, path)?
        }
    };
    println!("{file}: a valid {} config", format!("{role:?}").to_lowercase());
    for line in summary {
        println!("  {line}");
    }
    Ok(())
}

/// What a node config sets up; files it names must exist.
fn describe(spec: &NodeSpec, path: &Path) -> Result<Vec<String>> {
    let base = path.parent().unwrap_or(Path::new("."));
    if let Some(videos) = &spec.videos {
        let dir = base.join(videos);
        if !videos.is_dir() && !dir.is_dir() {
            bail!("videos folder {} does not exist", videos.display());
        }
    }
    for parent in &spec.neighbours {
        if parent
            .rsplit_once(':')
            .and_then(|(host, port)| (!host.is_empty()).then(|| port.parse::<u16>().ok())?)
            .is_none()
        {
            bail!("parent {parent:?} is not HOST:PORT (a parent's QUIC address)");
        }
    }
    let mut out = vec![format!("name {}, viewers on http://{}", spec.name, spec.http)];
    if let Some(q) = spec.quic {
        out.push(format!("relays connect over QUIC on udp {q}"));
    }
    if !spec.neighbours.is_empty() {
        out.push(format!("parent candidates: {}", spec.neighbours.join(", ")));
    }
    if let Some(t) = &spec.tracker {
        out.push(format!("announces to the tracker {t} (region {:?})", spec.region));
        match &spec.advertise {
            Some(host) => out.push(format!("advertised as {host} (with the HTTP and QUIC ports)")),
            None if spec.http.ip().is_unspecified() => out.push(format!(
                "warning: binds {} and announces it as is; give --advertise HOST (RELAYCAST_ADVERTISE) so others can reach it",
                spec.http
            )),
            None => {}
        }
    }
    if spec.token == crate::common::DEV_TOKEN {
        out.push("warning: the cluster token is the development default; set token or RELAYCAST_TOKEN".into());
    }
    Ok(out)
}

fn check_topology(path: &Path) -> Result<Vec<String>> {
    let links = crate::tracker::load_topology(path)?;
    let mut nodes: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for (node, list) in &links {
        relaycast_core::Name::new(node.as_str()).with_context(|| format!("node name {node:?}"))?;
        nodes.insert(node);
        for n in list {
            relaycast_core::Name::new(n.as_str()).with_context(|| format!("neighbour {n:?} of {node}"))?;
            if n == node {
                bail!("{node} lists itself as a neighbour");
            }
            nodes.insert(n);
        }
    }
    let count = links.values().map(Vec::len).sum::<usize>();
    Ok(vec![format!("{} nodes, {count} links", nodes.len())])
}
