//! The traffic manager's policy (F20–F23): which edge each viewer session is steered to, when a
//! region needs a temporary secondary server, when that secondary drains and retires, and which
//! viewers move back to a primary edge when it has room again.
//!
//! Pure state over inputs the tracker feeds it — edge announcements, edge viewer reports,
//! steering polls, cordons — with the time passed in, so the tracker and the simulator run the
//! same decisions. Everything here is soft state: edges and sessions that stop reporting expire.
//!
//! The rules, in the seed's words ("efficient usage of resources during high traffic peaks"):
//! - each primary edge takes new viewers up to `threshold`; beyond it, new viewers of the region
//!   go to a serving secondary, and a region whose demand reaches its capacity gets one more
//!   secondary (up to `max_secondaries`) — started once, not per viewer (hysteresis);
//! - viewers over a primary's threshold (placed there while no secondary was ready) are moved to
//!   a secondary as soon as one serves;
//! - when a primary has room again (below `threshold - margin`), viewers moved off it come back,
//!   earliest moved first;
//! - a secondary is drained only after the region's demand has stayed below the low-water mark
//!   for `grace` (no flapping): it gets no new viewers, its viewers are steered away, and once
//!   empty (or after `drain_timeout`) it is retired.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Tunables of the policy.
#[derive(Clone, Debug)]
pub struct SteeringConfig {
    /// Viewers per primary edge beyond which new viewers go elsewhere.
    pub threshold: u32,
    /// Viewers a secondary takes at most before the region needs another.
    pub secondary_capacity: u32,
    /// Fraction of the capacity left without a secondary below which the region's demand must
    /// stay for `grace` before that secondary drains.
    pub low_water: f64,
    pub grace: Duration,
    /// Secondaries per region at most.
    pub max_secondaries: usize,
    /// An edge silent (no announcement or report) this long is forgotten.
    pub report_ttl: Duration,
    /// A session neither polled nor reported by an edge this long is forgotten.
    pub session_ttl: Duration,
    /// A secondary that has not reported this long after being started is given up.
    pub start_timeout: Duration,
    /// A draining secondary is retired after this long even if viewers remain.
    pub drain_timeout: Duration,
    /// Look-ahead when starting secondaries: a region whose demand, growing at its current
    /// rate for this long (about a secondary's boot time), would reach its capacity gets one
    /// now, so it serves before the crowd arrives. Zero: start only at the threshold.
    pub lead: Duration,
    /// Sessions remembered at most: past it, a new session is answered by load without being
    /// remembered (not sticky), so a flood of made-up session ids cannot grow the state.
    pub max_sessions: usize,
}

impl Default for SteeringConfig {
    fn default() -> Self {
        Self {
            threshold: 100,
            secondary_capacity: 200,
            low_water: 0.5,
            grace: Duration::from_secs(10),
            max_secondaries: 4,
            report_ttl: Duration::from_secs(5),
            session_ttl: Duration::from_secs(15),
            start_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(60),
            lead: Duration::ZERO,
            max_sessions: 200_000,
        }
    }
}

impl SteeringConfig {
    /// Room kept free on a primary before viewers are moved back onto it (hysteresis).
    pub fn margin(&self) -> u32 {
        (self.threshold / 10).max(1)
    }
}

/// Primary (always-on, configured) or temporary secondary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    Primary,
    Secondary,
}

/// A secondary's lifecycle: Starting → Serving → Draining → Retired. Primaries are `Serving`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeState {
    Starting,
    Serving,
    Draining,
    Retired,
}

/// What an edge last reported about its viewers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EdgeReport {
    /// Active viewers (sessions seen by recent requests).
    pub viewers: u32,
    /// Of those, viewers that carried no steering session id.
    pub anonymous: u32,
    /// Steering session ids seen recently (they keep those sessions alive).
    #[serde(default)]
    pub sessions: Vec<String>,
    /// Viewer egress, bit/s.
    pub egress_bps: f64,
    /// Channels a viewer asking now would get (the edge is attached to the tree and the channel
    /// is on offer). Viewers are steered only to edges that list their channel.
    #[serde(default)]
    pub channels: Vec<String>,
}

/// One edge as the policy sees it.
#[derive(Clone, Debug)]
pub struct Edge {
    pub name: String,
    pub region: String,
    /// Base URL viewers use (`http://host:port`), once known.
    pub url: Option<String>,
    pub kind: EdgeKind,
    pub state: EdgeState,
    pub cordoned: bool,
    pub report: EdgeReport,
    /// Last announcement or report.
    pub seen: Option<Instant>,
    /// When the state last changed.
    pub since: Instant,
    /// For a secondary: the primary it re-streams from.
    pub parent: Option<String>,
}

impl Edge {
    /// Its last report says it can serve `channel` now.
    pub fn serves(&self, channel: &str) -> bool {
        self.report.channels.iter().any(|c| c == channel)
    }
}

/// A viewer session and where it is steered.
#[derive(Clone, Debug)]
pub struct Session {
    pub region: String,
    /// The channel it watches: it is only ever steered to edges serving it.
    pub channel: String,
    pub edge: String,
    pub seen: Instant,
    /// When it was placed off its region's primaries (moved back earliest first).
    pub displaced: Option<Instant>,
}

/// What the tracker must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start secondary `name` in `region`, re-streaming from `parent` (a primary edge) if any.
    Start { name: String, region: String, parent: Option<String> },
    /// Stop secondary `name` (drained, or failed to start).
    Stop { name: String },
}

/// One edge of a ranking answer, best first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    pub name: String,
    pub region: String,
    pub url: String,
    pub kind: EdgeKind,
    pub load: u32,
}

/// The policy: edges, sessions and secondaries of every region.
#[derive(Debug)]
pub struct SteeringPolicy {
    pub config: SteeringConfig,
    edges: BTreeMap<String, Edge>,
    sessions: BTreeMap<String, Session>,
    /// Sessions assigned per edge (kept with every move, so `load` is cheap at 10 000 viewers).
    assigned: BTreeMap<String, u32>,
    /// Per region: since when demand has been below the low-water mark.
    low_since: BTreeMap<String, Instant>,
    /// Per region: recent (time, demand) samples, for the growth rate.
    demand_history: BTreeMap<String, std::collections::VecDeque<(Instant, u32)>>,
    actions: Vec<Action>,
    next_secondary: u64,
}

impl SteeringPolicy {
    pub fn new(config: SteeringConfig) -> Self {
        Self {
            config,
            edges: BTreeMap::new(),
            sessions: BTreeMap::new(),
            assigned: BTreeMap::new(),
            low_since: BTreeMap::new(),
            demand_history: BTreeMap::new(),
            actions: Vec::new(),
            next_secondary: 1,
        }
    }

    /// An edge announced itself (name, region, viewer URL). Unknown names become primaries;
    /// a starting secondary that announces starts serving.
    pub fn edge_seen(&mut self, now: Instant, name: &str, region: &str, url: Option<String>) {
        let edge = self.edges.entry(name.to_string()).or_insert_with(|| Edge {
            name: name.to_string(),
            region: region.to_string(),
            url: None,
            kind: EdgeKind::Primary,
            state: EdgeState::Serving,
            cordoned: false,
            report: EdgeReport::default(),
            seen: None,
            since: now,
            parent: None,
        });
        if edge.state == EdgeState::Retired {
            return;
        }
        if url.is_some() {
            edge.url = url;
        }
        edge.seen = Some(now);
        if edge.state == EdgeState::Starting && edge.url.is_some() {
            edge.state = EdgeState::Serving;
            edge.since = now;
        }
    }

    /// An edge reported its viewers. Sessions it saw stay alive.
    pub fn edge_report(&mut self, now: Instant, name: &str, report: EdgeReport) -> bool {
        let Some(edge) = self.edges.get_mut(name) else { return false };
        for id in &report.sessions {
            if let Some(s) = self.sessions.get_mut(id) {
                s.seen = now;
            }
        }
        edge.report = report;
        edge.seen = Some(now);
        true
    }

    /// Cordon (or uncordon) an edge: no new viewers, its viewers are steered away.
    pub fn set_cordon(&mut self, name: &str, cordoned: bool) -> bool {
        match self.edges.get_mut(name) {
            Some(e) => {
                e.cordoned = cordoned;
                true
            }
            None => false,
        }
    }

    pub fn edges(&self) -> impl Iterator<Item = &Edge> {
        self.edges.values()
    }

    pub fn edge(&self, name: &str) -> Option<&Edge> {
        self.edges.get(name)
    }

    pub fn sessions(&self) -> impl Iterator<Item = (&String, &Session)> {
        self.sessions.iter()
    }

    /// Next action for the tracker to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        if self.actions.is_empty() { None } else { Some(self.actions.remove(0)) }
    }

    /// Viewers on `edge`: steered sessions assigned to it plus viewers it reports without one.
    pub fn load(&self, edge: &str) -> u32 {
        self.assigned.get(edge).copied().unwrap_or(0) + self.edges.get(edge).map_or(0, |e| e.report.anonymous)
    }

    fn capacity(&self, e: &Edge) -> u32 {
        match e.kind {
            EdgeKind::Primary => self.config.threshold,
            EdgeKind::Secondary => self.config.secondary_capacity,
        }
    }

    /// Can take new viewers.
    fn open(e: &Edge) -> bool {
        e.state == EdgeState::Serving && !e.cordoned && e.url.is_some()
    }

    /// The edge for a new viewer of `channel` in `region`, or `None` when no edge serves it.
    fn place(&self, region: &str, channel: &str) -> Option<String> {
        let can_serve = |e: &&Edge| Self::open(e) && e.serves(channel);
        let in_region = |e: &&Edge| e.region == region && can_serve(e);
        let with_room = |e: &&Edge| self.load(&e.name) < self.capacity(e);
        let primary = self
            .edges
            .values()
            .filter(in_region)
            .filter(|e| e.kind == EdgeKind::Primary)
            .filter(with_room)
            .min_by_key(|e| self.load(&e.name));
        // Fill secondaries one at a time, oldest first, so a later one can retire sooner.
        let secondary = || {
            self.edges
                .values()
                .filter(in_region)
                .filter(|e| e.kind == EdgeKind::Secondary)
                .filter(with_room)
                .min_by_key(|e| e.since)
        };
        // Overflow: the least loaded open edge of the region, else of anywhere.
        let fraction = |e: &&Edge| (self.load(&e.name) as u64 * 1000) / u64::from(self.capacity(e).max(1));
        let overflow = || {
            self.edges
                .values()
                .filter(in_region)
                .min_by_key(fraction)
                .or_else(|| self.edges.values().filter(can_serve).min_by_key(fraction))
        };
        primary.or_else(secondary).or_else(overflow).map(|e| e.name.clone())
    }

    /// The steering answer for `session` watching `channel` (a new one is placed): every edge
    /// that serves the channel, best first — its assigned edge, then the region's other edges by
    /// load, then other regions'. Empty while no edge serves it.
    pub fn rank(&mut self, now: Instant, region: &str, session: &str, channel: &str) -> Vec<Ranked> {
        let region = self.touch(now, region, session, channel);
        let assigned = self.sessions.get(session).map(|s| s.edge.clone());
        self.ranking(&region, assigned.as_deref(), channel)
    }

    /// The edge `session` is steered to (placing a new session): the first of [`Self::rank`]
    /// without building the whole ranking (what a simulation of 10 000 viewers needs).
    pub fn choose(&mut self, now: Instant, region: &str, session: &str, channel: &str) -> Option<String> {
        self.touch(now, region, session, channel);
        match self.sessions.get(session) {
            Some(s) => Some(s.edge.clone()).filter(|e| !e.is_empty()),
            None => self.place(region, channel),
        }
    }

    /// Refresh (or place) a session; its region. A session whose edge stopped serving its
    /// channel (lost its parent, went away) is placed again.
    fn touch(&mut self, now: Instant, region: &str, session: &str, channel: &str) -> String {
        let full = self.sessions.len() >= self.config.max_sessions;
        match self.sessions.get_mut(session) {
            Some(s) => {
                s.seen = now;
                let region = s.region.clone();
                let stranded = !self.edges.get(&s.edge).is_some_and(|e| e.serves(&s.channel));
                if stranded {
                    self.reassign(now, session, &region);
                }
                region
            }
            None if full => region.to_string(),
            None => {
                if let Some(edge) = self.place(region, channel) {
                    let displaced = self.edges.get(&edge).is_some_and(|e| e.kind == EdgeKind::Secondary);
                    *self.assigned.entry(edge.clone()).or_default() += 1;
                    let session_state = Session {
                        region: region.to_string(),
                        channel: channel.to_string(),
                        edge,
                        seen: now,
                        displaced: displaced.then_some(now),
                    };
                    self.sessions.insert(session.to_string(), session_state);
                }
                region.to_string()
            }
        }
    }

    fn ranking(&self, region: &str, assigned: Option<&str>, channel: &str) -> Vec<Ranked> {
        let mut ranked: Vec<Ranked> = self
            .edges
            .values()
            .filter(|e| e.url.is_some() && matches!(e.state, EdgeState::Serving | EdgeState::Draining))
            .filter(|e| e.serves(channel))
            .map(|e| Ranked {
                name: e.name.clone(),
                region: e.region.clone(),
                url: e.url.clone().unwrap_or_default(),
                kind: e.kind,
                load: self.load(&e.name),
            })
            .collect();
        let key = |r: &Ranked| {
            let e = &self.edges[&r.name];
            let rank = if Some(r.name.as_str()) == assigned {
                0
            } else if !Self::open(e) {
                3
            } else if r.region == region {
                1
            } else {
                2
            };
            (rank, (u64::from(r.load) * 1000) / u64::from(self.capacity(e).max(1)), r.name.clone())
        };
        ranked.sort_by_cached_key(key);
        ranked
    }

    /// Place a session without a poll (a `/play` redirect); it lives until `session_ttl` unless
    /// an edge reports it.
    pub fn assign(&mut self, now: Instant, region: &str, session: &str, channel: &str) -> Option<Ranked> {
        self.rank(now, region, session, channel).into_iter().next()
    }

    /// Run the periodic rules: expiry, lifecycle, moving viewers, starting and retiring
    /// secondaries. Call about once a second.
    pub fn tick(&mut self, now: Instant) {
        let ttl = self.config.report_ttl;
        // Silent primaries are forgotten; silent secondaries are retired below.
        self.edges.retain(|_, e| e.kind == EdgeKind::Secondary || e.seen.is_some_and(|s| now - s < ttl));
        let session_ttl = self.config.session_ttl;
        let assigned = &mut self.assigned;
        self.sessions.retain(|_, s| {
            let keep = now.saturating_duration_since(s.seen) < session_ttl;
            if !keep {
                unassign(assigned, &s.edge);
            }
            keep
        });

        let regions: Vec<String> = {
            let mut r: Vec<String> = self.edges.values().map(|e| e.region.clone()).collect();
            r.sort();
            r.dedup();
            r
        };
        for region in &regions {
            self.lifecycle(now, region);
            self.move_off_closed(now, region);
            self.spill_over(now, region);
            self.move_back(region);
            self.scale(now, region);
        }
        self.edges.retain(|_, e| e.state != EdgeState::Retired || now - e.since < Duration::from_secs(60));
    }

    /// Starting → Serving happens in `edge_seen`; here: start timeouts, silent secondaries,
    /// drained secondaries.
    fn lifecycle(&mut self, now: Instant, region: &str) {
        let names: Vec<String> = self
            .edges
            .values()
            .filter(|e| e.region == region && e.kind == EdgeKind::Secondary)
            .map(|e| e.name.clone())
            .collect();
        for name in names {
            let load = self.load(&name);
            let e = self.edges.get_mut(&name).expect("listed above");
            let silent = e.seen.is_some_and(|s| now - s >= self.config.report_ttl);
            let retire = match e.state {
                EdgeState::Starting => now - e.since >= self.config.start_timeout,
                EdgeState::Serving => silent,
                EdgeState::Draining => {
                    (load == 0 && e.report.viewers == 0) || silent || now - e.since >= self.config.drain_timeout
                }
                EdgeState::Retired => false,
            };
            if retire {
                e.state = EdgeState::Retired;
                e.since = now;
                self.actions.push(Action::Stop { name: name.clone() });
            }
        }
        let retired: Vec<String> =
            self.edges.values().filter(|e| e.state == EdgeState::Retired).map(|e| e.name.clone()).collect();
        for s in self.sessions.values_mut() {
            if retired.contains(&s.edge) {
                unassign(&mut self.assigned, &s.edge);
                s.edge.clear();
            }
        }
        // Sessions whose edge is gone are placed again.
        if retired.is_empty()
            && self.sessions.len() as u64 <= self.assigned.values().map(|n| u64::from(*n)).sum::<u64>()
        {
            return;
        }
        let orphans: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.region == region && !self.edges.contains_key(&s.edge))
            .map(|(k, _)| k.clone())
            .collect();
        for id in orphans {
            self.reassign(now, &id, region);
        }
    }

    fn reassign(&mut self, now: Instant, id: &str, region: &str) {
        // Not counting itself where it is now.
        let Some((old, channel)) = self.sessions.get(id).map(|s| (s.edge.clone(), s.channel.clone())) else { return };
        if let Some(s) = self.sessions.get_mut(id) {
            unassign(&mut self.assigned, &s.edge);
            s.edge.clear();
        }
        let target = self.place(region, &channel).unwrap_or(old);
        let secondary = self.edges.get(&target).is_some_and(|e| e.kind == EdgeKind::Secondary);
        if let Some(s) = self.sessions.get_mut(id) {
            if !target.is_empty() {
                *self.assigned.entry(target.clone()).or_default() += 1;
            }
            s.edge = target;
            s.displaced = if secondary { s.displaced.or(Some(now)) } else { None };
        }
    }

    /// Viewers on cordoned or draining edges go elsewhere.
    fn move_off_closed(&mut self, now: Instant, region: &str) {
        let closed: Vec<String> = self
            .edges
            .values()
            .filter(|e| e.region == region && (e.cordoned || e.state == EdgeState::Draining))
            .map(|e| e.name.clone())
            .collect();
        if closed.is_empty() {
            return;
        }
        let ids: Vec<String> =
            self.sessions.iter().filter(|(_, s)| closed.contains(&s.edge)).map(|(k, _)| k.clone()).collect();
        for id in ids {
            self.reassign(now, &id, region);
        }
    }

    /// Viewers over a primary's threshold move to a serving secondary with room (newest first).
    fn spill_over(&mut self, now: Instant, region: &str) {
        let primaries: Vec<String> = self
            .edges
            .values()
            .filter(|e| e.region == region && e.kind == EdgeKind::Primary && Self::open(e))
            .map(|e| e.name.clone())
            .collect();
        for p in primaries {
            let mut over = self.load(&p).saturating_sub(self.config.threshold);
            if over == 0 {
                continue;
            }
            let mut on_it: Vec<(Instant, String)> =
                self.sessions.iter().filter(|(_, s)| s.edge == p).map(|(k, s)| (s.seen, k.clone())).collect();
            on_it.sort();
            while over > 0 {
                let Some((_, id)) = on_it.pop() else { break };
                let channel = &self.sessions[&id].channel;
                let Some(target) = self
                    .edges
                    .values()
                    .filter(|e| e.region == region && e.kind == EdgeKind::Secondary && Self::open(e))
                    .filter(|e| e.serves(channel))
                    .find(|e| self.load(&e.name) < self.config.secondary_capacity)
                    .map(|e| e.name.clone())
                else {
                    continue;
                };
                let s = self.sessions.get_mut(&id).expect("listed above");
                unassign(&mut self.assigned, &s.edge);
                *self.assigned.entry(target.clone()).or_default() += 1;
                s.edge = target;
                s.displaced = Some(now);
                over -= 1;
            }
        }
    }

    /// Rebalancing (F23): viewers displaced to secondaries come back to primaries with room,
    /// earliest displaced first.
    fn move_back(&mut self, region: &str) {
        let limit = self.config.threshold.saturating_sub(self.config.margin());
        let room = self
            .edges
            .values()
            .any(|e| e.region == region && e.kind == EdgeKind::Primary && Self::open(e) && self.load(&e.name) < limit);
        if !room {
            return;
        }
        let mut displaced: Vec<(Instant, String)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.region == region)
            .filter(|(_, s)| self.edges.get(&s.edge).is_some_and(|e| e.kind == EdgeKind::Secondary))
            .filter_map(|(k, s)| Some((s.displaced?, k.clone())))
            .collect();
        displaced.sort();
        for (_, id) in displaced {
            let channel = &self.sessions[&id].channel;
            let Some(target) = self
                .edges
                .values()
                .filter(|e| e.region == region && e.kind == EdgeKind::Primary && Self::open(e))
                .filter(|e| e.serves(channel) && self.load(&e.name) < limit)
                .min_by_key(|e| self.load(&e.name))
                .map(|e| e.name.clone())
            else {
                continue;
            };
            let s = self.sessions.get_mut(&id).expect("listed above");
            unassign(&mut self.assigned, &s.edge);
            *self.assigned.entry(target.clone()).or_default() += 1;
            s.edge = target;
            s.displaced = None;
        }
    }

    /// Start a secondary when the region's demand reaches its capacity; drain the newest one
    /// after demand has stayed below the low-water mark for the grace period.
    fn scale(&mut self, now: Instant, region: &str) {
        let in_region: Vec<&Edge> = self.edges.values().filter(|e| e.region == region).collect();
        let demand: u32 = in_region.iter().filter(|e| e.state != EdgeState::Retired).map(|e| self.load(&e.name)).sum();
        let counted = |e: &&&Edge| {
            !e.cordoned
                && match e.kind {
                    EdgeKind::Primary => e.state == EdgeState::Serving,
                    EdgeKind::Secondary => matches!(e.state, EdgeState::Starting | EdgeState::Serving),
                }
        };
        let capacity: u32 = in_region.iter().filter(counted).map(|e| self.capacity(e)).sum();
        let live_secondaries: Vec<&Edge> = in_region
            .iter()
            .filter(|e| e.kind == EdgeKind::Secondary && e.state != EdgeState::Retired)
            .copied()
            .collect();
        let primaries: Vec<&Edge> =
            in_region.iter().filter(|e| e.kind == EdgeKind::Primary && Self::open(e)).copied().collect();
        // Growth over the last ~10 s, projected over the lead time.
        let history = self.demand_history.entry(region.to_string()).or_default();
        history.push_back((now, demand));
        while history.front().is_some_and(|(t, _)| now - *t > Duration::from_secs(10)) {
            history.pop_front();
        }
        let growth = match history.front() {
            Some((t, d)) if now - *t >= Duration::from_secs(2) => {
                f64::from(demand.saturating_sub(*d)) / (now - *t).as_secs_f64()
            }
            _ => 0.0,
        };
        let projected = f64::from(demand) + growth * self.config.lead.as_secs_f64();
        if (demand >= capacity || projected >= f64::from(capacity))
            && !primaries.is_empty()
            && live_secondaries.len() < self.config.max_secondaries
        {
            let parent = primaries.iter().min_by_key(|e| self.load(&e.name)).map(|e| e.name.clone());
            let name = format!("secondary-{region}-{}", self.next_secondary);
            self.next_secondary += 1;
            self.edges.insert(
                name.clone(),
                Edge {
                    name: name.clone(),
                    region: region.to_string(),
                    url: None,
                    kind: EdgeKind::Secondary,
                    state: EdgeState::Starting,
                    cordoned: false,
                    report: EdgeReport::default(),
                    seen: None,
                    since: now,
                    parent: parent.clone(),
                },
            );
            self.actions.push(Action::Start { name, region: region.to_string(), parent });
            self.low_since.remove(region);
            return;
        }
        // Drain candidate: the newest serving secondary.
        let Some(newest) = live_secondaries.iter().filter(|e| e.state == EdgeState::Serving).max_by_key(|e| e.since)
        else {
            self.low_since.remove(region);
            return;
        };
        let without = capacity.saturating_sub(self.capacity(newest));
        let low = f64::from(demand) <= self.config.low_water * f64::from(without);
        if !low {
            self.low_since.remove(region);
            return;
        }
        let since = *self.low_since.entry(region.to_string()).or_insert(now);
        if now - since >= self.config.grace {
            let name = newest.name.clone();
            let e = self.edges.get_mut(&name).expect("listed above");
            e.state = EdgeState::Draining;
            e.since = now;
            self.low_since.remove(region);
            self.move_off_closed(now, region);
        }
    }
}

fn unassign(assigned: &mut BTreeMap<String, u32>, edge: &str) {
    if let Some(n) = assigned.get_mut(edge) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            assigned.remove(edge);
        }
    }
}

/// Client-side POP choice (F24): the candidate with the lowest RTT plus reported latency to the
/// origin, switching only when another is better by a margin for a sustained time.
#[derive(Clone, Debug)]
pub struct PopChooser {
    /// Relative improvement needed (0.2 = 20 % lower score).
    pub margin: f64,
    /// Absolute improvement needed, milliseconds (ignores noise on fast paths).
    pub margin_ms: f64,
    /// How long the better candidate must stay better.
    pub sustain: Duration,
    scores: BTreeMap<usize, f64>,
    current: Option<usize>,
    better_since: Option<(usize, Instant)>,
}

impl PopChooser {
    pub fn new(margin: f64, margin_ms: f64, sustain: Duration) -> Self {
        Self { margin, margin_ms, sustain, scores: BTreeMap::new(), current: None, better_since: None }
    }

    /// A fresh measurement of candidate `i`: RTT and its reported latency to the origin.
    pub fn observe(&mut self, now: Instant, i: usize, rtt_ms: f64, origin_ms: f64) {
        self.scores.insert(i, rtt_ms + origin_ms);
        self.decide(now);
    }

    /// One round of probes of every candidate (`None`: unreachable), decided together, so the
    /// first choice is the best of all rather than the first one measured.
    pub fn observe_round(&mut self, now: Instant, round: &[Option<(f64, f64)>]) {
        for (i, r) in round.iter().enumerate() {
            match r {
                Some((rtt, origin)) => {
                    self.scores.insert(i, rtt + origin);
                }
                None => {
                    self.scores.remove(&i);
                    if self.current == Some(i) {
                        self.current = None;
                    }
                }
            }
        }
        self.decide(now);
    }

    /// A candidate that could not be measured.
    pub fn unreachable(&mut self, now: Instant, i: usize) {
        self.scores.remove(&i);
        if self.current == Some(i) {
            self.current = None;
        }
        self.decide(now);
    }

    pub fn current(&self) -> Option<usize> {
        self.current
    }

    pub fn score(&self, i: usize) -> Option<f64> {
        self.scores.get(&i).copied()
    }

    fn decide(&mut self, now: Instant) {
        let best = self.scores.iter().min_by(|a, b| a.1.total_cmp(b.1)).map(|(i, s)| (*i, *s));
        let Some((best, best_score)) = best else { return };
        let Some(cur) = self.current else {
            self.current = Some(best);
            self.better_since = None;
            return;
        };
        let cur_score = self.scores.get(&cur).copied().unwrap_or(f64::INFINITY);
        let better =
            best != cur && best_score < cur_score * (1.0 - self.margin) && cur_score - best_score >= self.margin_ms;
        if !better {
            self.better_since = None;
            return;
        }
        match self.better_since {
            Some((i, since)) if i == best => {
                if now - since >= self.sustain {
                    self.current = Some(best);
                    self.better_since = None;
                }
            }
            _ => self.better_since = Some((best, now)),
        }
    }
}
