//! Flash crowds (F22 at scale): thousands of viewers arrive in one region within a minute, and
//! the traffic manager's policy — the core's [`SteeringPolicy`], exactly as the tracker runs it —
//! steers them, starts temporary secondaries, drains and retires them when the crowd leaves.
//!
//! A time-stepped flow model, not the packet-level engine: each edge serves at most
//! `edge_capacity` viewers (its uplink divided by the bitrate); viewers beyond that on an edge
//! are *unserved* (in a real player: stalled, then gone). Viewers poll the steering answer every
//! TTL (each with its own phase) and move when it changes; edges report their viewers every
//! second; a started secondary serves after `boot_s`. Every run is done twice — with secondaries
//! and without (`max_secondaries = 0`) — so the report compares them.
//!
//! Scenario files: `scenarios/flash-crowd.toml` (start at 80 % of capacity) and
//! `scenarios/flash-crowd-reactive.toml` (start only when full).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use relaycast_core::steering::{Action, EdgeKind, EdgeReport, EdgeState, SteeringConfig, SteeringPolicy};
use serde::{Deserialize, Serialize};

/// The one channel the flash crowd watches; every simulated edge serves it once it reports.
const CHANNEL: &str = "live";

/// A flash-crowd scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlashScenario {
    pub name: String,
    #[serde(default)]
    pub seed: Option<u64>,
    pub flash: FlashConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlashConfig {
    /// Simulated time, seconds.
    pub duration_s: f64,
    pub region: String,
    /// Viewers in the crowd.
    pub viewers: u32,
    /// Arrivals spread uniformly over [start_s, start_s + ramp_s].
    pub start_s: f64,
    pub ramp_s: f64,
    /// Each viewer stays hold_s, plus a uniform 0..leave_s.
    pub hold_s: f64,
    pub leave_s: f64,
    /// Primary edges in the region.
    pub primaries: u32,
    /// Viewers an edge can serve (uplink / bitrate); primaries and secondaries alike.
    pub edge_capacity: u32,
    /// The policy's threshold per primary and capacity per secondary.
    pub threshold: u32,
    pub secondary_capacity: u32,
    pub max_secondaries: usize,
    /// A started secondary serves after this long.
    pub boot_s: f64,
    pub steering_ttl_s: f64,
    pub low_water: f64,
    pub grace_s: f64,
    pub bitrate_kbps: u32,
    /// The policy's look-ahead when starting secondaries (0: only at the threshold).
    pub lead_s: f64,
    /// Time step of the model, seconds.
    pub step_s: f64,
}

impl Default for FlashConfig {
    fn default() -> Self {
        Self {
            duration_s: 600.0,
            region: "eu".into(),
            viewers: 10_000,
            start_s: 10.0,
            ramp_s: 60.0,
            hold_s: 240.0,
            leave_s: 60.0,
            primaries: 3,
            edge_capacity: 2000,
            threshold: 1600,
            secondary_capacity: 1600,
            max_secondaries: 8,
            boot_s: 15.0,
            steering_ttl_s: 2.0,
            low_water: 0.5,
            grace_s: 30.0,
            bitrate_kbps: 2000,
            lead_s: 15.0,
            step_s: 1.0,
        }
    }
}

/// One variant's outcome.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FlashOutcome {
    pub secondaries: bool,
    /// Viewers that were unserved at least once.
    pub viewers_dropped: u32,
    /// Most viewers unserved at one time.
    pub peak_unserved: u32,
    pub unserved_viewer_s: f64,
    pub peak_viewers: u32,
    pub peak_origin_mbps: f64,
    /// Highest egress of any primary edge (its viewers + the secondaries re-streaming from it).
    pub peak_primary_mbps: f64,
    pub secondaries_started: u32,
    pub secondaries_retired: u32,
    /// From the region's demand first reaching its primaries' threshold to the first
    /// secondary serving a viewer (negative: it served before the threshold was reached,
    /// thanks to the look-ahead).
    pub threshold_to_serving_s: Option<f64>,
    /// From the first secondary's start to it serving a viewer.
    pub start_to_serving_s: Option<f64>,
    /// Per second: t, viewers, unserved, secondaries serving, origin and max primary Mbit/s.
    pub timeline: Vec<[f64; 6]>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FlashReport {
    pub name: String,
    pub seed: u64,
    pub config: FlashConfig,
    pub with_secondaries: FlashOutcome,
    pub without_secondaries: FlashOutcome,
}

impl FlashScenario {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))
    }

    /// Whether a scenario file is a flash crowd (has a `[flash]` table).
    pub fn is_flash(path: &Path) -> bool {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| toml::from_str::<toml::Table>(&t).ok())
            .is_some_and(|t| t.contains_key("flash"))
    }

    pub fn run(&self, seed: u64) -> FlashReport {
        FlashReport {
            name: self.name.clone(),
            seed,
            config: self.flash.clone(),
            with_secondaries: simulate(&self.flash, seed, true),
            without_secondaries: simulate(&self.flash, seed, false),
        }
    }
}

struct Viewer {
    id: String,
    arrive: f64,
    leave: f64,
    phase: f64,
    edge: Option<String>,
    next_poll: f64,
    dropped: bool,
}

/// The virtual clock's epoch (the one wall-clock read; everything after is `epoch + t`).
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

fn simulate(c: &FlashConfig, seed: u64, secondaries: bool) -> FlashOutcome {
    let mut flash = Flash::new(c, seed, secondaries);
    let steps = (c.duration_s / c.step_s).ceil() as u64;
    for step in 0..=steps {
        flash.step(step as f64 * c.step_s);
    }
    flash.finish()
}

/// Edges a viewer sits on: edge name → indices of its viewers.
type OnEdge = BTreeMap<String, Vec<usize>>;

/// One run: the traffic manager's policy, the region's edges and viewers, what was measured.
struct Flash<'a> {
    c: &'a FlashConfig,
    t0: Instant,
    /// How long a viewer keeps a steering answer.
    ttl: f64,
    rate_mbps: f64,
    policy: SteeringPolicy,
    primaries: Vec<String>,
    /// By arrival time.
    viewers: Vec<Viewer>,
    /// Secondaries booting: name → when they serve.
    booting: BTreeMap<String, f64>,
    /// Secondary → the primary it re-streams from.
    parents: BTreeMap<String, String>,
    crossed_at: Option<f64>,
    first_start: Option<f64>,
    first_serving: Option<f64>,
    last_report: f64,
    out: FlashOutcome,
}

impl<'a> Flash<'a> {
    fn new(c: &'a FlashConfig, seed: u64, secondaries: bool) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let t0 = epoch();
        let ttl = c.steering_ttl_s.max(0.1);
        let mut policy = SteeringPolicy::new(SteeringConfig {
            threshold: c.threshold,
            secondary_capacity: c.secondary_capacity,
            low_water: c.low_water,
            grace: Duration::from_secs_f64(c.grace_s),
            max_secondaries: if secondaries { c.max_secondaries } else { 0 },
            report_ttl: Duration::from_secs(5),
            session_ttl: Duration::from_secs_f64((ttl * 4.0).max(6.0)),
            start_timeout: Duration::from_secs_f64(c.boot_s + 30.0),
            drain_timeout: Duration::from_secs(120),
            lead: Duration::from_secs_f64(c.lead_s),
            ..SteeringConfig::default()
        });
        let primaries: Vec<String> = (1..=c.primaries).map(|i| format!("edge-{}-{i}", c.region)).collect();
        for p in &primaries {
            policy.edge_seen(t0, p, &c.region, Some(format!("http://{p}")));
        }
        let mut viewers: Vec<Viewer> = (0..c.viewers)
            .map(|i| {
                let arrive = c.start_s + rng.random::<f64>() * c.ramp_s;
                let leave = arrive + c.hold_s + rng.random::<f64>() * c.leave_s;
                Viewer {
                    id: format!("v{i}"),
                    arrive,
                    leave,
                    phase: rng.random::<f64>() * ttl,
                    edge: None,
                    next_poll: 0.0,
                    dropped: false,
                }
            })
            .collect();
        viewers.sort_by(|a, b| a.arrive.total_cmp(&b.arrive));
        Self {
            c,
            t0,
            ttl,
            rate_mbps: f64::from(c.bitrate_kbps) / 1000.0,
            policy,
            primaries,
            viewers,
            booting: BTreeMap::new(),
            parents: BTreeMap::new(),
            crossed_at: None,
            first_start: None,
            first_serving: None,
            last_report: -1.0,
            out: FlashOutcome { secondaries, ..FlashOutcome::default() },
        }
    }

    fn at(&self, t: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(t.max(0.0))
    }

    /// One step at `t`: secondaries come up, viewers arrive, poll and leave, edges report,
    /// the policy acts, and what was served is counted.
    fn step(&mut self, t: f64) {
        let now = self.at(t);
        self.boot_finished(t, now);
        self.steer_viewers(t, now);
        let on_edge = self.viewers_by_edge();
        let live: Vec<(String, EdgeKind, EdgeState)> = self
            .policy
            .edges()
            .filter(|e| e.url.is_some() && matches!(e.state, EdgeState::Serving | EdgeState::Draining))
            .map(|e| (e.name.clone(), e.kind, e.state))
            .collect();
        if t - self.last_report >= 1.0 {
            self.last_report = t;
            self.report_edges(now, &live, &on_edge);
        }
        self.policy.tick(now);
        self.apply_actions(t);
        self.account(t, &on_edge, &live);
    }

    /// Secondaries that finished booting announce themselves.
    fn boot_finished(&mut self, t: f64, now: Instant) {
        let ready: Vec<String> = self.booting.iter().filter(|(_, r)| **r <= t).map(|(n, _)| n.clone()).collect();
        for name in ready {
            self.booting.remove(&name);
            self.policy.edge_seen(now, &name, &self.c.region, Some(format!("http://{name}")));
        }
    }

    /// Arrivals, steering polls (each viewer on its own phase of the TTL), departures.
    fn steer_viewers(&mut self, t: f64, now: Instant) {
        for v in self.viewers.iter_mut() {
            if v.arrive > t {
                break;
            }
            if v.leave <= t {
                v.edge = None;
                continue;
            }
            if v.edge.is_none() && v.next_poll == 0.0 {
                v.next_poll = t + v.phase;
                v.edge = self.policy.choose(now, &self.c.region, &v.id, CHANNEL);
            } else if t >= v.next_poll {
                v.next_poll += self.ttl;
                v.edge = self.policy.choose(now, &self.c.region, &v.id, CHANNEL);
            }
        }
    }

    fn viewers_by_edge(&self) -> OnEdge {
        let mut on_edge = OnEdge::new();
        for (i, v) in self.viewers.iter().enumerate() {
            let Some(e) = &v.edge else { continue };
            match on_edge.get_mut(e.as_str()) {
                Some(list) => list.push(i),
                None => {
                    on_edge.insert(e.clone(), vec![i]);
                }
            }
        }
        on_edge
    }

    /// Once a second every live edge announces itself and reports its viewers.
    fn report_edges(&mut self, now: Instant, live: &[(String, EdgeKind, EdgeState)], on_edge: &OnEdge) {
        for (name, _, _) in live {
            let n = on_edge.get(name).map_or(0, Vec::len);
            let report = EdgeReport {
                viewers: n as u32,
                anonymous: 0,
                // Every simulated viewer polls the steering answer, which keeps its session
                // alive; the list a real edge sends would only repeat that.
                sessions: Vec::new(),
                egress_bps: n as f64 * self.rate_mbps * 1e6,
                channels: vec![CHANNEL.to_string()],
            };
            self.policy.edge_seen(now, name, &self.c.region, None);
            self.policy.edge_report(now, name, report);
        }
    }

    /// Start and stop secondaries as the policy says.
    fn apply_actions(&mut self, t: f64) {
        while let Some(action) = self.policy.poll_action() {
            match action {
                Action::Start { name, parent, .. } => {
                    self.out.secondaries_started += 1;
                    self.first_start.get_or_insert(t);
                    self.booting.insert(name.clone(), t + self.c.boot_s);
                    if let Some(p) = parent {
                        self.parents.insert(name, p);
                    }
                }
                Action::Stop { name } => {
                    self.out.secondaries_retired += 1;
                    self.booting.remove(&name);
                }
            }
        }
    }

    /// What was served this step: viewers over an edge's capacity are unserved (the newest
    /// arrivals fail), primaries carry their viewers and the secondaries re-streaming from them.
    fn account(&mut self, t: f64, on_edge: &OnEdge, live: &[(String, EdgeKind, EdgeState)]) {
        let c = self.c;
        let active: u32 = on_edge.values().map(|l| l.len() as u32).sum();
        let mut unserved = 0u32;
        let mut primary_mbps: BTreeMap<&str, f64> = self.primaries.iter().map(|p| (p.as_str(), 0.0)).collect();
        for (edge, list) in on_edge {
            let n = list.len() as u32;
            let capacity = if live.iter().any(|(s, _, _)| s == edge) { c.edge_capacity } else { 0 };
            let over = n.saturating_sub(capacity);
            unserved += over;
            for &i in list.iter().rev().take(over as usize) {
                self.viewers[i].dropped = true;
            }
            if let Some(m) = primary_mbps.get_mut(edge.as_str()) {
                *m += f64::from(n - over) * self.rate_mbps;
            }
        }
        let live_secondaries: Vec<&String> =
            live.iter().filter(|(_, k, _)| *k == EdgeKind::Secondary).map(|(n, _, _)| n).collect();
        for s in &live_secondaries {
            if let Some(m) = self.parents.get(*s).and_then(|p| primary_mbps.get_mut(p.as_str())) {
                *m += self.rate_mbps;
            }
            if self.first_serving.is_none() && on_edge.get(*s).is_some_and(|l| !l.is_empty()) {
                self.first_serving = Some(t);
            }
        }
        if self.crossed_at.is_none() && active >= c.threshold * c.primaries {
            self.crossed_at = Some(t);
        }
        let origin_mbps = f64::from(c.primaries) * self.rate_mbps;
        let max_primary = primary_mbps.values().copied().fold(0.0, f64::max);
        let out = &mut self.out;
        out.peak_viewers = out.peak_viewers.max(active);
        out.peak_unserved = out.peak_unserved.max(unserved);
        out.unserved_viewer_s += f64::from(unserved) * c.step_s;
        out.peak_origin_mbps = out.peak_origin_mbps.max(origin_mbps);
        out.peak_primary_mbps = out.peak_primary_mbps.max(max_primary);
        if (t.fract()).abs() < 1e-9 {
            let row =
                [t, f64::from(active), f64::from(unserved), live_secondaries.len() as f64, origin_mbps, max_primary];
            out.timeline.push(row);
        }
    }

    fn finish(mut self) -> FlashOutcome {
        self.out.threshold_to_serving_s = self.first_serving.zip(self.crossed_at).map(|(s, c)| s - c);
        self.out.start_to_serving_s = self.first_serving.zip(self.first_start).map(|(s, c)| s - c);
        self.out.viewers_dropped = self.viewers.iter().filter(|v| v.dropped).count() as u32;
        self.out
    }
}

impl std::fmt::Display for FlashReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "flash crowd {}: {} viewers in {} over {:.0} s; {} primaries × {} viewers; threshold {}; boot {:.0} s",
            self.name, c.viewers, c.region, c.ramp_s, c.primaries, c.edge_capacity, c.threshold, c.boot_s
        )?;
        writeln!(f, "{:<34} {:>16} {:>16}", "", "with secondaries", "without")?;
        let (w, o) = (&self.with_secondaries, &self.without_secondaries);
        let row = |f: &mut std::fmt::Formatter<'_>, name: &str, a: String, b: String| {
            writeln!(f, "{name:<34} {a:>16} {b:>16}")
        };
        row(f, "viewers dropped (ever unserved)", w.viewers_dropped.to_string(), o.viewers_dropped.to_string())?;
        row(f, "peak unserved at once", w.peak_unserved.to_string(), o.peak_unserved.to_string())?;
        row(
            f,
            "unserved viewer-seconds",
            format!("{:.0}", w.unserved_viewer_s),
            format!("{:.0}", o.unserved_viewer_s),
        )?;
        row(f, "peak viewers", w.peak_viewers.to_string(), o.peak_viewers.to_string())?;
        row(
            f,
            "peak origin egress, Mbit/s",
            format!("{:.0}", w.peak_origin_mbps),
            format!("{:.0}", o.peak_origin_mbps),
        )?;
        row(
            f,
            "peak primary-edge egress, Mbit/s",
            format!("{:.0}", w.peak_primary_mbps),
            format!("{:.0}", o.peak_primary_mbps),
        )?;
        row(
            f,
            "secondaries started / retired",
            format!("{} / {}", w.secondaries_started, w.secondaries_retired),
            "-".into(),
        )?;
        row(
            f,
            "threshold → secondary serving, s",
            w.threshold_to_serving_s.map_or("-".into(), |s| format!("{s:.1}")),
            "-".into(),
        )?;
        row(
            f,
            "start → secondary serving, s",
            w.start_to_serving_s.map_or("-".into(), |s| format!("{s:.1}")),
            "-".into(),
        )
    }
}
