//! The WebTorrent tracker protocol (F54), as sans-IO policy: browsers running p2p-media-loader
//! join a swarm (one info hash per rendition) over a WebSocket and send WebRTC offers with their
//! announcements; the tracker hands each offer to one other peer of the swarm and hands the
//! answer back. The messages are those of `bittorrent-tracker` (one JSON object per WebSocket
//! text message; docs/P2P.md, "Browsers"), so stock clients connect.
//!
//! Where this tracker differs from bittorrent-tracker and aquatic, which pick the peers for
//! offers uniformly at random: the nearest first — same region, then the same network, then the
//! closest round-trip time to the tracker (a peer as far from the tracker as I am is more likely
//! near me than one that is not) — with a per-pair hash spreading equals over the swarm, as
//! [`super::peers::rank_peers`] does for the CLI viewers. Peers reported for bad bytes by enough
//! distinct viewers are neither offered to others nor relayed.
//!
//! Everything a client can grow is bounded: offers per announcement, peers per swarm, swarms,
//! messages per connection per window (a flood closes the connection), silent peers and idle
//! connections expire. The shell owns the sockets, JSON and the clock.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::peers::mix;

/// A connection, as the shell numbers them.
pub type ConnId = u64;

/// A 20-byte id (info hash, peer id, offer id), carried in JSON as a string of 20 characters,
/// each a code point 0–255 (how bittorrent-tracker and aquatic encode binary ids).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id20(pub [u8; 20]);

impl Id20 {
    /// The id as the JSON string carries it.
    pub fn to_latin1(&self) -> String {
        self.0.iter().map(|&b| b as char).collect()
    }

    /// Parse a 20-character string of code points 0–255.
    pub fn from_latin1(s: &str) -> Option<Self> {
        let mut out = [0u8; 20];
        let mut n = 0;
        for c in s.chars() {
            if n == 20 || u32::from(c) > 0xFF {
                return None;
            }
            out[n] = u32::from(c) as u8;
            n += 1;
        }
        (n == 20).then_some(Self(out))
    }

    fn hash64(&self) -> u64 {
        self.0.chunks(8).fold(0, |h, c| mix(h ^ c.iter().fold(0u64, |a, &b| a << 8 | u64::from(b))))
    }
}

impl fmt::Debug for Id20 {
    /// Printable ids (p2p-media-loader's are ASCII) as text, others as hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.iter().all(|b| b.is_ascii_graphic()) {
            write!(f, "{}", self.to_latin1())
        } else {
            self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
        }
    }
}

impl fmt::Display for Id20 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl Serialize for Id20 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_latin1())
    }
}

impl<'de> Deserialize<'de> for Id20 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Id20;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string of 20 characters, each U+0000..U+00FF")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Id20, E> {
                Id20::from_latin1(s).ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(s), &self))
            }
        }
        d.deserialize_str(V)
    }
}

/// A WebRTC session description, relayed as is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sdp {
    #[serde(rename = "type")]
    pub kind: String,
    pub sdp: String,
}

/// One offer in an announcement.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct OfferIn {
    pub offer: Sdp,
    pub offer_id: Id20,
}

/// An announcement: join or refresh a swarm, maybe with offers, or answer someone's offer.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Announce {
    pub info_hash: Id20,
    pub peer_id: Id20,
    #[serde(default)]
    pub numwant: Option<usize>,
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub left: Option<f64>,
    #[serde(default)]
    pub offers: Vec<OfferIn>,
    #[serde(default)]
    pub answer: Option<Sdp>,
    #[serde(default)]
    pub to_peer_id: Option<Id20>,
    #[serde(default)]
    pub offer_id: Option<Id20>,
}

/// One info hash or several.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(Id20),
    Many(Vec<Id20>),
}

/// A message from a client.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Incoming {
    Announce(Announce),
    Scrape {
        #[serde(default)]
        info_hash: Option<OneOrMany>,
    },
}

/// Peers counted in a swarm: seeders (complete) and the rest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub complete: usize,
    pub incomplete: usize,
    pub downloaded: usize,
}

/// A message to a client.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Outgoing {
    /// The answer to an announcement.
    Announced {
        action: &'static str,
        info_hash: Id20,
        complete: usize,
        incomplete: usize,
        interval: u64,
    },
    /// Someone's offer, for this peer to answer.
    Offer {
        action: &'static str,
        offer: Sdp,
        offer_id: Id20,
        peer_id: Id20,
        info_hash: Id20,
    },
    /// The answer to this peer's offer.
    Answer {
        action: &'static str,
        answer: Sdp,
        offer_id: Id20,
        peer_id: Id20,
        info_hash: Id20,
    },
    Scraped {
        action: &'static str,
        files: BTreeMap<Id20, Counts>,
    },
    Failure {
        #[serde(rename = "failure reason")]
        reason: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        info_hash: Option<Id20>,
    },
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Send(ConnId, Outgoing),
    /// Close the connection; the reason goes to the log.
    Close(ConnId, String),
}

/// Where a connection is, for choosing whom its offers go to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Locality {
    /// The region the page says it is in (`?region=` on the announce URL); empty if unknown.
    pub region: String,
    /// The client's network (e.g. its address's /24); empty if unknown.
    pub network: String,
}

/// Limits and timings.
#[derive(Clone, Debug)]
pub struct WtConfig {
    /// Offers relayed per announcement at most (aquatic: 10).
    pub max_offers: usize,
    pub max_peers_per_swarm: usize,
    pub max_swarms: usize,
    /// Longest SDP relayed, in bytes.
    pub max_sdp_bytes: usize,
    /// How often clients are told to announce again.
    pub interval: Duration,
    /// A peer silent this long leaves its swarm; a connection silent this long is closed.
    pub peer_timeout: Duration,
    /// Messages one connection may send per `flood_window`; past it, it is closed.
    pub flood_messages: u32,
    pub flood_window: Duration,
    /// Distinct reporters after which a peer is no longer offered or relayed.
    pub report_threshold: usize,
}

impl Default for WtConfig {
    fn default() -> Self {
        Self {
            max_offers: 10,
            max_peers_per_swarm: 1000,
            max_swarms: 10_000,
            max_sdp_bytes: 16 * 1024,
            interval: Duration::from_secs(120),
            peer_timeout: Duration::from_secs(180),
            flood_messages: 100,
            flood_window: Duration::from_secs(10),
            report_threshold: 2,
        }
    }
}

struct Conn {
    locality: Locality,
    /// The tracker's round trip to this client (WebSocket ping), once measured.
    rtt_ms: Option<f64>,
    last_seen: Instant,
    window_start: Instant,
    window_messages: u32,
    /// (info hash, peer id) this connection announced.
    joined: BTreeSet<(Id20, Id20)>,
}

struct Member {
    conn: ConnId,
    seeder: bool,
    last_seen: Instant,
}

/// A peer as the tracker's JSON view shows it: id, locality, excluded for bad bytes.
pub type PeerView = (Id20, Locality, bool);

/// The tracker: connections, swarms and reports.
pub struct WtTracker {
    config: WtConfig,
    conns: BTreeMap<ConnId, Conn>,
    swarms: BTreeMap<Id20, BTreeMap<Id20, Member>>,
    /// Accused peer → distinct reporters.
    reports: BTreeMap<Id20, BTreeSet<String>>,
}

const ANNOUNCE: &str = "announce";

impl WtTracker {
    pub fn new(config: WtConfig) -> Self {
        Self { config, conns: BTreeMap::new(), swarms: BTreeMap::new(), reports: BTreeMap::new() }
    }

    pub fn config(&self) -> &WtConfig {
        &self.config
    }

    /// A client connected.
    pub fn connect(&mut self, now: Instant, conn: ConnId, locality: Locality) {
        let c = Conn {
            locality,
            rtt_ms: None,
            last_seen: now,
            window_start: now,
            window_messages: 0,
            joined: BTreeSet::new(),
        };
        self.conns.insert(conn, c);
    }

    /// The shell measured its round trip to a client.
    pub fn set_rtt(&mut self, conn: ConnId, rtt_ms: f64) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.rtt_ms = Some(rtt_ms);
        }
    }

    /// A client's connection ended: it leaves every swarm it joined.
    pub fn disconnect(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else { return };
        for (hash, peer) in c.joined {
            self.leave(hash, peer, conn);
        }
    }

    /// A message that did not parse: a failure answer (the connection stays, as a client with a
    /// newer message kind should not be cut off), counted against the flood limit.
    pub fn malformed(&mut self, now: Instant, conn: ConnId, why: &str) -> Vec<Action> {
        if let Some(close) = self.count_message(now, conn) {
            return vec![close];
        }
        vec![Action::Send(conn, failure(format!("malformed message: {why}"), None))]
    }

    /// A message from a client.
    pub fn handle(&mut self, now: Instant, conn: ConnId, msg: Incoming) -> Vec<Action> {
        if let Some(close) = self.count_message(now, conn) {
            return vec![close];
        }
        match msg {
            Incoming::Announce(a) => self.announce(now, conn, a),
            Incoming::Scrape { info_hash } => vec![Action::Send(conn, self.scrape(info_hash))],
        }
    }

    /// Forget silent peers and empty swarms; returns the connections idle past the timeout,
    /// to be closed (and then [`Self::disconnect`]ed).
    pub fn sweep(&mut self, now: Instant) -> Vec<ConnId> {
        let timeout = self.config.peer_timeout;
        let mut gone = Vec::new();
        for (hash, members) in &mut self.swarms {
            members.retain(|peer, m| {
                let keep = now.duration_since(m.last_seen) < timeout;
                if !keep {
                    gone.push((m.conn, *hash, *peer));
                }
                keep
            });
        }
        for (conn, hash, peer) in gone {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.joined.remove(&(hash, peer));
            }
        }
        self.swarms.retain(|_, m| !m.is_empty());
        let live: BTreeSet<Id20> = self.swarms.values().flat_map(|m| m.keys().copied()).collect();
        self.reports.retain(|peer, _| live.contains(peer));
        self.conns.iter().filter(|(_, c)| now.duration_since(c.last_seen) >= timeout).map(|(id, _)| *id).collect()
    }

    /// A viewer (`reporter`, its own label) says `peer` sent bytes that fail the origin's
    /// signature. Returns the distinct reporters so far, or `None` if `peer` is in no swarm.
    pub fn report(&mut self, reporter: &str, peer: Id20) -> Option<usize> {
        if !self.swarms.values().any(|m| m.contains_key(&peer)) {
            return None;
        }
        let by = self.reports.entry(peer).or_default();
        if by.len() < 64 {
            by.insert(reporter.chars().take(64).collect());
        }
        Some(by.len())
    }

    /// Whether `peer` is reported by enough viewers to be left out.
    pub fn excluded(&self, peer: &Id20) -> bool {
        self.reports.get(peer).is_some_and(|r| r.len() >= self.config.report_threshold.max(1))
    }

    /// Swarms and peers, for metrics.
    pub fn size(&self) -> (usize, usize) {
        (self.swarms.len(), self.swarms.values().map(BTreeMap::len).sum())
    }

    /// Connections open.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Each swarm's peers with their locality and whether they are left out, for the tracker's
    /// JSON view.
    pub fn swarms(&self) -> Vec<(Id20, Vec<PeerView>)> {
        self.swarms
            .iter()
            .map(|(hash, members)| {
                let peers = members
                    .iter()
                    .map(|(peer, m)| {
                        let loc = self.conns.get(&m.conn).map(|c| c.locality.clone()).unwrap_or_default();
                        (*peer, loc, self.excluded(peer))
                    })
                    .collect();
                (*hash, peers)
            })
            .collect()
    }

    fn count_message(&mut self, now: Instant, conn: ConnId) -> Option<Action> {
        let Some(c) = self.conns.get_mut(&conn) else {
            return Some(Action::Close(conn, "message on a connection the tracker does not know".into()));
        };
        c.last_seen = now;
        if now.duration_since(c.window_start) >= self.config.flood_window {
            c.window_start = now;
            c.window_messages = 0;
        }
        c.window_messages += 1;
        (c.window_messages > self.config.flood_messages).then(|| {
            let why = format!(
                "more than {} messages in {} s",
                self.config.flood_messages,
                self.config.flood_window.as_secs_f64()
            );
            Action::Close(conn, why)
        })
    }

    fn announce(&mut self, now: Instant, conn: ConnId, a: Announce) -> Vec<Action> {
        let hash = a.info_hash;
        if let Some(why) = self.refuse(&a) {
            return vec![Action::Send(conn, failure(why, Some(hash)))];
        }
        if a.event.as_deref() == Some("stopped") {
            self.leave(hash, a.peer_id, conn);
            if let Some(c) = self.conns.get_mut(&conn) {
                c.joined.remove(&(hash, a.peer_id));
            }
            return vec![Action::Send(conn, self.announced(hash))];
        }
        if let Err(why) = self.join(now, conn, &a) {
            return vec![Action::Send(conn, failure(why, Some(hash)))];
        }
        let mut out = Vec::new();
        if let Some(answer) = a.answer {
            // Answers get no reply; they go to the offerer if it is still here.
            let (Some(to), Some(offer_id)) = (a.to_peer_id, a.offer_id) else {
                return vec![Action::Send(conn, failure("an answer needs to_peer_id and offer_id".into(), Some(hash)))];
            };
            if let Some(m) = self.swarms.get(&hash).and_then(|s| s.get(&to))
                && !self.excluded(&a.peer_id)
            {
                let msg = Outgoing::Answer { action: ANNOUNCE, answer, offer_id, peer_id: a.peer_id, info_hash: hash };
                out.push(Action::Send(m.conn, msg));
            }
            return out;
        }
        out.push(Action::Send(conn, self.announced(hash)));
        if !self.excluded(&a.peer_id) {
            let want = a.numwant.unwrap_or(a.offers.len()).min(self.config.max_offers);
            let targets = self.nearest(conn, hash, a.peer_id, want.min(a.offers.len()));
            for (offer, (_, to_conn)) in a.offers.into_iter().zip(targets) {
                let msg = Outgoing::Offer {
                    action: ANNOUNCE,
                    offer: offer.offer,
                    offer_id: offer.offer_id,
                    peer_id: a.peer_id,
                    info_hash: hash,
                };
                out.push(Action::Send(to_conn, msg));
            }
        }
        out
    }

    /// Why an announcement is refused before it changes anything, if it is.
    fn refuse(&self, a: &Announce) -> Option<String> {
        let sdp_len = a.offers.iter().map(|o| o.offer.sdp.len()).chain(a.answer.iter().map(|s| s.sdp.len())).max();
        if sdp_len.is_some_and(|l| l > self.config.max_sdp_bytes) {
            return Some(format!("session description longer than {} bytes", self.config.max_sdp_bytes));
        }
        if a.offers.len() > 4 * self.config.max_offers {
            return Some(format!(
                "{} offers in one announcement (at most {} are relayed)",
                a.offers.len(),
                self.config.max_offers
            ));
        }
        None
    }

    /// Add or refresh the announcing peer (a peer id seen on another connection moves here: the
    /// client reconnected).
    fn join(&mut self, now: Instant, conn: ConnId, a: &Announce) -> Result<(), String> {
        let hash = a.info_hash;
        if !self.swarms.contains_key(&hash) && self.swarms.len() >= self.config.max_swarms {
            return Err(format!("the tracker is full ({} swarms)", self.config.max_swarms));
        }
        let members = self.swarms.entry(hash).or_default();
        let seeder = a.event.as_deref() == Some("completed") || a.left == Some(0.0);
        let full = members.len() >= self.config.max_peers_per_swarm;
        let moved_from = match members.get_mut(&a.peer_id) {
            Some(m) => {
                let old = (m.conn != conn).then_some(m.conn);
                m.conn = conn;
                m.last_seen = now;
                m.seeder |= seeder;
                old
            }
            None if full => {
                let full = format!("this swarm is full ({} peers): play from the CDN", self.config.max_peers_per_swarm);
                if members.is_empty() {
                    self.swarms.remove(&hash);
                }
                return Err(full);
            }
            None => {
                members.insert(a.peer_id, Member { conn, seeder, last_seen: now });
                None
            }
        };
        if let Some(old) = moved_from.and_then(|old| self.conns.get_mut(&old)) {
            old.joined.remove(&(hash, a.peer_id));
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.joined.insert((hash, a.peer_id));
        }
        Ok(())
    }

    fn leave(&mut self, hash: Id20, peer: Id20, conn: ConnId) {
        if let Some(members) = self.swarms.get_mut(&hash) {
            if members.get(&peer).is_some_and(|m| m.conn == conn) {
                members.remove(&peer);
            }
            if members.is_empty() {
                self.swarms.remove(&hash);
            }
        }
    }

    fn announced(&self, hash: Id20) -> Outgoing {
        let c = self.counts(&hash);
        Outgoing::Announced {
            action: ANNOUNCE,
            info_hash: hash,
            complete: c.complete,
            incomplete: c.incomplete,
            interval: self.config.interval.as_secs(),
        }
    }

    fn counts(&self, hash: &Id20) -> Counts {
        let members = self.swarms.get(hash);
        let complete = members.map_or(0, |m| m.values().filter(|m| m.seeder).count());
        let all = members.map_or(0, BTreeMap::len);
        Counts { complete, incomplete: all - complete, downloaded: 0 }
    }

    fn scrape(&self, hashes: Option<OneOrMany>) -> Outgoing {
        let hashes = match hashes {
            Some(OneOrMany::One(h)) => vec![h],
            Some(OneOrMany::Many(v)) if v.len() <= 64 => v,
            Some(OneOrMany::Many(v)) => {
                return failure(format!("scrape of {} swarms at once (at most 64)", v.len()), None);
            }
            None => return failure("name the info_hash to scrape".into(), None),
        };
        let files = hashes.into_iter().map(|h| (h, self.counts(&h))).collect();
        Outgoing::Scraped { action: "scrape", files }
    }

    /// Up to `n` other peers of swarm `hash` for `me` (on `conn`) to send offers to, nearest
    /// first: same region, same network, closest round trip to the tracker, then a per-pair
    /// hash. Peers on the same connection and reported ones are left out.
    fn nearest(&self, conn: ConnId, hash: Id20, me: Id20, n: usize) -> Vec<(Id20, ConnId)> {
        let (Some(members), Some(mine)) = (self.swarms.get(&hash), self.conns.get(&conn)) else {
            return Vec::new();
        };
        let key = |peer: &Id20, c: &Conn| {
            let region = mine.locality.region.is_empty() || c.locality.region != mine.locality.region;
            let network = mine.locality.network.is_empty() || c.locality.network != mine.locality.network;
            let rtt = match (mine.rtt_ms, c.rtt_ms) {
                (Some(a), Some(b)) => (a - b).abs(),
                _ => f64::INFINITY,
            };
            (region, network, rtt, mix(me.hash64() ^ peer.hash64().rotate_left(17)))
        };
        let mut list: Vec<_> = members
            .iter()
            .filter(|(peer, m)| **peer != me && m.conn != conn && !self.excluded(peer))
            .filter_map(|(peer, m)| self.conns.get(&m.conn).map(|c| (key(peer, c), *peer, m.conn)))
            .collect();
        list.sort_by(|a, b| {
            let (ka, kb) = (&a.0, &b.0);
            ka.0.cmp(&kb.0).then(ka.1.cmp(&kb.1)).then(ka.2.total_cmp(&kb.2)).then(ka.3.cmp(&kb.3))
        });
        list.into_iter().take(n).map(|(_, peer, c)| (peer, c)).collect()
    }
}

fn failure(reason: String, info_hash: Option<Id20>) -> Outgoing {
    Outgoing::Failure { reason, info_hash }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)] // the tests' one clock read: the epoch of their times
    fn epoch() -> Instant {
        Instant::now()
    }

    fn id(s: &str) -> Id20 {
        Id20::from_latin1(&format!("{s:-<20}")).unwrap()
    }

    fn sdp(kind: &str) -> Sdp {
        Sdp { kind: kind.into(), sdp: "v=0\r\n".into() }
    }

    fn announce(peer: &str, offers: usize) -> Incoming {
        Incoming::Announce(Announce {
            info_hash: id("swarm"),
            peer_id: id(peer),
            numwant: Some(offers),
            event: Some("started".into()),
            left: None,
            offers: (0..offers)
                .map(|i| OfferIn { offer: sdp("offer"), offer_id: id(&format!("{peer}-offer{i}")) })
                .collect(),
            answer: None,
            to_peer_id: None,
            offer_id: None,
        })
    }

    fn loc(region: &str, network: &str) -> Locality {
        Locality { region: region.into(), network: network.into() }
    }

    fn offered_to(actions: &[Action]) -> Vec<ConnId> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(c, Outgoing::Offer { .. }) => Some(*c),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn ids_round_trip_as_latin1_json_strings() {
        let raw = Id20(std::array::from_fn(|i| (i * 13) as u8 | 0x80));
        let json = serde_json::to_string(&raw).unwrap();
        assert_eq!(serde_json::from_str::<Id20>(&json).unwrap(), raw);
        assert!(serde_json::from_str::<Id20>("\"too short\"").is_err());
        assert!(serde_json::from_str::<Id20>("\"0123456789012345678\u{0100}\"").is_err(), "code point above 255");
    }

    #[test]
    fn parses_what_bittorrent_tracker_clients_send() {
        let text = r#"{"action":"announce","info_hash":"aaaaaaaaaaaaaaaaaaaa","peer_id":"-PM0203-abcdefghijkl",
            "numwant":5,"uploaded":0,"downloaded":0,"event":"started",
            "offers":[{"offer":{"type":"offer","sdp":"v=0"},"offer_id":"bbbbbbbbbbbbbbbbbbbb"}]}"#;
        let Incoming::Announce(a) = serde_json::from_str(text).unwrap() else { panic!("not an announce") };
        assert_eq!(a.offers.len(), 1);
        assert_eq!(a.peer_id.to_latin1(), "-PM0203-abcdefghijkl");
        let scrape: Incoming =
            serde_json::from_str(r#"{"action":"scrape","info_hash":["aaaaaaaaaaaaaaaaaaaa"]}"#).unwrap();
        assert!(matches!(scrape, Incoming::Scrape { info_hash: Some(OneOrMany::Many(_)) }));
    }

    #[test]
    fn offers_go_to_the_nearest_peers_and_answers_come_back() {
        let now = epoch();
        let mut t = WtTracker::new(WtConfig::default());
        // Conn 1..=4 in "us", 5..=8 in "eu"; 5 shares the newcomer's network.
        for c in 1..=8u64 {
            let region = if c <= 4 { "us" } else { "eu" };
            let network = if c == 5 { "10.0.0" } else { "10.9.9" };
            t.connect(now, c, loc(region, network));
            t.handle(now, c, announce(&format!("p{c}"), 0));
        }
        t.connect(now, 9, loc("eu", "10.0.0"));
        let out = t.handle(now, 9, announce("p9", 5));
        let to = offered_to(&out);
        assert_eq!(to.len(), 5);
        assert_eq!(to[0], 5, "same region and network first");
        assert_eq!(to[1..4].iter().copied().collect::<BTreeSet<_>>(), BTreeSet::from([6, 7, 8]), "then the region");
        assert!(to[4] <= 4, "then anyone");
        assert!(matches!(&out[0], Action::Send(9, Outgoing::Announced { incomplete: 9, interval: 120, .. })));

        // Peer 5 answers peer 9's offer: the answer goes to conn 9 and nothing to conn 5.
        let offer_id = id("p9-offer0");
        let answer = Incoming::Announce(Announce {
            info_hash: id("swarm"),
            peer_id: id("p5"),
            numwant: None,
            event: None,
            left: None,
            offers: vec![],
            answer: Some(sdp("answer")),
            to_peer_id: Some(id("p9")),
            offer_id: Some(offer_id),
        });
        let out = t.handle(now, 5, answer);
        assert_eq!(out.len(), 1);
        assert!(matches!(&out[0], Action::Send(9, Outgoing::Answer { peer_id, .. }) if *peer_id == id("p5")));
    }

    #[test]
    fn reported_peers_are_not_offered_or_relayed() {
        let now = epoch();
        let mut t = WtTracker::new(WtConfig::default());
        for c in 1..=3u64 {
            t.connect(now, c, loc("eu", ""));
            t.handle(now, c, announce(&format!("p{c}"), 0));
        }
        assert_eq!(t.report("viewer-a", id("p2")), Some(1));
        assert_eq!(t.report("viewer-a", id("p2")), Some(1), "one reporter counts once");
        assert!(!t.excluded(&id("p2")));
        assert_eq!(t.report("viewer-b", id("p2")), Some(2));
        assert!(t.excluded(&id("p2")));
        assert_eq!(t.report("viewer-b", id("nobody")), None);
        assert_eq!(offered_to(&t.handle(now, 1, announce("p1", 5))), vec![3], "p2 is left out");
        assert!(offered_to(&t.handle(now, 2, announce("p2", 5))).is_empty(), "p2's offers are not relayed");
    }

    #[test]
    fn bounded_floods_full_swarms_and_silence() {
        let now = epoch();
        let config = WtConfig { max_peers_per_swarm: 2, flood_messages: 5, ..WtConfig::default() };
        let mut t = WtTracker::new(config);
        for c in 1..=3u64 {
            t.connect(now, c, Locality::default());
        }
        t.handle(now, 1, announce("p1", 0));
        t.handle(now, 2, announce("p2", 0));
        let out = t.handle(now, 3, announce("p3", 0));
        assert!(matches!(&out[0], Action::Send(3, Outgoing::Failure { reason, .. }) if reason.contains("full")));
        assert_eq!(t.size(), (1, 2));

        let mut closed = None;
        for _ in 0..6 {
            if let Some(Action::Close(c, why)) = t.handle(now, 3, announce("p3", 0)).into_iter().next() {
                closed = Some((c, why));
            }
        }
        assert!(closed.is_some_and(|(c, why)| c == 3 && why.contains("messages")), "a flood closes the connection");

        // Silent past the timeout: peers leave, the connection is due to be closed.
        let later = now + Duration::from_secs(181);
        let idle = t.sweep(later);
        assert_eq!(idle.len(), 3);
        assert_eq!(t.size(), (0, 0));
        for c in idle {
            t.disconnect(c);
        }
        assert_eq!(t.connections(), 0);
    }

    #[test]
    fn a_closed_connection_leaves_its_swarms_and_a_reconnect_keeps_the_peer() {
        let now = epoch();
        let mut t = WtTracker::new(WtConfig::default());
        t.connect(now, 1, Locality::default());
        t.handle(now, 1, announce("p1", 0));
        // The same peer id on a new connection (the client reconnected), then the old one closes.
        t.connect(now, 2, Locality::default());
        t.handle(now, 2, announce("p1", 0));
        t.disconnect(1);
        assert_eq!(t.size(), (1, 1), "the peer lives on its new connection");
        t.disconnect(2);
        assert_eq!(t.size(), (0, 0));
    }

    #[test]
    fn oversized_descriptions_are_refused() {
        let now = epoch();
        let mut t = WtTracker::new(WtConfig::default());
        t.connect(now, 1, Locality::default());
        let Incoming::Announce(mut a) = announce("p1", 1) else { unreachable!() };
        a.offers[0].offer.sdp = "x".repeat(20_000);
        let out = t.handle(now, 1, Incoming::Announce(a));
        assert!(matches!(&out[0], Action::Send(1, Outgoing::Failure { reason, .. }) if reason.contains("longer")));
        assert_eq!(t.size(), (0, 0), "nothing joined");
    }
}
