//! The playback-buffer model of a live player (F41): how much content is buffered ahead of the
//! playhead, when it runs dry (a stall), and for how long.
//!
//! Pure arithmetic on arrival times, so the viewer client, the lab and the simulator all count
//! stalls the same way. A player starts once `startup` worth of content is buffered, plays in
//! real time, stalls the instant its buffer is empty, and resumes once `startup` is buffered
//! again. A segment that arrives exactly when the buffer runs dry causes no stall.

use std::time::{Duration, Instant};

/// One stall: when playback stopped for lack of data, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stall {
    pub start: Instant,
    pub duration: Duration,
}

/// What the player is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlayState {
    /// Waiting for the startup buffer.
    Starting,
    Playing,
    /// Out of data since `since`.
    Stalled {
        since: Instant,
    },
}

#[derive(Clone, Debug)]
pub struct PlaybackBuffer {
    startup: Duration,
    state: PlayState,
    /// Content buffered ahead of the playhead, as of `at`.
    level: Duration,
    at: Option<Instant>,
    started_at: Option<Instant>,
    played: Duration,
    stalls: Vec<Stall>,
}

impl PlaybackBuffer {
    /// A player that needs `startup` of content to start and to resume after a stall.
    pub fn new(startup: Duration) -> Self {
        Self {
            startup,
            state: PlayState::Starting,
            level: Duration::ZERO,
            at: None,
            started_at: None,
            played: Duration::ZERO,
            stalls: Vec::new(),
        }
    }

    /// Let time pass: playing consumes content; running out starts a stall at the exact moment
    /// the buffer emptied.
    pub fn advance(&mut self, now: Instant) {
        let Some(at) = self.at else {
            self.at = Some(now);
            return;
        };
        if now <= at {
            return;
        }
        if self.state == PlayState::Playing {
            let elapsed = now - at;
            if elapsed > self.level {
                self.played += self.level;
                self.state = PlayState::Stalled { since: at + self.level };
                self.level = Duration::ZERO;
            } else {
                self.level -= elapsed;
                self.played += elapsed;
            }
        }
        self.at = Some(now);
    }

    /// The next segment (in order), `duration` long, is fully available at `now`.
    pub fn push(&mut self, now: Instant, duration: Duration) {
        self.advance(now);
        self.level += duration;
        if self.level < self.startup {
            return;
        }
        match self.state {
            PlayState::Starting => {
                self.state = PlayState::Playing;
                self.started_at = Some(now);
            }
            PlayState::Stalled { since } => {
                self.stalls.push(Stall { start: since, duration: now - since });
                self.state = PlayState::Playing;
            }
            PlayState::Playing => {}
        }
    }

    /// End of the session at `now`: a stall still going on is recorded up to `now`.
    pub fn finish(&mut self, now: Instant) {
        self.advance(now);
        if let PlayState::Stalled { since } = self.state {
            self.stalls.push(Stall { start: since, duration: now.saturating_duration_since(since) });
            self.state = PlayState::Starting;
        }
    }

    /// When the buffer runs dry if nothing more arrives: the playback deadline of the next
    /// segment. `None` while not playing (then every segment is already urgent).
    pub fn deadline(&self) -> Option<Instant> {
        match (self.state, self.at) {
            (PlayState::Playing, Some(at)) => Some(at + self.level),
            _ => None,
        }
    }

    /// Buffered content as of the last update (call [`Self::advance`] first for "now").
    pub fn level(&self) -> Duration {
        self.level
    }

    pub fn state(&self) -> PlayState {
        self.state
    }

    /// When playback first started, if it has.
    pub fn started_at(&self) -> Option<Instant> {
        self.started_at
    }

    /// Content played so far.
    pub fn played(&self) -> Duration {
        self.played
    }

    /// Completed stalls, oldest first.
    pub fn stalls(&self) -> &[Stall] {
        &self.stalls
    }

    /// Total time spent stalled (completed stalls).
    pub fn stall_time(&self) -> Duration {
        self.stalls.iter().map(|s| s.duration).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// Feed `(arrival_s, duration_s)` segments and finish at `end_s`; return the stalls as
    /// (start_s, duration_s) relative to t0.
    fn run(startup_s: f64, arrivals: &[(f64, f64)], end_s: f64) -> Vec<(f64, f64)> {
        #[allow(clippy::disallowed_methods)] // the test's one clock read: the epoch of its times
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let mut b = PlaybackBuffer::new(Duration::from_secs_f64(startup_s));
        b.advance(t0);
        for &(t, d) in arrivals {
            b.push(at(t), Duration::from_secs_f64(d));
        }
        b.finish(at(end_s));
        b.stalls().iter().map(|s| ((s.start - t0).as_secs_f64(), s.duration.as_secs_f64())).collect()
    }

    fn approx(a: &[(f64, f64)], b: &[(f64, f64)]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x.0 - y.0).abs() < 1e-6 && (x.1 - y.1).abs() < 1e-6)
    }

    #[test]
    fn steady_arrivals_never_stall() {
        let arrivals: Vec<(f64, f64)> = (0..10).map(|i| (i as f64 * 2.0, 2.0)).collect();
        assert!(run(2.0, &arrivals, 20.0).is_empty());
    }

    #[test]
    fn a_late_segment_stalls_from_the_moment_the_buffer_empties() {
        // Starts at t=0 with 2 s; the next segment comes at t=3: dry at t=2 for 1 s.
        let stalls = run(2.0, &[(0.0, 2.0), (3.0, 2.0), (5.0, 2.0)], 7.0);
        assert!(approx(&stalls, &[(2.0, 1.0)]), "{stalls:?}");
    }

    #[test]
    fn a_segment_arriving_exactly_at_its_deadline_does_not_stall() {
        let stalls = run(2.0, &[(0.0, 2.0), (2.0, 2.0), (4.0, 2.0)], 6.0);
        assert!(stalls.is_empty(), "{stalls:?}");
    }

    #[test]
    fn resuming_needs_the_startup_buffer_again() {
        // Startup 4 s: two 2 s segments at t=0; dry at 4; one segment at 5 is not enough, the
        // second at 6 resumes: one stall of 2 s starting at 4.
        let stalls = run(4.0, &[(0.0, 2.0), (0.0, 2.0), (5.0, 2.0), (6.0, 2.0)], 8.0);
        assert!(approx(&stalls, &[(4.0, 2.0)]), "{stalls:?}");
    }

    #[test]
    fn a_source_that_disappears_leaves_an_open_stall_counted_at_the_end() {
        let stalls = run(2.0, &[(0.0, 2.0), (2.0, 2.0)], 10.0);
        assert!(approx(&stalls, &[(4.0, 6.0)]), "{stalls:?}");
    }

    #[test]
    fn deadline_tracks_the_buffer() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut b = PlaybackBuffer::new(2 * S);
        assert_eq!(b.deadline(), None);
        b.push(t0, 2 * S);
        assert_eq!(b.deadline(), Some(t0 + 2 * S));
        b.push(t0 + S, 2 * S);
        assert_eq!(b.deadline(), Some(t0 + 4 * S));
        b.advance(t0 + 5 * S);
        assert!(matches!(b.state(), PlayState::Stalled { .. }));
        assert_eq!(b.played(), 4 * S);
    }
}
