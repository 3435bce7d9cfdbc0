//! The lab's topology file: hosts on a star (each with its own link to one switch), what runs
//! on each host, and timed events. See `lab/*.toml` for commented examples.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Name of the run; the results folder is named after it.
    pub name: String,
    /// How long viewers watch, in seconds.
    pub duration_s: f64,
    /// Seconds to let the stream settle before viewers start.
    #[serde(default = "default_warmup")]
    pub warmup_s: f64,
    #[serde(rename = "host")]
    pub hosts: Vec<Host>,
    #[serde(default, rename = "event")]
    pub events: Vec<Event>,
    /// Run the topology once per viewer count (experiment 3: origin load vs audience size).
    pub sweep: Option<Sweep>,
}

/// Repeat the run with these viewer hosts' `count` set to each value in turn.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    pub hosts: Vec<String>,
    pub counts: Vec<usize>,
}

fn default_warmup() -> f64 {
    6.0
}

/// A host's link to the switch.
#[derive(Deserialize, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// Added to the round-trip time of every path through this link (half in each direction).
    #[serde(default)]
    pub delay_ms: f64,
    /// Rate in each direction, kbit/s; none = unlimited.
    pub rate_kbps: Option<u64>,
    /// Datagram loss probability in each direction (QUIC between nodes; TCP is not dropped).
    #[serde(default)]
    pub loss: f64,
}

#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A Relaycast origin; a broadcaster pushes into it (or it loops the built-in sample).
    Origin,
    /// A Relaycast relay under `parent`.
    Relay,
    /// ffmpeg pushing a live test source to `push_to`.
    Broadcaster,
    /// `relaycast watch` on the servers in `watch`.
    Viewer,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Host {
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub link: Link,
    /// Relay: its parent host.
    pub parent: Option<String>,
    /// Broadcaster: the origin host it pushes to.
    pub push_to: Option<String>,
    /// Broadcaster: video bitrate, kbit/s.
    #[serde(default = "default_bitrate")]
    pub bitrate_kbps: u64,
    /// Broadcaster: segment duration, seconds.
    #[serde(default = "default_segment")]
    pub segment_s: f64,
    /// Broadcaster: stream MPEG-TS to the origin for low-latency packaging (LL-HLS: 200 ms
    /// parts in 1 s segments, cut-through relaying) instead of pushing HLS segments.
    #[serde(default)]
    pub low_latency: bool,
    /// Viewer: the hosts it downloads from (one, or several at once).
    #[serde(default)]
    pub watch: Vec<String>,
    /// Viewer: `alternate`, `hedge` or `adaptive`.
    pub mode: Option<String>,
    /// Viewer: independent viewers on this host (one `relaycast watch --viewers N`).
    #[serde(default = "one")]
    pub count: usize,
    /// Viewer: label in the QoE log and report [default: host name].
    pub label: Option<String>,
    /// Viewer: treat `watch` as POP candidates (`relaycast watch --pop`): probe them all and
    /// watch the best (RTT plus its latency to the origin) instead of all at once.
    #[serde(default)]
    pub pop: bool,
}

fn default_bitrate() -> u64 {
    1000
}

fn default_segment() -> f64 {
    1.0
}

fn one() -> usize {
    1
}

/// Something that happens at a time during the run.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Seconds after the viewers started.
    pub at_s: f64,
    /// The host it concerns.
    pub host: String,
    /// Set the host's egress cap to viewers (kbit/s, 0 = none).
    pub egress_kbps: Option<u64>,
}

impl Topology {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let t: Topology = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        t.validate().with_context(|| format!("checking {}", path.display()))?;
        Ok(t)
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    fn validate(&self) -> Result<()> {
        let mut names = BTreeSet::new();
        for h in &self.hosts {
            if !names.insert(h.name.as_str()) {
                bail!("host {} is declared twice", h.name);
            }
            if relaycast_core::Name::new(h.name.as_str()).is_err() {
                bail!("host name {:?} must be letters, digits, '-', '_' or '.'", h.name);
            }
            if !(0.0..1.0).contains(&h.link.loss) || h.link.delay_ms < 0.0 {
                bail!("host {}: loss must be in [0, 1) and delay_ms ≥ 0", h.name);
            }
        }
        let server = |name: &str, what: &str, of: &str| -> Result<()> {
            match self.host(name).map(|h| &h.role) {
                Some(Role::Origin | Role::Relay) => Ok(()),
                Some(_) => bail!("{of}: {what} {name} is not an origin or relay"),
                None => bail!("{of}: {what} {name} is not a host"),
            }
        };
        for h in &self.hosts {
            match h.role {
                Role::Relay => {
                    server(h.parent.as_deref().context(format!("relay {} needs a parent", h.name))?, "parent", &h.name)?
                }
                Role::Broadcaster => {
                    let to = h.push_to.as_deref().context(format!("broadcaster {} needs push_to", h.name))?;
                    if self.host(to).map(|x| &x.role) != Some(&Role::Origin) {
                        bail!("broadcaster {}: push_to {to} is not an origin", h.name);
                    }
                }
                Role::Viewer => {
                    if h.watch.is_empty() {
                        bail!("viewer {} watches nothing (watch = [\"host\", ...])", h.name);
                    }
                    for w in &h.watch {
                        server(w, "watched host", &h.name)?;
                    }
                }
                Role::Origin => {}
            }
        }
        if self.hosts.iter().filter(|h| h.role == Role::Origin).count() != 1 {
            bail!("a lab has exactly one origin");
        }
        for e in &self.events {
            if self.host(&e.host).is_none() {
                bail!("event at {} s: no host {}", e.at_s, e.host);
            }
        }
        if let Some(sweep) = &self.sweep {
            for h in &sweep.hosts {
                if self.host(h).map(|x| &x.role) != Some(&Role::Viewer) {
                    bail!("sweep: {h} is not a viewer host");
                }
            }
            if sweep.counts.is_empty() || sweep.counts.contains(&0) {
                bail!("sweep: counts must be a non-empty list of positive numbers");
            }
        }
        Ok(())
    }

    /// Origin first, then relays in an order where every parent comes before its children.
    pub fn servers_in_start_order(&self) -> Vec<&Host> {
        let mut out: Vec<&Host> = self.hosts.iter().filter(|h| h.role == Role::Origin).collect();
        let mut pending: Vec<&Host> = self.hosts.iter().filter(|h| h.role == Role::Relay).collect();
        while !pending.is_empty() {
            let before = pending.len();
            pending.retain(|h| {
                let ready = out.iter().any(|o| Some(o.name.as_str()) == h.parent.as_deref());
                if ready {
                    out.push(h);
                }
                !ready
            });
            if pending.len() == before {
                break; // a parent cycle; validate() found no missing parent, so report it as is
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_topologies_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lab");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let t = Topology::load(&path).unwrap_or_else(|e| panic!("{e:#}"));
                assert_eq!(
                    t.servers_in_start_order().len(),
                    t.hosts.iter().filter(|h| matches!(h.role, Role::Origin | Role::Relay)).count()
                );
                n += 1;
            }
        }
        assert!(n >= 3, "lab/ ships the seed topologies");
    }

    #[test]
    fn mistakes_are_explained() {
        let bad = r#"
            name = "x"
            duration_s = 10
            [[host]]
            name = "o"
            role = "origin"
            [[host]]
            name = "v"
            role = "viewer"
            watch = ["nobody"]
        "#;
        let t: Topology = toml::from_str(bad).unwrap();
        assert!(format!("{:#}", t.validate().unwrap_err()).contains("nobody is not a host"));
    }
}
