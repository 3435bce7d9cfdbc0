//! Server-side bitrate adaptation (F30): which rendition of a ladder an edge sends to each of
//! its "auto" viewers, decided per segment.
//!
//! The edge knows two things a player does not: how much egress capacity it has, and how many
//! viewers currently share it. Each viewer's *share* is its max-min fair share of the capacity
//! among the current auto viewers, where a viewer whose measured delivery rate is lower than an
//! equal split (a slow client) is capped at that rate and leaves the rest to the others. The
//! policy picks the highest rendition whose bandwidth fits the share:
//!
//! - **down at once**: when the current rendition no longer fits, drop straight to the one that
//!   does (a stall costs more than a lower picture);
//! - **up one step, with hysteresis**: only when the next rendition fits with
//!   [`AbrConfig::up_headroom`] to spare, continuously for [`AbrConfig::up_hold`];
//! - **only at segment boundaries**: asking again for the same segment returns the same answer.
//!
//! Sans-IO: the caller passes `now`, the ladder and the capacity, and reports each delivery.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A viewer delivered at less than this fraction of an equal split is limited by its own link.
const SLOW_CLIENT: f64 = 0.5;

/// Tuning of the policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AbrConfig {
    /// Going up needs the next rendition's bandwidth × this to fit the share.
    pub up_headroom: f64,
    /// ... continuously for this long.
    pub up_hold: Duration,
    /// A viewer silent for this long no longer counts as sharing the capacity.
    pub idle_after: Duration,
    /// Weight of the newest delivery in a viewer's smoothed delivery rate (0..=1).
    pub rate_weight: f64,
}

impl Default for AbrConfig {
    fn default() -> Self {
        Self { up_headroom: 1.2, up_hold: Duration::from_secs(4), idle_after: Duration::from_secs(8), rate_weight: 0.3 }
    }
}

/// One decision: the rendition index into the ladder (0 = lowest bandwidth) and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub index: usize,
    /// The viewer's share of the capacity in bit/s (`f64::INFINITY` when nothing limits it).
    pub share_bps: f64,
    /// The viewer's smoothed measured delivery rate, if any delivery was measured yet.
    pub rate_bps: Option<f64>,
    /// Viewers currently sharing the capacity (this one included).
    pub viewers: usize,
}

/// A viewer session's state.
#[derive(Debug, Clone)]
struct Session {
    last_seen: Instant,
    /// Smoothed delivery rate in bit/s.
    rate_bps: Option<f64>,
    current: Option<usize>,
    /// Since when the next rendition up has fitted with headroom.
    up_since: Option<Instant>,
    /// The decision for the last segment asked for, so a retry gets the same bytes.
    last: Option<(u64, Decision)>,
}

/// The policy's state for one edge and one ladder: every auto viewer session by id.
#[derive(Debug, Clone, Default)]
pub struct AbrPolicy {
    config: AbrConfig,
    sessions: BTreeMap<u64, Session>,
}

impl AbrPolicy {
    pub fn new(config: AbrConfig) -> Self {
        Self { config, sessions: BTreeMap::new() }
    }

    /// Register (or touch) a session.
    pub fn join(&mut self, now: Instant, session: u64) {
        self.sessions.entry(session).and_modify(|s| s.last_seen = now).or_insert(Session {
            last_seen: now,
            rate_bps: None,
            current: None,
            up_since: None,
            last: None,
        });
    }

    /// Whether `session` is known (and not expired).
    pub fn knows(&self, session: u64) -> bool {
        self.sessions.contains_key(&session)
    }

    /// Drop sessions silent for longer than [`AbrConfig::idle_after`].
    pub fn expire(&mut self, now: Instant) {
        let idle = self.config.idle_after;
        self.sessions.retain(|_, s| now.saturating_duration_since(s.last_seen) <= idle);
    }

    /// Viewers currently sharing the capacity.
    pub fn active(&self, now: Instant) -> usize {
        self.sessions.values().filter(|s| self.is_active(now, s)).count()
    }

    /// The rendition for segment `seq` of `session`. `ladder` holds each rendition's bandwidth
    /// in bit/s, ascending; `capacity_bps` is the edge's egress capacity (`None`: unlimited).
    /// Returns `None` for an empty ladder.
    pub fn choose(
        &mut self,
        now: Instant,
        session: u64,
        seq: u64,
        ladder: &[u64],
        capacity_bps: Option<u64>,
    ) -> Option<Decision> {
        if ladder.is_empty() {
            return None;
        }
        self.join(now, session);
        if let Some((s, d)) = self.sessions.get(&session).and_then(|s| s.last)
            && s == seq
            && d.index < ladder.len()
        {
            return Some(d);
        }
        let share = self.share(now, session, capacity_bps);
        let viewers = self.active(now);
        let config = self.config;
        // Invariant: `join` above inserted the session.
        let s = self.sessions.get_mut(&session).expect("joined above");
        let fits = |bw: u64| bw as f64 <= share;
        let best = ladder.iter().rposition(|&bw| fits(bw)).unwrap_or(0);
        let index = match s.current.filter(|&c| c < ladder.len()) {
            // First segment: the best fit. (Starting a step lower, with the headroom an up-switch
            // needs, kept a crowd whose share sits just above a rendition below it for good.)
            None => best,
            Some(cur) if best < cur => {
                s.up_since = None;
                best
            }
            Some(cur) if cur + 1 < ladder.len() && ladder[cur + 1] as f64 * config.up_headroom <= share => {
                let since = *s.up_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= config.up_hold {
                    s.up_since = None;
                    cur + 1
                } else {
                    cur
                }
            }
            Some(cur) => {
                s.up_since = None;
                cur
            }
        };
        s.current = Some(index);
        let decision = Decision { index, share_bps: share, rate_bps: s.rate_bps, viewers };
        s.last = Some((seq, decision));
        Some(decision)
    }

    /// `session`'s own link took `bytes` in `elapsed` (the time it held the sender up): update
    /// its smoothed delivery rate.
    pub fn delivered(&mut self, now: Instant, session: u64, bytes: u64, elapsed: Duration) {
        let Some(s) = self.sessions.get_mut(&session) else { return };
        s.last_seen = now;
        // Tiny bodies or instant sends say nothing about the path.
        if bytes < 4096 || elapsed.is_zero() {
            return;
        }
        let rate = bytes as f64 * 8.0 / elapsed.as_secs_f64();
        let w = self.config.rate_weight.clamp(0.0, 1.0);
        s.rate_bps = Some(match s.rate_bps {
            Some(old) => old * (1.0 - w) + rate * w,
            None => rate,
        });
    }

    /// A segment reached `session` with nothing on its side holding it back: forget any
    /// measured limit.
    pub fn not_limited(&mut self, now: Instant, session: u64) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.last_seen = now;
            s.rate_bps = None;
        }
    }

    /// `session`'s fair share of `capacity_bps` among the active sessions.
    ///
    /// A viewer whose measured delivery rate is below half an equal split is limited by its own
    /// link, not by the edge: it is given its rate, and what it cannot use is split among the
    /// others (max-min fairness). Rates above that are not used as caps: behind a shared egress
    /// every download is slowed by the others, so those rates measure the crowd, not the client,
    /// and capping by them would hand the "spare" capacity to whoever happened to measure fast.
    pub fn share(&self, now: Instant, session: u64, capacity_bps: Option<u64>) -> f64 {
        let own_rate = self.sessions.get(&session).and_then(|s| s.rate_bps);
        let Some(capacity) = capacity_bps else { return own_rate.unwrap_or(f64::INFINITY) };
        let capacity = capacity as f64;
        let rates: Vec<Option<f64>> = self
            .sessions
            .iter()
            .filter(|(id, s)| **id == session || self.is_active(now, s))
            .map(|(_, s)| s.rate_bps)
            .collect();
        let equal = capacity / rates.len().max(1) as f64;
        let limited = |r: Option<f64>| r.filter(|&r| r < SLOW_CLIENT * equal);
        if let Some(r) = limited(own_rate) {
            return r;
        }
        let (slow_sum, slow_n) =
            rates.iter().filter_map(|&r| limited(r)).fold((0.0, 0usize), |(sum, n), r| (sum + r, n + 1));
        (capacity - slow_sum) / (rates.len() - slow_n).max(1) as f64
    }

    fn is_active(&self, now: Instant, s: &Session) -> bool {
        now.saturating_duration_since(s.last_seen) <= self.config.idle_after
    }
}

/// The player-side rule, for comparison with the server's (F31): what a client such as hls.js
/// does on its own. It keeps a fast and a slow moving average of measured segment throughput,
/// trusts the lower one, goes up only to a rendition that fits in 70 % of it and stays while the
/// current one fits in 95 % (hls.js's `abrBandWidthUpFactor` and `abrBandWidthFactor`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientAbr {
    fast: f64,
    slow: f64,
    samples: u32,
}

impl ClientAbr {
    /// Weights of the newest sample in the fast and the slow average.
    const FAST: f64 = 0.5;
    const SLOW: f64 = 0.15;
    const UP: f64 = 0.7;
    const STAY: f64 = 0.95;

    /// Start from `default_bps` (hls.js: 500 kbit/s) until real samples come in.
    pub fn new(default_bps: f64) -> Self {
        Self { fast: default_bps, slow: default_bps, samples: 0 }
    }

    /// A segment of `bytes` took `elapsed` to download.
    pub fn sample(&mut self, bytes: u64, elapsed: Duration) {
        if elapsed.is_zero() || bytes == 0 {
            return;
        }
        let bps = bytes as f64 * 8.0 / elapsed.as_secs_f64();
        if self.samples == 0 {
            (self.fast, self.slow) = (bps, bps);
        } else {
            self.fast += (bps - self.fast) * Self::FAST;
            self.slow += (bps - self.slow) * Self::SLOW;
        }
        self.samples += 1;
    }

    /// The throughput estimate in bit/s.
    pub fn estimate(&self) -> f64 {
        self.fast.min(self.slow)
    }

    /// The rendition to fetch next, given the ladder (bit/s, ascending) and the current index.
    pub fn choose(&self, ladder: &[u64], current: usize) -> usize {
        if ladder.is_empty() {
            return 0;
        }
        let e = self.estimate();
        let current = current.min(ladder.len() - 1);
        let up = ladder.iter().rposition(|&bw| bw as f64 <= Self::UP * e).unwrap_or(0);
        if up > current {
            up
        } else if ladder[current] as f64 <= Self::STAY * e {
            current
        } else {
            ladder.iter().rposition(|&bw| bw as f64 <= Self::STAY * e).unwrap_or(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LADDER: [u64; 3] = [300_000, 800_000, 2_000_000];

    fn policy() -> (AbrPolicy, Instant) {
        #[allow(clippy::disallowed_methods)] // the test's one clock read: the epoch of its times
        let t0 = Instant::now();
        (AbrPolicy::new(AbrConfig::default()), t0)
    }

    #[test]
    fn ample_bandwidth_gets_the_top_rendition() {
        let (mut p, t0) = policy();
        let d = p.choose(t0, 1, 100, &LADDER, Some(100_000_000)).unwrap();
        assert_eq!(d.index, 2);
        let d = p.choose(t0, 2, 100, &LADDER, None).unwrap();
        assert_eq!(d.index, 2, "no cap and nothing measured: nothing limits");
    }

    #[test]
    fn falling_shared_capacity_steps_down_at_once() {
        let (mut p, t0) = policy();
        let cap = Some(10_000_000);
        assert_eq!(p.choose(t0, 0, 1, &LADDER, cap).unwrap().index, 2);
        // Viewers join: 10 Mbit/s among 8 is 1.25 Mbit/s each -> 800 kbit/s.
        for v in 1..8 {
            p.join(t0, v);
        }
        let d = p.choose(t0 + Duration::from_secs(2), 0, 2, &LADDER, cap).unwrap();
        assert_eq!((d.index, d.viewers), (1, 8), "{d:?}");
        // 30 viewers: 333 kbit/s each -> 300 kbit/s, skipping no step on the way down.
        for v in 8..30 {
            p.join(t0 + Duration::from_secs(2), v);
        }
        assert_eq!(p.choose(t0 + Duration::from_secs(4), 0, 3, &LADDER, cap).unwrap().index, 0);
    }

    #[test]
    fn rising_capacity_steps_up_one_at_a_time_with_hysteresis() {
        let (mut p, t0) = policy();
        let mut seq = 0;
        let mut at = |p: &mut AbrPolicy, s: u64, cap: u64| {
            seq += 1;
            p.choose(t0 + Duration::from_secs(s), 0, seq, &LADDER, Some(cap)).unwrap().index
        };
        assert_eq!(at(&mut p, 0, 350_000), 0);
        // Enough for the top, but up goes one step and only after 4 s of headroom.
        assert_eq!(at(&mut p, 2, 50_000_000), 0, "headroom must be sustained first");
        assert_eq!(at(&mut p, 4, 50_000_000), 0);
        assert_eq!(at(&mut p, 6, 50_000_000), 1, "4 s of headroom: one step up");
        assert_eq!(at(&mut p, 8, 50_000_000), 1, "the hold starts again for the next step");
        assert_eq!(at(&mut p, 10, 50_000_000), 1);
        assert_eq!(at(&mut p, 12, 50_000_000), 2);
        // Fits, but without 20 % headroom: no step up however long it lasts.
        assert_eq!(at(&mut p, 16, 900_000), 1);
        for s in 18..40 {
            assert_eq!(at(&mut p, s, 900_000), 1);
        }
        // Headroom interrupted resets the hold.
        assert_eq!(at(&mut p, 40, 2_500_000), 1);
        assert_eq!(at(&mut p, 43, 900_000), 1);
        assert_eq!(at(&mut p, 44, 2_500_000), 1);
        assert_eq!(at(&mut p, 47, 2_500_000), 1, "only 3 s since the headroom came back");
        assert_eq!(at(&mut p, 48, 2_500_000), 2);
    }

    #[test]
    fn a_slow_client_gets_less_than_a_fast_one_on_the_same_edge() {
        let (mut p, t0) = policy();
        let cap = Some(4_000_000);
        p.join(t0, 1);
        p.join(t0, 2);
        // Client 1 drains at 500 kbit/s (its own link), client 2 as fast as the edge sends.
        p.delivered(t0, 1, 125_000, Duration::from_secs(2));
        p.delivered(t0, 2, 1_000_000, Duration::from_secs(1));
        let slow = p.choose(t0, 1, 10, &LADDER, cap).unwrap();
        let fast = p.choose(t0, 2, 10, &LADDER, cap).unwrap();
        assert_eq!(slow.index, 0, "{slow:?}");
        assert_eq!(fast.index, 2, "{fast:?}");
        // Max-min fairness: what the slow client cannot use goes to the fast one.
        assert!((slow.share_bps - 500_000.0).abs() < 1.0 && (fast.share_bps - 3_500_000.0).abs() < 1.0);
    }

    #[test]
    fn decisions_change_only_at_segment_boundaries() {
        let (mut p, t0) = policy();
        let first = p.choose(t0, 1, 5, &LADDER, Some(10_000_000)).unwrap();
        for v in 2..40 {
            p.join(t0, v);
        }
        let again = p.choose(t0 + Duration::from_secs(1), 1, 5, &LADDER, Some(10_000_000)).unwrap();
        assert_eq!(first.index, again.index, "a retry of segment 5 gets the same rendition");
        let next = p.choose(t0 + Duration::from_secs(1), 1, 6, &LADDER, Some(10_000_000)).unwrap();
        assert_eq!(next.index, 0);
    }

    #[test]
    fn silent_viewers_stop_counting() {
        let (mut p, t0) = policy();
        for v in 0..30 {
            p.join(t0, v);
        }
        assert_eq!(p.active(t0), 30);
        p.join(t0 + Duration::from_secs(20), 0);
        assert_eq!(p.active(t0 + Duration::from_secs(20)), 1);
        p.expire(t0 + Duration::from_secs(20));
        assert!(p.knows(0) && !p.knows(1));
        assert!(p.share(t0 + Duration::from_secs(20), 0, Some(1_000_000)) >= 999_999.0);
    }

    #[test]
    fn empty_ladder_has_no_decision() {
        let (mut p, t0) = policy();
        assert!(p.choose(t0, 1, 1, &[], None).is_none());
    }

    #[test]
    fn the_client_rule_follows_its_own_throughput() {
        let mut c = ClientAbr::new(500_000.0);
        assert_eq!(c.choose(&LADDER, 0), 0, "500 kbit/s default: 300k fits 70 %");
        for _ in 0..5 {
            c.sample(1_000_000, Duration::from_secs(1)); // 8 Mbit/s
        }
        assert_eq!(c.choose(&LADDER, 0), 2);
        c.sample(100_000, Duration::from_secs(1)); // 800 kbit/s once: one slow segment is tolerated
        assert_eq!(c.choose(&LADDER, 2), 2);
        c.sample(100_000, Duration::from_secs(1));
        c.sample(100_000, Duration::from_secs(1)); // the fast average follows a lasting drop
        let after_drop = c.choose(&LADDER, 2);
        assert!(after_drop < 2, "{c:?}");
        assert_eq!(c.choose(&[], 0), 0);
    }

    #[test]
    fn rates_slowed_by_the_crowd_do_not_hand_one_viewer_the_rest() {
        let (mut p, t0) = policy();
        let cap = 20_000_000u64;
        for v in 0..30 {
            p.join(t0, v);
            // Behind the shared egress everyone measures a little under an equal split...
            p.delivered(t0, v, 60_000, Duration::from_secs_f64(60_000.0 * 8.0 / (0.9 * cap as f64 / 30.0)));
        }
        // ...except one whose last download happened to run alone.
        p.delivered(t0, 0, 1_000_000, Duration::from_millis(400));
        let lucky = p.share(t0, 0, Some(cap));
        assert!((lucky - cap as f64 / 30.0).abs() < 1.0, "{lucky}");
        assert!((p.share(t0, 7, Some(cap)) - cap as f64 / 30.0).abs() < 1.0);
    }

    #[test]
    fn a_client_that_stops_being_slow_gets_its_share_back() {
        let (mut p, t0) = policy();
        p.join(t0, 1);
        p.join(t0, 2);
        p.delivered(t0, 1, 125_000, Duration::from_secs(2));
        assert!(p.share(t0, 1, Some(4_000_000)) < 600_000.0);
        p.not_limited(t0, 1);
        assert_eq!(p.share(t0, 1, Some(4_000_000)), 2_000_000.0);
    }
}
