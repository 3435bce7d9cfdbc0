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
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let t0 = epoch();
    let at = |t: f64| t0 + Duration::from_secs_f64(t.max(0.0));
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

    let mut out = FlashOutcome { secondaries, ..FlashOutcome::default() };
    // Secondaries booting: name → when they serve.
    let mut booting: BTreeMap<String, f64> = BTreeMap::new();
    let mut parents: BTreeMap<String, String> = BTreeMap::new();
    let mut crossed_at: Option<f64> = None;
    let mut first_start: Option<f64> = None;
    let mut first_serving: Option<f64> = None;
    let mut last_report = -1.0;
    let steps = (c.duration_s / c.step_s).ceil() as u64;
    let rate_mbps = f64::from(c.bitrate_kbps) / 1000.0;
    for step in 0..=steps {
        let t = step as f64 * c.step_s;
        let now = at(t);
        // Secondaries that finished booting announce themselves.
        let ready: Vec<String> = booting.iter().filter(|(_, r)| **r <= t).map(|(n, _)| n.clone()).collect();
        for name in ready {
            booting.remove(&name);
            policy.edge_seen(now, &name, &c.region, Some(format!("http://{name}")));
        }
        // Arrivals, polls, departures.
        for v in viewers.iter_mut() {
            if v.arrive > t {
                break;
            }
            if v.leave <= t {
                v.edge = None;
                continue;
            }
            if v.edge.is_none() && v.next_poll == 0.0 {
                v.next_poll = t + v.phase;
                v.edge = policy.choose(now, &c.region, &v.id).map(String::from);
            } else if t >= v.next_poll {
                v.next_poll += ttl;
                v.edge = policy.choose(now, &c.region, &v.id).map(String::from);
            }
        }
        // Edge reports, once a second: every live edge announces and reports its viewers.
        let mut on_edge: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, v) in viewers.iter().enumerate() {
            if let Some(e) = &v.edge {
                on_edge.entry(e.as_str()).or_default().push(i);
            }
        }
        let live: Vec<(String, EdgeKind, EdgeState)> = policy
            .edges()
            .filter(|e| e.url.is_some() && matches!(e.state, EdgeState::Serving | EdgeState::Draining))
            .map(|e| (e.name.clone(), e.kind, e.state))
            .collect();
        if t - last_report >= 1.0 {
            last_report = t;
            for (name, _, _) in &live {
                let list = on_edge.get(name.as_str()).map(Vec::as_slice).unwrap_or(&[]);
                let report = EdgeReport {
                    viewers: list.len() as u32,
                    anonymous: 0,
                    // Every simulated viewer polls the steering answer, which keeps its session
                    // alive; the list a real edge sends would only repeat that.
                    sessions: Vec::new(),
                    egress_bps: list.len() as f64 * rate_mbps * 1e6,
                };
                policy.edge_seen(now, name, &c.region, None);
                policy.edge_report(now, name, report);
            }
        }
        policy.tick(now);
        while let Some(action) = policy.poll_action() {
            match action {
                Action::Start { name, parent, .. } => {
                    out.secondaries_started += 1;
                    first_start.get_or_insert(t);
                    booting.insert(name.clone(), t + c.boot_s);
                    if let Some(p) = parent {
                        parents.insert(name, p);
                    }
                }
                Action::Stop { name } => {
                    out.secondaries_retired += 1;
                    booting.remove(&name);
                }
            }
        }
        // What was served this step.
        let active: u32 = on_edge.values().map(|l| l.len() as u32).sum();
        let mut unserved = 0u32;
        let mut to_drop: Vec<usize> = Vec::new();
        let mut primary_mbps: BTreeMap<&str, f64> = primaries.iter().map(|p| (p.as_str(), 0.0)).collect();
        let serving: Vec<&String> = live.iter().map(|(n, _, _)| n).collect();
        for (edge, list) in &on_edge {
            let n = list.len() as u32;
            let capacity = if serving.iter().any(|s| s.as_str() == *edge) { c.edge_capacity } else { 0 };
            let over = n.saturating_sub(capacity);
            unserved += over;
            // The newest arrivals on an overloaded edge are the ones that fail.
            to_drop.extend(list.iter().rev().take(over as usize));
            let served = f64::from(n - over) * rate_mbps;
            if let Some(m) = primary_mbps.get_mut(*edge) {
                *m += served;
            }
        }
        let live_secondaries =
            live.iter().filter(|(_, k, _)| *k == EdgeKind::Secondary).map(|(n, _, _)| n).collect::<Vec<_>>();
        for s in &live_secondaries {
            if let Some(m) = parents.get(*s).and_then(|p| primary_mbps.get_mut(p.as_str())) {
                *m += rate_mbps;
            }
            if first_serving.is_none() && on_edge.get(s.as_str()).is_some_and(|l| !l.is_empty()) {
                first_serving = Some(t);
            }
        }
        if crossed_at.is_none() && active >= c.threshold * c.primaries {
            crossed_at = Some(t);
        }
        drop(on_edge);
        for i in to_drop {
            viewers[i].dropped = true;
        }
        let origin_mbps = f64::from(c.primaries) * rate_mbps;
        let max_primary = primary_mbps.values().copied().fold(0.0, f64::max);
        out.peak_viewers = out.peak_viewers.max(active);
        out.peak_unserved = out.peak_unserved.max(unserved);
        out.unserved_viewer_s += f64::from(unserved) * c.step_s;
        out.peak_origin_mbps = out.peak_origin_mbps.max(origin_mbps);
        out.peak_primary_mbps = out.peak_primary_mbps.max(max_primary);
        if (t.fract()).abs() < 1e-9 {
            out.timeline.push([
                t,
                f64::from(active),
                f64::from(unserved),
                live_secondaries.len() as f64,
                origin_mbps,
                max_primary,
            ]);
        }
    }
    out.threshold_to_serving_s = first_serving.zip(crossed_at).map(|(s, c)| s - c);
    out.start_to_serving_s = first_serving.zip(first_start).map(|(s, c)| s - c);
    out.viewers_dropped = viewers.iter().filter(|v| v.dropped).count() as u32;
    out
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
