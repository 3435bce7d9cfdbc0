//! The distribution tree (F11, F13): route floods from the origin, parent choice, backups,
//! attaching with capacity and loop checks, and repair.
//!
//! The origin floods `Route { flood, latency 0, hops 0, path [origin] }` every flood interval.
//! A relay stores each neighbour's latest route and picks as parent the neighbour with the lowest
//! accumulated latency (its route's latency plus half the link RTT), then the fewest hops,
//! ignoring routes two or more floods old and any route whose path contains the relay itself,
//! one of its children, or a neighbour it lost or that withdrew its route (the last three are
//! stale routes that could close a loop while updates are in flight). Leaving a working parent
//! for a better one also needs a feasible route (a newer flood, or lower latency than the relay
//! advertised), both when asking and when the answer comes; a repair prefers a feasible route
//! too, and takes an infeasible one only when there is none. It re-advertises
//! its own route only when it changes meaningfully (de-duplication: cyclic graphs terminate),
//! and sends a neighbour the whole path only when it differs from the last one that neighbour
//! got: a new flood over the same path is a 24-byte `RouteRefresh`.
//! The other candidates are its backups: when the parent dies the relay attaches to the best of
//! them at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Event, Node, PeerId};
use crate::wire::{MAX_PATH, Message, Route, path_digest};

/// Assumed one-way latency to a neighbour whose RTT is not measured yet.
const UNKNOWN_RTT: Duration = Duration::from_millis(100);
/// A better route must beat the current parent's by this fraction (and by `MIN_GAIN`) before
/// the node switches: hysteresis, so parents do not flap on RTT noise.
const SWITCH_GAIN_PERCENT: u64 = 10;
const MIN_GAIN: Duration = Duration::from_millis(2);
/// How long a repair with no feasible route waits for a newer flood (asked for with
/// `RouteRequest`) before it takes the best infeasible route anyway. Short: the repair bound
/// (3 keep-alives + RTT) must hold; long enough for the relays that lost their parents in the
/// same fault to tell each other, so they do not take each other's stale routes at once.
pub(super) const REPAIR_HOLD: Duration = Duration::from_millis(50);
/// The origin starts a requested flood at most this often, however many relays ask.
const REQUESTED_FLOOD_GAP: Duration = Duration::from_millis(100);

/// A node's place in the tree, for the node API (F15).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteView {
    /// Accumulated one-way latency to the origin, if routed.
    pub latency_us: Option<u64>,
    pub hops: Option<u32>,
    pub flood: u64,
    /// Node ids from the origin to this node.
    pub path: Vec<u64>,
    pub parent: Option<String>,
    /// Other parent candidates, best first, with the latency they would give.
    pub backups: Vec<(String, u64)>,
    pub children: Vec<String>,
}

/// What a neighbour's route path says about us. Walking paths of up to 64 hops on every
/// refresh was a large part of a relay's work, so the answer is kept until the path or the
/// exclusions change (`Node::exclusions`).
#[derive(Clone, Copy, Debug)]
pub(super) struct PathVerdict {
    /// `Node::exclusions` when worked out.
    epoch: u64,
    /// The path runs through us or one of our children.
    through_us: bool,
    /// The path runs through a neighbour we lost (whether that makes it stale depends on the
    /// floods, which change without changing the verdict).
    through_lost: bool,
}

/// How good a route through a neighbour would be: latency first, then hops, then the lower
/// peer id (so every run breaks ties the same way).
type Score = (u64, u32, PeerId);

impl Node {
    /// Our route to the origin, as advertised.
    pub fn route(&self) -> Option<&crate::wire::Route> {
        self.route.as_ref()
    }

    /// This node's place in the tree.
    pub fn route_view(&self, now: Instant) -> RouteView {
        let mut backups: Vec<(Score, String)> = self
            .peers
            .iter()
            .filter(|(id, _)| Some(**id) != self.parent)
            .filter_map(|(id, p)| self.score(now, *id).map(|s| (s, p.name.clone())))
            .collect();
        backups.sort();
        RouteView {
            latency_us: self.route.as_ref().map(|r| r.latency_us),
            hops: self.route.as_ref().map(|r| r.hops),
            flood: self.flood,
            path: self.route.as_ref().map(|r| r.path.to_vec()).unwrap_or_default(),
            parent: self.parent().map(|(_, n)| n.to_string()),
            backups: backups.into_iter().map(|((lat, _, _), n)| (n, lat)).collect(),
            children: self.children().map(|(_, n)| n.to_string()).collect(),
        }
    }

    /// Origin: start a new flood round now; the next periodic one is a whole interval later.
    pub(super) fn start_flood(&mut self, now: Instant) {
        self.next_flood = Some(now + self.config.flood_interval);
        self.last_flood = Some(now);
        self.flood += 1;
        let route = Route { flood: self.flood, latency_us: 0, hops: 0, path: [self.config.id].into() };
        self.route_digest = path_digest(&route.path);
        self.route = Some(route);
        self.advertise();
    }

    /// Repairing with no feasible route: ask every neighbour for a newer flood (once per flood)
    /// and wait up to [`REPAIR_HOLD`] for it; after that, `fallback` (the best usable route).
    /// Once a hold has run out with no usable route at all, the first one that comes is taken
    /// at once: waiting again for each would slow a repair that spreads into a region whose
    /// only way out died by one hold per hop.
    fn hold_for_a_newer_flood(&mut self, now: Instant, fallback: Option<Score>) -> Option<Score> {
        if self.hold_over {
            return fallback;
        }
        let since = *self.holding_since.get_or_insert(now);
        let flood = self.feasible.map_or(self.flood, |f| f.0);
        if self.requested.is_none_or(|r| r < flood) {
            self.requested = Some(flood);
            self.request_from_neighbours(flood, None);
        }
        if now.duration_since(since) < REPAIR_HOLD {
            return None;
        }
        self.holding_since = None;
        self.hold_over = fallback.is_none();
        fallback
    }

    /// A neighbour asks for a route from a flood newer than `flood`: the origin starts one (at
    /// most every [`REQUESTED_FLOOD_GAP`]); a relay with a newer route sends it, else passes the
    /// request on, once per flood: to its parent, or, if it has none or the parent is the one
    /// asking, to every other neighbour. A crash orphans a whole subtree, whose way up ends at
    /// the orphans; spreading through it, the request meets a relay outside it.
    pub(super) fn on_route_request(&mut self, now: Instant, peer: PeerId, flood: u64) {
        if self.is_origin() {
            if flood >= self.flood && self.last_flood.is_none_or(|t| now.duration_since(t) >= REQUESTED_FLOOD_GAP) {
                self.start_flood(now);
            }
            return;
        }
        if self.route.as_ref().is_some_and(|r| r.flood > flood) {
            return self.send_route(peer);
        }
        if self.requested.is_some_and(|r| r >= flood) {
            return;
        }
        self.requested = Some(flood);
        match self.parent {
            Some(parent) if parent != peer => self.send(parent, Message::RouteRequest { flood }),
            _ => self.request_from_neighbours(flood, Some(peer)),
        }
    }

    /// Ask every neighbour that is up, but `except`, for a route from a flood newer than `flood`.
    fn request_from_neighbours(&mut self, flood: u64, except: Option<PeerId>) {
        for peer in self.up_peers().into_iter().filter(|p| Some(*p) != except) {
            self.send(peer, Message::RouteRequest { flood });
        }
    }

    /// A new flood over the path `peer` last told us: the route it stands for.
    pub(super) fn on_route_refresh(&mut self, now: Instant, peer: PeerId, flood: u64, latency_us: u64, digest: u64) {
        if self.is_origin() {
            return; // the origin keeps no routes
        }
        let held = self.peers.get(&peer).and_then(|p| Some((p.route.as_ref()?, p.route_digest)));
        match held {
            Some((r, held_digest)) if held_digest == digest => {
                let route = Route { flood, latency_us, hops: r.hops, path: r.path.clone() };
                self.on_route(now, peer, Some(route));
            }
            _ => self.drop_peer(now, peer, "route refresh for a path it never sent us".into()),
        }
    }

    pub(super) fn on_route(&mut self, now: Instant, peer: PeerId, route: Option<Route>) {
        if let Some(r) = &route {
            let peer_id = self.peers.get(&peer).map_or(0, |p| p.id);
            let well_formed = !r.path.is_empty()
                && r.path.len() <= MAX_PATH
                && r.path.last() == Some(&peer_id)
                && r.hops as usize + 1 == r.path.len();
            if !well_formed {
                return self.drop_peer(now, peer, format!("malformed route {r:?}"));
            }
        }
        if self.is_origin() {
            return;
        }
        if let Some(r) = &route {
            self.flood = self.flood.max(r.flood);
            // Routes this old are unusable anyway; forget what made them stale.
            let newest = self.flood;
            let before = self.lost.len();
            self.lost.retain(|(_, flood)| flood + 1 >= newest);
            if self.lost.len() != before {
                self.exclusions += 1;
            }
        }
        let Some(p) = self.peers.get_mut(&peer) else { return };
        // A neighbour that withdraws its route, or whose route now runs through us, has left
        // the place in the tree that other neighbours' routes through it describe: those routes
        // are stale from this flood back, as for a neighbour we lost. Without this, siblings
        // whose parent just withdrew take each other's routes through that parent (two ways at
        // once: a loop).
        let gone = (p.id, self.flood);
        let same_path = matches!((&p.route, &route), (Some(a), Some(b)) if Arc::ptr_eq(&a.path, &b.path));
        let through_us = if same_path {
            p.route_through_us
        } else {
            route.as_ref().is_some_and(|r| r.path.contains(&self.config.id))
        };
        let retracted = p.route.is_some() && (route.is_none() || through_us);
        if !same_path {
            p.route_digest = route.as_ref().map_or(0, |r| path_digest(&r.path));
            p.route_through_us = through_us;
            p.verdict.set(None);
        }
        p.route = route;
        if retracted {
            self.note_lost(gone);
        }
        self.reevaluate_parent(now);
    }

    pub(super) fn on_attach(&mut self, peer: PeerId) {
        let Some(p) = self.peers.get(&peer) else { return };
        if p.child {
            return self.send(peer, Message::Attached);
        }
        let (peer_id, peer_name) = (p.id, p.name.clone());
        let refusal = if !self.is_origin() && self.route.is_none() {
            Some("no route to the origin at the moment".to_string())
        } else if self.route.as_ref().is_some_and(|r| r.path.contains(&peer_id))
            || Some(peer) == self.parent
            || Some(peer) == self.attaching
        {
            Some(format!("{peer_name} is upstream of {}: attaching would make a loop", self.config.name))
        } else if self.children().count() >= self.config.max_children {
            Some(format!("{} is at capacity ({} children)", self.config.name, self.config.max_children))
        } else {
            None
        };
        if let Some(reason) = refusal {
            return self.send(peer, Message::AttachRefused { reason });
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.child = true;
        }
        self.exclusions += 1;
        self.send(peer, Message::Attached);
        if let Some(channels) = self.known_catalog() {
            self.send(peer, Message::Catalog { channels });
        }
        self.event(Event::ChildAttached { peer, node: peer_name });
    }

    pub(super) fn on_attached(&mut self, now: Instant, peer: PeerId) {
        if self.attaching == Some(peer) && !self.still_wanted(now, peer) {
            // Routes that arrived while the answer was in flight make the candidate a loop risk
            // (see `still_wanted`): decline it and choose again.
            self.attaching = None;
            self.send(peer, Message::Detach);
            return self.reevaluate_parent(now);
        }
        if self.attaching != Some(peer) {
            // We changed our mind while the answer was in flight.
            if self.parent != Some(peer) {
                self.send(peer, Message::Detach);
            }
            return;
        }
        self.attaching = None;
        let previous = self.parent.replace(peer);
        let previous_name = previous.and_then(|o| self.peers.get(&o)).map(|p| p.name.clone());
        if let Some(old) = previous.filter(|o| *o != peer)
            && self.peers.contains_key(&old)
        {
            self.send(old, Message::Detach);
        }
        let node = self.peers.get(&peer).map(|p| p.name.clone()).unwrap_or_default();
        self.event(Event::ParentChanged { peer, node, previous: previous_name });
        self.move_subscriptions(previous);
        self.update_own_route();
    }

    pub(super) fn on_attach_refused(&mut self, now: Instant, peer: PeerId, reason: String) {
        if self.attaching != Some(peer) {
            return;
        }
        self.attaching = None;
        let backoff = self.config.flood_interval;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.refused_until = Some(now + backoff);
        }
        let name = self.peers.get(&peer).map(|p| p.name.clone()).unwrap_or_default();
        self.event(Event::PeerMisbehaved { peer, reason: format!("{name} refused us as a child: {reason}") });
        self.reevaluate_parent(now);
    }

    pub(super) fn on_detach(&mut self, peer: PeerId) {
        let Some(p) = self.peers.get_mut(&peer) else { return };
        if !p.child {
            return;
        }
        p.child = false;
        self.exclusions += 1;
        for ch in self.channels.values_mut() {
            ch.subscribers.remove(&peer);
        }
        self.channels_check_at = None;
        self.event(Event::ChildGone { peer });
    }

    /// The route we would get through `peer`, if it is a valid parent candidate now.
    fn score(&self, now: Instant, peer: PeerId) -> Option<Score> {
        self.score_of(now, peer, self.peers.get(&peer)?)
    }

    /// [`Node::score`] of the neighbour `p`, known as `peer`.
    fn score_of(&self, now: Instant, peer: PeerId, p: &super::Peer) -> Option<Score> {
        let r = p.route.as_ref()?;
        let usable = p.up && !p.child && r.flood + 1 >= self.flood && p.refused_until.is_none_or(|t| t <= now) && {
            let verdict = self.path_verdict(p, r);
            !verdict.through_us && (!verdict.through_lost || !self.stale(p, r))
        };
        if !usable {
            return None;
        }
        let one_way = p.rtt.unwrap_or(UNKNOWN_RTT * 2) / 2;
        Some((r.latency_us.saturating_add(one_way.as_micros() as u64), r.hops + 1, peer))
    }

    /// What `p`'s route path `r` says about us, from the cache while neither the path nor our
    /// children and lost neighbours changed.
    fn path_verdict(&self, p: &super::Peer, r: &Route) -> PathVerdict {
        if let Some(v) = p.verdict.get().filter(|v| v.epoch == self.exclusions) {
            return v;
        }
        let v = PathVerdict {
            epoch: self.exclusions,
            // A route through one of our children runs through our own subtree: the neighbour
            // has not yet heard that the child moved below us, and attaching to it would close
            // a loop.
            through_us: p.route_through_us || self.peers.values().any(|c| c.child && r.path.contains(&c.id)),
            through_lost: self.lost.iter().any(|(id, _)| *id != p.id && r.path.contains(id)),
        };
        p.verdict.set(Some(v));
        v
    }

    /// A route through a neighbour we lost, from before we lost it, is stale: its owner has not
    /// noticed yet (typically a sibling orphaned by the same crash). The lost neighbour itself,
    /// once reconnected, speaks for itself: its own route is current.
    fn stale(&self, p: &super::Peer, r: &Route) -> bool {
        self.lost.iter().any(|(id, flood)| *id != p.id && r.flood <= *flood && r.path.contains(id))
    }

    /// Remember that routes through neighbour `id` from flood `flood` back are stale. One entry
    /// per neighbour, with its newest such flood, says the same as one per loss.
    pub(super) fn note_lost(&mut self, (id, flood): (u64, u64)) {
        match self.lost.iter_mut().find(|(lost, _)| *lost == id) {
            Some(entry) => entry.1 = entry.1.max(flood),
            None => {
                self.lost.push((id, flood));
                self.exclusions += 1;
            }
        }
    }

    /// Whether `peer`'s route satisfies the feasibility condition against what we advertised.
    fn feasible(&self, peer: PeerId) -> bool {
        self.peers.get(&peer).and_then(|p| p.route.as_ref()).is_some_and(|r| self.route_feasible(r))
    }

    fn route_feasible(&self, r: &Route) -> bool {
        if r.hops == 0 {
            return true; // the origin itself: attaching to the root cannot close a loop
        }
        match self.feasible {
            None => true,
            Some((flood, latency)) => r.flood > flood || (r.flood == flood && r.latency_us < latency),
        }
    }

    /// Whether the candidate we asked to attach to is still one we would choose. A switch away
    /// from a working parent must still be feasible when the answer comes: meanwhile our old
    /// parent may have brought a newer flood, which we advertised, and a neighbour may have
    /// attached to us because of it. Taking a candidate that only knows the older flood would
    /// undo the feasibility that keeps switches loop-free, and that candidate's route may
    /// already run through the new child (its updates queued behind a lost frame). A repair
    /// (no usable parent) only needs the candidate to be usable.
    fn still_wanted(&self, now: Instant, candidate: PeerId) -> bool {
        let switching = self.parent.is_some_and(|p| p != candidate && self.score(now, p).is_some());
        self.score(now, candidate).is_some() && (!switching || self.feasible(candidate))
    }

    /// Choose (or keep) the parent after anything that changes the candidates.
    pub(super) fn reevaluate_parent(&mut self, now: Instant) {
        if self.is_origin() {
            return;
        }
        // Our parent's route now runs through us: a loop. Break it at once.
        if let Some(parent) = self.parent {
            let looped = self.peers.get(&parent).is_some_and(|p| p.route_through_us);
            if looped {
                self.parent = None;
                self.send(parent, Message::Detach);
                self.event(Event::ParentLost { reason: "parent's route runs through us (loop)".into() });
            }
        }
        if let Some(a) = self.attaching
            && !self.still_wanted(now, a)
        {
            // The candidate we asked went bad while we waited; its answer will be declined.
            self.attaching = None;
        }
        if self.attaching.is_none() {
            let current = self.parent.and_then(|p| self.score(now, p));
            // Without a usable parent, any candidate will do (repair). Leaving a working parent
            // for a better one is optional, and only allowed towards a feasible route (Babel's
            // feasibility condition, RFC 8966 §2.4): a newer flood, or a lower latency than we
            // ever advertised in ours. Along parent links made this way the feasibility distance
            // strictly decreases towards the origin, so such switches alone cannot close a loop,
            // however stale the routes; repairs are guarded by the stale-route rules in `score`.
            let repair = current.is_none();
            let candidates = || {
                self.peers
                    .iter()
                    .filter(|(id, _)| Some(**id) != self.parent)
                    .filter_map(|(id, p)| Some((self.score_of(now, *id, p)?, p.route.as_ref()?)))
            };
            // A repair, too, takes a feasible route when there is one: an infeasible one may be
            // stale and already run through our own subtree (a neighbour below us may have just
            // switched into it). With none, it asks for a newer flood and waits a little for it.
            let feasible = candidates().filter(|(_, r)| self.route_feasible(r)).map(|(s, _)| s).min();
            let best = if repair && feasible.is_none() {
                let any = candidates().map(|(s, _)| s).min();
                self.hold_for_a_newer_flood(now, any)
            } else {
                self.holding_since = None;
                self.hold_over = false;
                feasible
            };
            let target = match (current, best) {
                (Some(cur), Some(best)) if clearly_better(best, cur) => Some(best.2),
                (None, Some(best)) => Some(best.2),
                _ => None,
            };
            if let Some(t) = target {
                self.attaching = Some(t);
                self.send(t, Message::Attach);
            }
        }
        self.update_own_route();
    }

    /// Recompute our route from our parent's (or, mid-repair, the candidate's) and advertise
    /// it to every neighbour if it changed meaningfully.
    pub(super) fn update_own_route(&mut self) {
        if self.is_origin() {
            return;
        }
        let upstream = self.parent.or(self.attaching).and_then(|v| {
            let p = self.peers.get(&v)?;
            let r = p.route.as_ref()?;
            let one_way = p.rtt.unwrap_or(UNKNOWN_RTT * 2) / 2;
            let usable = !p.route_through_us && r.path.len() < MAX_PATH;
            usable.then(|| (r, r.latency_us.saturating_add(one_way.as_micros() as u64)))
        });
        let Some((r, latency_us)) = upstream else {
            if self.route.take().is_some() {
                self.route_extends = None;
                self.advertise();
            }
            return;
        };
        // Most floods come over the same path as the last: then only the numbers change, and
        // the path keeps its allocation (no walk, no copy, no reference count touched).
        let known = self.route_extends.as_ref().is_some_and(|e| Arc::ptr_eq(e, &r.path));
        let id = self.config.id;
        let same_path = self.route.as_mut().filter(|o| known || extends(&o.path, &r.path, id));
        if let Some(own) = same_path {
            if own.flood == r.flood && !latency_moved(own.latency_us, latency_us) {
                return;
            }
            (own.flood, own.latency_us, own.hops) = (r.flood, latency_us, r.hops + 1);
            if !known {
                self.route_extends = Some(r.path.clone());
            }
        } else {
            let path: Arc<[u64]> = r.path.iter().copied().chain([id]).collect();
            self.route_digest = path_digest(&path);
            self.route_extends = Some(r.path.clone());
            self.route = Some(Route { flood: r.flood, latency_us, hops: r.hops + 1, path });
        }
        if let Some(r) = &self.route {
            self.feasible = match self.feasible {
                Some((flood, latency)) if flood == r.flood => Some((flood, latency.min(r.latency_us))),
                Some(fd) if fd.0 > r.flood => Some(fd),
                _ => Some((r.flood, r.latency_us)),
            };
        }
        self.advertise();
    }

    /// Tell every neighbour our route.
    fn advertise(&mut self) {
        let up = self.up_peers();
        self.send_route_to(&up);
    }

    /// Tell `peer` our route.
    pub(super) fn send_route(&mut self, peer: PeerId) {
        self.send_route_to(&[peer]);
    }

    /// Tell each of `peers` our route: whole if its path is news to that peer, else as a
    /// refresh (the path's digest computed once for all of them).
    fn send_route_to(&mut self, peers: &[PeerId]) {
        let digest = self.route.as_ref().map(|_| self.route_digest);
        for &peer in peers {
            let Some(p) = self.peers.get_mut(&peer) else { continue };
            let msg = match (&self.route, digest) {
                (Some(r), Some(path_digest))
                    if p.told_path.as_ref().is_some_and(|t| Arc::ptr_eq(t, &r.path) || *t == r.path) =>
                {
                    Message::RouteRefresh { flood: r.flood, latency_us: r.latency_us, path_digest }
                }
                (Some(r), _) => Message::Route(r.clone()),
                (None, _) => Message::NoRoute,
            };
            // A clone writes the path's shared reference count: none when it holds this path.
            if !matches!((&p.told_path, &self.route), (Some(t), Some(r)) if Arc::ptr_eq(t, &r.path)) {
                p.told_path = self.route.as_ref().map(|r| r.path.clone());
            }
            self.send(peer, msg);
        }
    }

    /// The neighbours whose handshake is done.
    fn up_peers(&self) -> Vec<PeerId> {
        self.peers.iter().filter(|(_, p)| p.up).map(|(id, _)| *id).collect()
    }
}

fn clearly_better(new: Score, old: Score) -> bool {
    let margin = (old.0 * SWITCH_GAIN_PERCENT / 100).max(MIN_GAIN.as_micros() as u64);
    new.0 + margin < old.0
}

/// Whether our route's latency changed enough to tell the neighbours (a new flood or another
/// path always is): over 5 % and 1 ms, so RTT jitter alone does not re-flood the network.
fn latency_moved(old_us: u64, new_us: u64) -> bool {
    old_us.abs_diff(new_us) > (old_us / 20).max(1000)
}

/// Whether `own` is `upstream` with `id` (ours) appended.
fn extends(own: &[u64], upstream: &[u64], id: u64) -> bool {
    own.len() == upstream.len() + 1 && own.last() == Some(&id) && own[..upstream.len()] == *upstream
}
