//! Scenarios: what to simulate, as a commented TOML file (see `scenarios/*.toml`).
//!
//! Every key has a default, so a scenario file only states what it changes. Units are in the key
//! names (`_s`, `_ms`, `_km`, `_mbps`, `_kbps`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("invalid scenario: {0}")]
    Invalid(String),
}

/// A whole simulation run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// Seed of every random choice; `None`: the runner picks one and prints it.
    pub seed: Option<u64>,
    /// Simulated time, seconds.
    pub duration_s: f64,
    pub topology: TopologySpec,
    pub links: LinkSpec,
    pub node: NodeSpec,
    pub workload: Workload,
    pub faults: Faults,
    pub checks: Checks,
}

/// The relay graph: a random geometric graph, or a file naming every link.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopologySpec {
    /// Relays (the origin comes on top).
    pub relays: usize,
    /// Each node links to its `k` nearest nodes (links are then made symmetric).
    pub k: usize,
    /// The origin links to its `origin_k` nearest relays.
    pub origin_k: usize,
    /// Side of the square the nodes are scattered in, km.
    pub area_km: f64,
    /// Signal speed in fibre, km per ms (one-way latency = distance / speed + `hop_ms`).
    pub km_per_ms: f64,
    /// Fixed per-link latency (switching, last mile), ms.
    pub hop_ms: f64,
    /// `"center"` or `"random"`.
    pub origin_at: OriginPlacement,
    /// A topology file instead of a random graph (relative to the scenario file).
    pub file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OriginPlacement {
    Center,
    Random,
}

/// Every link's capacity and loss.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkSpec {
    /// Link bandwidth in each direction, Mbit/s (0: unlimited, no serialisation delay).
    pub bandwidth_mbps: f64,
    /// Probability that a frame is lost once (QUIC then retransmits it after one RTO).
    pub loss: f64,
    /// Retransmission timeout as a multiple of the one-way latency...
    pub rto_latency_factor: f64,
    /// ... and at least this, ms.
    pub rto_min_ms: f64,
}

/// Tunables of every node (`relaycast_core::NodeConfig`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSpec {
    /// Keep-alive interval, ms; a parent silent for ~3 of them is replaced.
    pub keepalive_ms: u64,
    /// How often the origin floods the tree, ms.
    pub flood_interval_ms: u64,
    /// Children a relay accepts.
    pub max_children: usize,
    /// Children the origin accepts (default: `max_children`).
    pub origin_max_children: Option<usize>,
    /// Segments kept per rendition.
    pub window_len: usize,
    /// Segments sent to a subscriber that has nothing yet.
    pub join_backfill: usize,
    /// A relay releases a channel nobody wanted for this long, s.
    pub idle_timeout_s: f64,
    /// A gap in a window is given up on after this long, ms.
    pub gap_timeout_ms: u64,
}

/// The stream and its viewers.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Workload {
    pub channel: String,
    pub rendition: String,
    /// Segment duration (one segment published every `segment_s`), s.
    pub segment_s: f64,
    /// Parts per segment (low-latency renditions): the origin publishes each part when it is
    /// made and relays forward parts cut-through; 0 publishes whole segments.
    pub parts_per_segment: u32,
    /// Stream bitrate, kbit/s (segment size = bitrate × segment_s).
    pub bitrate_kbps: u64,
    /// First segment published at this time, s.
    pub publish_from_s: f64,
    /// Fraction of relays with viewers.
    pub viewer_fraction: f64,
    /// Viewers ask their relay for the channel this often, s.
    pub viewer_interval_s: f64,
    /// Viewers start asking at this time, s.
    pub viewers_from_s: f64,
}

/// Failures injected on a schedule.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Fraction of relays crashed, each at a random time in `kill_window_s`.
    pub kill_fraction: f64,
    /// `[from, to]`, s.
    pub kill_window_s: Option<[f64; 2]>,
    /// A crashed relay restarts (fresh state) after this long, s; absent: never.
    pub restart_after_s: Option<f64>,
    /// Random partitions: a fraction of links silently down for an interval.
    pub partition: Vec<PartitionSpec>,
    /// Explicit actions on named nodes.
    pub event: Vec<FaultEvent>,
    /// After a connection closes while both ends live, redial after this long, ms.
    pub redial_ms: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionSpec {
    /// Start, s.
    pub at_s: f64,
    /// Length, s.
    pub duration_s: f64,
    /// Fraction of all links cut.
    #[serde(default)]
    pub links_fraction: f64,
    /// Nodes cut off from all their neighbours.
    #[serde(default)]
    pub isolate: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultEvent {
    /// When, s.
    pub at_s: f64,
    pub action: FaultAction,
    pub node: String,
    /// For `isolate`: how long, s.
    #[serde(default)]
    pub duration_s: Option<f64>,
}

/// turmoil's vocabulary, for whole nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultAction {
    /// The node stops; nobody is told.
    Crash,
    /// A crashed node comes back with fresh state and redials its neighbours.
    Restart,
    /// Crash and restart at once.
    Bounce,
    /// Every link of the node silently drops frames for `duration_s`.
    Isolate,
}

/// What the run must satisfy, and how it is measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Checks {
    /// Segments published in the last this-many seconds may still be in flight at the end.
    pub delivery_slack_s: f64,
    /// A viewer relay alive and connected this long must have received something, s.
    pub starved_after_s: f64,
    /// Check the whole parent graph for cycles at every publish and fault (it is also checked
    /// at every parent change, locally).
    pub global_checks: bool,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "custom".into(),
            seed: None,
            duration_s: 60.0,
            topology: TopologySpec::default(),
            links: LinkSpec::default(),
            node: NodeSpec::default(),
            workload: Workload::default(),
            faults: Faults::default(),
            checks: Checks::default(),
        }
    }
}

impl Default for TopologySpec {
    fn default() -> Self {
        Self {
            relays: 50,
            k: 5,
            origin_k: 5,
            area_km: 4000.0,
            km_per_ms: 200.0,
            hop_ms: 1.0,
            origin_at: OriginPlacement::Center,
            file: None,
        }
    }
}

impl Default for LinkSpec {
    fn default() -> Self {
        Self { bandwidth_mbps: 100.0, loss: 0.0, rto_latency_factor: 3.0, rto_min_ms: 20.0 }
    }
}

impl Default for NodeSpec {
    fn default() -> Self {
        let d = relaycast_core::NodeConfig::default();
        Self {
            keepalive_ms: d.keepalive.as_millis() as u64,
            flood_interval_ms: d.flood_interval.as_millis() as u64,
            max_children: d.max_children,
            origin_max_children: None,
            window_len: d.window_len,
            join_backfill: d.join_backfill,
            idle_timeout_s: d.idle_timeout.as_secs_f64(),
            gap_timeout_ms: d.gap_timeout.as_millis() as u64,
        }
    }
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            channel: "live".into(),
            rendition: "src".into(),
            segment_s: 2.0,
            parts_per_segment: 0,
            bitrate_kbps: 1000,
            publish_from_s: 0.0,
            viewer_fraction: 0.3,
            viewer_interval_s: 1.0,
            viewers_from_s: 0.0,
        }
    }
}

impl Default for Checks {
    fn default() -> Self {
        Self { delivery_slack_s: 6.0, starved_after_s: 20.0, global_checks: true }
    }
}

impl Scenario {
    /// Load a scenario file; a relative `topology.file` is resolved against its folder.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ScenarioError::Read { path: path.to_owned(), source })?;
        let mut s = Self::parse(&text).map_err(|e| match e {
            ScenarioError::Parse { source, .. } => ScenarioError::Parse { path: path.to_owned(), source },
            other => other,
        })?;
        if let Some(f) = &s.topology.file
            && f.is_relative()
        {
            s.topology.file = Some(path.parent().unwrap_or(Path::new(".")).join(f));
        }
        Ok(s)
    }

    /// Parse and validate scenario TOML.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let s: Self =
            toml::from_str(text).map_err(|e| ScenarioError::Parse { path: PathBuf::new(), source: Box::new(e) })?;
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |m: &str| Err(ScenarioError::Invalid(m.to_string()));
        if !positive(self.duration_s) {
            return bad("duration_s must be positive");
        }
        if !positive(self.workload.segment_s) || !positive(self.workload.viewer_interval_s) {
            return bad("workload.segment_s and workload.viewer_interval_s must be positive");
        }
        if !(0.0..=1.0).contains(&self.workload.viewer_fraction) || !(0.0..=1.0).contains(&self.faults.kill_fraction) {
            return bad("fractions must be within [0, 1]");
        }
        if !(0.0..1.0).contains(&self.links.loss) {
            return bad("links.loss must be within [0, 1)");
        }
        if self.links.bandwidth_mbps < 0.0 {
            return bad("links.bandwidth_mbps must not be negative");
        }
        if self.topology.file.is_none() && (self.topology.k == 0 || self.topology.km_per_ms <= 0.0) {
            return bad("topology.k and topology.km_per_ms must be positive");
        }
        if self.node.keepalive_ms == 0 || self.node.flood_interval_ms == 0 {
            return bad("node.keepalive_ms and node.flood_interval_ms must be positive");
        }
        if relaycast_core::Name::new(self.workload.channel.clone()).is_err()
            || relaycast_core::Name::new(self.workload.rendition.clone()).is_err()
        {
            return bad("workload.channel and workload.rendition must be valid names");
        }
        Ok(())
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s)
    }

    /// Bytes of one segment.
    pub fn segment_bytes(&self) -> usize {
        (self.workload.bitrate_kbps as f64 * 1000.0 / 8.0 * self.workload.segment_s) as usize
    }

    /// The repair bound without the RTT term: 3 keep-alive intervals.
    pub fn repair_bound_base(&self) -> Duration {
        Duration::from_millis(3 * self.node.keepalive_ms)
    }
}

/// Greater than zero (false for NaN).
fn positive(x: f64) -> bool {
    x > 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_scenario_takes_defaults_and_unknown_keys_are_refused() {
        let s = Scenario::parse("duration_s = 10").unwrap();
        assert_eq!(s.topology.relays, 50);
        assert_eq!(s.segment_bytes(), 250_000);
        assert!(Scenario::parse("duraton_s = 10").is_err());
        assert!(Scenario::parse("duration_s = 10\n[workload]\nviewer_fraction = 2").is_err());
    }

    #[test]
    fn the_committed_tree_scenarios_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
        for (file, relays) in [("tree-1k.toml", 1_000), ("tree-10k.toml", 10_000), ("tree-100k.toml", 100_000)] {
            let s = Scenario::load(&dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            s.validate().unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(s.topology.relays, relays, "{file}");
        }
    }
}
