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
    /// Random faults through the run, drawn from a seed (see `chaos.rs`).
    pub chaos: Option<Chaos>,
}

/// Faults drawn at random, one at a time: a quiet gap, then a fault on one host for a while.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Chaos {
    /// The same seed gives the same faults at the same times.
    pub seed: u64,
    /// Quiet seconds before each fault, drawn from [min, max].
    pub gap_s: [f64; 2],
    /// How long each fault lasts, drawn from [min, max].
    pub for_s: [f64; 2],
    /// Hosts that may be killed (kill -9) and restarted: relays, the origin, the tracker.
    #[serde(default)]
    pub kill: Vec<String>,
    /// Hosts whose link may be cut both ways.
    #[serde(default)]
    pub partition: Vec<String>,
    /// Hosts whose link may lose datagrams at `loss_rate` for a while.
    #[serde(default)]
    pub loss: Vec<String>,
    #[serde(default = "ten_percent")]
    pub loss_rate: f64,
}

fn ten_percent() -> f64 {
    0.1
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
    /// The tracker and traffic manager: servers announce to it and report load; viewers with
    /// `steer` or `p2p` use it. Its own traffic does not cross the emulated links.
    Tracker,
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
    /// Relay: other servers it links to, parent candidates should the parent fail.
    #[serde(default)]
    pub backup: Vec<String>,
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
    /// Viewer: ask the tracker where to watch (`relaycast watch --steer .../play/CHANNEL`)
    /// instead of `watch`; steered viewers reach edges directly, not through emulated links.
    #[serde(default)]
    pub steer: bool,
    /// Viewer: share segments with other viewers (`--p2p`, through the tracker).
    #[serde(default)]
    pub p2p: bool,
    /// Servers and viewers: the region announced to the tracker.
    #[serde(default = "default_region")]
    pub region: String,
}

fn default_region() -> String {
    "lab".into()
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
#[derive(Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Seconds after the viewers started.
    pub at_s: f64,
    /// The host it concerns.
    pub host: String,
    /// Set the host's egress cap to viewers (kbit/s, 0 = none).
    pub egress_kbps: Option<u64>,
    /// A fault on the host, lasting `for_s`.
    pub fault: Option<Fault>,
    /// How long the fault lasts, seconds.
    #[serde(default)]
    pub for_s: f64,
    /// Loss fault: datagram loss probability meanwhile.
    #[serde(default = "ten_percent")]
    pub loss: f64,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// kill -9 the host's process, start it again (same ports) after `for_s`.
    Kill,
    /// Cut the host's link both ways: datagrams dropped, stream bytes held.
    Partition,
    /// Datagram loss on the host's link.
    Loss,
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
                    server(
                        h.parent.as_deref().context(format!("relay {} needs a parent", h.name))?,
                        "parent",
                        &h.name,
                    )?;
                    for b in &h.backup {
                        server(b, "backup", &h.name)?;
                    }
                }
                Role::Broadcaster => {
                    let to = h.push_to.as_deref().context(format!("broadcaster {} needs push_to", h.name))?;
                    if self.host(to).map(|x| &x.role) != Some(&Role::Origin) {
                        bail!("broadcaster {}: push_to {to} is not an origin", h.name);
                    }
                }
                Role::Viewer => {
                    if h.watch.is_empty() && !h.steer {
                        bail!("viewer {} watches nothing (watch = [\"host\", ...] or steer = true)", h.name);
                    }
                    for w in &h.watch {
                        server(w, "watched host", &h.name)?;
                    }
                }
                Role::Origin | Role::Tracker => {}
            }
            if (h.steer || h.p2p) && self.tracker().is_none() {
                bail!("viewer {}: steer and p2p need a host with role = \"tracker\"", h.name);
            }
        }
        if self.hosts.iter().filter(|h| h.role == Role::Origin).count() != 1 {
            bail!("a lab has exactly one origin");
        }
        if self.hosts.iter().filter(|h| h.role == Role::Tracker).count() > 1 {
            bail!("a lab has at most one tracker");
        }
        for e in &self.events {
            self.check_event(e)?;
        }
        if let Some(chaos) = &self.chaos {
            self.check_chaos(chaos)?;
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

    /// The tracker host, if the lab has one.
    pub fn tracker(&self) -> Option<&Host> {
        self.hosts.iter().find(|h| h.role == Role::Tracker)
    }

    fn check_event(&self, e: &Event) -> Result<()> {
        let Some(h) = self.host(&e.host) else { bail!("event at {} s: no host {}", e.at_s, e.host) };
        match e.fault {
            Some(Fault::Kill) if h.role == Role::Viewer || h.role == Role::Broadcaster => {
                bail!("event at {} s: only servers and the tracker can be killed, not {}", e.at_s, e.host)
            }
            Some(Fault::Partition | Fault::Loss) if h.role == Role::Tracker => {
                bail!("event at {} s: the tracker's traffic is not emulated; kill it instead", e.at_s)
            }
            Some(_) if e.for_s.is_nan() || e.for_s <= 0.0 => bail!("event at {} s: a fault needs for_s > 0", e.at_s),
            _ => Ok(()),
        }
    }

    fn check_chaos(&self, c: &Chaos) -> Result<()> {
        let range_ok = |r: [f64; 2]| r[0] > 0.0 && r[0] <= r[1];
        if !range_ok(c.gap_s) || !range_ok(c.for_s) {
            bail!("chaos: gap_s and for_s are [min, max] with 0 < min <= max");
        }
        if c.kill.is_empty() && c.partition.is_empty() && c.loss.is_empty() {
            bail!("chaos: list hosts under kill, partition or loss");
        }
        let lists = [(Fault::Kill, &c.kill), (Fault::Partition, &c.partition), (Fault::Loss, &c.loss)];
        for (fault, hosts) in lists {
            for host in hosts {
                let e = Event {
                    at_s: 0.0,
                    host: host.clone(),
                    egress_kbps: None,
                    fault: Some(fault),
                    for_s: 1.0,
                    loss: 0.1,
                };
                self.check_event(&e).context("chaos")?;
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
                let started = |name: &String| out.iter().any(|o| &o.name == name);
                let ready = h.parent.iter().chain(&h.backup).all(started);
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
