//! The tracker's side of sharing (F51, F52): which peers a viewer is told about, and whether
//! it should skip the CDN path and go to the ingest-side node directly.
//!
//! Locality first: peers in the viewer's region, then by the RTT the viewer measured to them
//! (unknown RTTs last), then a per-pair hash so that equal candidates are spread over the swarm
//! instead of every viewer getting the same first few (which would make those few the swarm's
//! only uploaders).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::media::Name;

/// A viewer as the tracker knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// Viewer id (random per viewer, chosen by the viewer).
    pub id: u64,
    pub region: String,
    /// QUIC address other viewers dial.
    pub addr: String,
}

/// Rank `candidates` for viewer `me` (in `region`, having measured `rtt_ms` to some of them by
/// id) and keep the best `limit`; `me` itself is never listed.
pub fn rank_peers<'a>(
    me: u64,
    region: &str,
    rtt_ms: &BTreeMap<u64, f64>,
    candidates: impl IntoIterator<Item = &'a PeerRecord>,
    limit: usize,
) -> Vec<PeerRecord> {
    let mut list: Vec<&PeerRecord> = candidates.into_iter().filter(|p| p.id != me).collect();
    let key = |p: &PeerRecord| {
        let other_region = p.region != region || region.is_empty();
        let rtt = rtt_ms.get(&p.id).copied().filter(|r| r.is_finite()).unwrap_or(f64::INFINITY);
        (other_region, rtt, mix(me ^ p.id.rotate_left(17)))
    };
    list.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1)).then(ka.2.cmp(&kb.2))
    });
    list.into_iter().take(limit).cloned().collect()
}

/// A delivery node as the tracker knows it, for the bypass decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRecord {
    pub name: String,
    /// True for the ingest-side node (the origin).
    pub ingest: bool,
    pub region: String,
    /// HTTP address viewers can fetch from.
    pub http: Option<String>,
}

/// The direct-path bypass (F52): a viewer in the broadcaster's region is sent to the
/// ingest-side node itself rather than through the far CDN path. `None` when the viewer is
/// elsewhere (or the region is unknown), so it keeps the edge it was given.
pub fn bypass_target<'a>(region: &str, nodes: impl IntoIterator<Item = &'a NodeRecord>) -> Option<&'a NodeRecord> {
    if region.is_empty() {
        return None;
    }
    nodes.into_iter().find(|n| n.ingest && n.region == region && n.http.is_some())
}

/// SplitMix64 finaliser: a cheap, well-spread deterministic hash.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64, region: &str) -> PeerRecord {
        PeerRecord { id, region: region.into(), addr: format!("127.0.0.1:{}", 1000 + id) }
    }

    #[test]
    fn same_region_then_rtt_then_spread() {
        let all: Vec<_> = (1..=10).map(|i| rec(i, if i % 2 == 0 { "eu" } else { "us" })).collect();
        let rtt = BTreeMap::from([(4, 50.0), (6, 5.0), (3, 1.0)]);
        let got: Vec<u64> = rank_peers(2, "eu", &rtt, &all, 4).iter().map(|p| p.id).collect();
        assert_eq!(got.len(), 4);
        assert_eq!(&got[..2], &[6, 4], "same region, lowest RTT first");
        assert!(got[2..].iter().all(|id| id % 2 == 0 && *id != 2), "then the rest of the region, never me");
        // Different viewers get different orders among equals.
        let a: Vec<u64> = rank_peers(100, "x", &BTreeMap::new(), &all, 3).iter().map(|p| p.id).collect();
        let b: Vec<u64> = rank_peers(200, "x", &BTreeMap::new(), &all, 3).iter().map(|p| p.id).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn bypass_only_in_the_ingest_region() {
        let nodes = [
            NodeRecord { name: "origin".into(), ingest: true, region: "eu".into(), http: Some("o:1".into()) },
            NodeRecord { name: "edge".into(), ingest: false, region: "us".into(), http: Some("e:1".into()) },
        ];
        assert_eq!(bypass_target("eu", &nodes).map(|n| n.name.as_str()), Some("origin"));
        assert_eq!(bypass_target("us", &nodes), None);
        assert_eq!(bypass_target("", &nodes), None);
    }
}

/// What a P2P viewer announces.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PeerAnnounce {
    /// Random per viewer.
    pub id: u64,
    pub channel: Name,
    pub rendition: Name,
    #[serde(default)]
    pub region: String,
    /// QUIC address peers dial.
    pub addr: String,
    /// RTTs the viewer measured to peers, by peer id.
    #[serde(default)]
    pub rtt_ms: BTreeMap<u64, f64>,
    /// Segment bytes this viewer has taken from peers and from servers since it joined, for
    /// the tracker's offload figure.
    #[serde(default)]
    pub peer_bytes: u64,
    #[serde(default)]
    pub edge_bytes: u64,
}

/// The tracker's answer.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PeerAnnounceReply {
    pub peers: Vec<PeerRecord>,
    /// This viewer's position in the swarm (0-based, by id) and the swarm's size.
    pub position: usize,
    pub swarm_size: usize,
    pub refresh_ms: u64,
    /// The origin's Ed25519 public key, hex.
    pub origin_key: Option<String>,
    /// Base URL of the ingest-side node when the viewer is in its region (F52).
    pub bypass: Option<String>,
}

/// A viewer's report of a peer that sent bytes failing the origin's signature.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PeerReport {
    pub reporter: u64,
    pub peer: u64,
    #[serde(default)]
    pub reason: String,
}
