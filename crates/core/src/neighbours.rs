//! The tracker's neighbour policy (F10): which nodes each node should link to, from a topology
//! file or automatically (k candidates by region, then measured RTT), and which side dials.
//!
//! Pure functions over a registry snapshot: the tracker keeps only soft state (rebuilt from the
//! nodes' periodic announcements), so any tracker instance computes the same answer.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// What a node tells the tracker about itself, every heartbeat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    pub name: String,
    /// `origin` or `relay`.
    pub role: String,
    /// Free-form region label (e.g. `eu-west`); nodes in the same region are preferred.
    #[serde(default)]
    pub region: String,
    /// QUIC address other nodes can dial (`host:port`); a leaf edge may have none.
    #[serde(default)]
    pub quic: Option<String>,
    /// HTTP address viewers use (`host:port`).
    #[serde(default)]
    pub http: Option<String>,
    /// RTTs this node measured to other nodes, by name, in milliseconds.
    #[serde(default)]
    pub rtt_ms: BTreeMap<String, f64>,
}

/// One neighbour in the tracker's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighbourEntry {
    pub name: String,
    pub quic: Option<String>,
    /// Whether the asking node dials this neighbour (otherwise the neighbour dials it), so each
    /// pair of nodes has exactly one connection.
    pub dial: bool,
}

/// How the tracker picks neighbours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NeighbourPolicy {
    /// From a topology file: name → neighbour names (made symmetric).
    Topology(BTreeMap<String, Vec<String>>),
    /// Automatic: each node's `k` best candidates (same region first, then lowest measured RTT,
    /// then a stable hash order), made symmetric.
    Auto { k: usize },
}

/// The neighbours of `name` among the registered nodes.
pub fn neighbours_of(
    registry: &BTreeMap<String, Announcement>,
    name: &str,
    policy: &NeighbourPolicy,
) -> Vec<NeighbourEntry> {
    let Some(me) = registry.get(name) else { return Vec::new() };
    let linked: BTreeSet<&str> = match policy {
        NeighbourPolicy::Topology(map) => {
            let mut set: BTreeSet<&str> =
                map.get(name).map(|v| v.iter().map(String::as_str).collect()).unwrap_or_default();
            for (other, list) in map {
                if list.iter().any(|n| n == name) {
                    set.insert(other.as_str());
                }
            }
            set
        }
        NeighbourPolicy::Auto { k } => {
            let mut set: BTreeSet<&str> = best_candidates(registry, me, *k).into_iter().collect();
            for other in registry.values().filter(|o| o.name != me.name) {
                if best_candidates(registry, other, *k).contains(&me.name.as_str()) {
                    set.insert(other.name.as_str());
                }
            }
            set
        }
    };
    linked
        .into_iter()
        .filter(|n| *n != name)
        .filter_map(|n| registry.get(n))
        .filter_map(|other| {
            let dial = dials(me, other)?;
            Some(NeighbourEntry { name: other.name.clone(), quic: other.quic.clone(), dial })
        })
        .collect()
}

/// Whether `me` dials `other`; `None` when neither can reach the other (no QUIC address).
fn dials(me: &Announcement, other: &Announcement) -> Option<bool> {
    match (me.quic.is_some(), other.quic.is_some()) {
        (false, false) => None,
        (false, true) => Some(true),
        (true, false) => Some(false),
        // Relays dial the origin; between relays, the greater name dials.
        (true, true) if other.role == "origin" => Some(true),
        (true, true) if me.role == "origin" => Some(false),
        (true, true) => Some(me.name > other.name),
    }
}

/// `me`'s k best candidates: same region first, then lowest measured RTT (either direction),
/// then a stable pseudo-random order (so load spreads, identically on every tracker).
fn best_candidates<'a>(registry: &'a BTreeMap<String, Announcement>, me: &Announcement, k: usize) -> Vec<&'a str> {
    let mut others: Vec<&Announcement> = registry.values().filter(|o| o.name != me.name).collect();
    let rtt =
        |o: &Announcement| me.rtt_ms.get(&o.name).or_else(|| o.rtt_ms.get(&me.name)).copied().unwrap_or(f64::INFINITY);
    others.sort_by(|a, b| {
        let region = |o: &Announcement| o.region != me.region;
        region(a)
            .cmp(&region(b))
            .then(rtt(a).total_cmp(&rtt(b)))
            .then(pair_hash(&me.name, &a.name).cmp(&pair_hash(&me.name, &b.name)))
    });
    others.into_iter().filter(|o| dials(me, o).is_some()).take(k).map(|o| o.name.as_str()).collect()
}

fn pair_hash(a: &str, b: &str) -> u64 {
    crate::node::node_id(&format!("{a}\u{0}{b}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, role: &str, region: &str, quic: bool) -> (String, Announcement) {
        let a = Announcement {
            name: name.into(),
            role: role.into(),
            region: region.into(),
            quic: quic.then(|| format!("{name}:9000")),
            http: None,
            rtt_ms: BTreeMap::new(),
        };
        (name.into(), a)
    }

    #[test]
    fn topology_file_is_made_symmetric_and_each_pair_dials_once() {
        let reg: BTreeMap<_, _> =
            [node("origin", "origin", "", true), node("a", "relay", "", true), node("b", "relay", "", true)].into();
        let map = [("a".to_string(), vec!["origin".to_string(), "b".to_string()])].into();
        let policy = NeighbourPolicy::Topology(map);
        let a = neighbours_of(&reg, "a", &policy);
        let b = neighbours_of(&reg, "b", &policy);
        let origin = neighbours_of(&reg, "origin", &policy);
        assert_eq!(
            a.iter().map(|n| (n.name.as_str(), n.dial)).collect::<Vec<_>>(),
            vec![("b", false), ("origin", true)]
        );
        assert_eq!(b.iter().map(|n| (n.name.as_str(), n.dial)).collect::<Vec<_>>(), vec![("a", true)]);
        assert_eq!(origin.iter().map(|n| (n.name.as_str(), n.dial)).collect::<Vec<_>>(), vec![("a", false)]);
        assert!(neighbours_of(&reg, "unknown", &policy).is_empty());
    }

    #[test]
    fn auto_prefers_same_region_then_lower_rtt() {
        let mut reg: BTreeMap<_, _> = [
            node("origin", "origin", "eu", true),
            node("eu1", "relay", "eu", true),
            node("eu2", "relay", "eu", true),
            node("us1", "relay", "us", true),
            node("us2", "relay", "us", true),
        ]
        .into();
        reg.get_mut("us1").unwrap().rtt_ms = [("us2".to_string(), 5.0), ("origin".to_string(), 90.0)].into();
        let policy = NeighbourPolicy::Auto { k: 1 };
        let us1: Vec<String> = neighbours_of(&reg, "us1", &policy).into_iter().map(|n| n.name).collect();
        assert!(us1.contains(&"us2".to_string()), "same region first: {us1:?}");
        let eu1: Vec<String> = neighbours_of(&reg, "eu1", &policy).into_iter().map(|n| n.name).collect();
        assert!(eu1.iter().all(|n| n != "us1" && n != "us2") || eu1.len() > 1, "{eu1:?}");
    }

    #[test]
    fn leaves_without_quic_dial_and_are_never_dialled() {
        let reg: BTreeMap<_, _> = [node("origin", "origin", "", true), node("leaf", "relay", "", false)].into();
        let policy = NeighbourPolicy::Auto { k: 3 };
        assert!(neighbours_of(&reg, "leaf", &policy)[0].dial);
        assert!(!neighbours_of(&reg, "origin", &policy)[0].dial);
    }
}

/// The tracker's answer to an announcement.
#[derive(Serialize, Deserialize, Debug)]
pub struct AnnounceReply {
    pub neighbours: Vec<NeighbourEntry>,
    pub heartbeat_ms: u64,
}
