//! Drives the viewer's multi-source scheduler against simulated HTTP sources on a virtual clock
//! (each source: a rate in bytes/s that can change over time, a fixed latency, or failure) and
//! proves: every segment is delivered exactly once and in order; a second source cuts stalls
//! when the first is throttled below the stream's bitrate; a failing or removed source is
//! replaced without a gap; hedging costs few duplicate bytes when sources are healthy.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use relaycast_core::multisource::{Action, Mode, RequestId, Scheduler, SchedulerConfig};

const SEG: Duration = Duration::from_secs(2);
const SEG_BYTES: u64 = 250_000; // 1 Mbit/s stream

/// A source's behaviour: bytes per second as a function of time since start, or failing.
#[derive(Clone)]
struct Source {
    latency: Duration,
    /// (from_s, bytes_per_s) steps; the last one at or before t applies.
    rate: Vec<(f64, f64)>,
    fails_after_s: Option<f64>,
}

impl Source {
    fn steady(bytes_per_s: f64) -> Self {
        Self { latency: Duration::from_millis(20), rate: vec![(0.0, bytes_per_s)], fails_after_s: None }
    }

    fn rate_at(&self, t: f64) -> f64 {
        self.rate.iter().rev().find(|(from, _)| *from <= t).map_or(self.rate[0].1, |(_, r)| *r)
    }
}

struct Flight {
    source: usize,
    started: f64,
    got: u64,
}

struct Outcome {
    delivered: Vec<u64>,
    /// (seq, source) of every delivered segment.
    sources: Vec<(u64, usize)>,
    stalls: usize,
    stall_time: Duration,
    bytes: u64,
    duplicate_bytes: u64,
    skipped: Vec<u64>,
}

/// Run a 60 s live stream (a new 2 s segment every 2 s) through the scheduler.
fn run(mode: Mode, sources: Vec<Source>, remove_at: Option<(f64, usize)>) -> Outcome {
    #[allow(clippy::disallowed_methods)] // the harness's one clock read: its virtual epoch
    let t0 = Instant::now();
    let at = |s: f64| t0 + Duration::from_secs_f64(s);
    let config = SchedulerConfig { mode, ..SchedulerConfig::default() };
    let mut sched = Scheduler::new(config, sources.len());
    let mut flights: BTreeMap<RequestId, Flight> = BTreeMap::new();
    let mut out = Outcome {
        delivered: vec![],
        sources: vec![],
        stalls: 0,
        stall_time: Duration::ZERO,
        bytes: 0,
        duplicate_bytes: 0,
        skipped: vec![],
    };
    let dt = 0.05;
    let end = 60.0;
    let mut t = 0.0;
    // Six segments already exist when the viewer joins; then one more every 2 s.
    let first_seq = 100u64;
    let mut produced = 6u64;
    let window = |produced: u64| -> Vec<(u64, Duration)> {
        (produced.saturating_sub(6)..produced).map(|i| (first_seq + i, SEG)).collect()
    };
    for s in 0..sources.len() {
        sched.playlist(at(t), s, &window(produced));
    }
    let mut removed = false;
    while t < end {
        if t >= produced as f64 * 2.0 - 12.0 {
            produced += 1;
            for s in 0..sources.len() {
                sched.playlist(at(t), s, &window(produced));
            }
            sched.oldest_listed(at(t), (first_seq + produced).saturating_sub(6));
        }
        if let Some((when, which)) = remove_at
            && !removed
            && t >= when
        {
            sched.remove_source(at(t), which);
            removed = true;
        }
        // Progress every flight by this step's bytes (one request per source at a time, shared).
        let ids: Vec<RequestId> = flights.keys().copied().collect();
        for id in ids {
            let f = flights.get_mut(&id).unwrap();
            let src = &sources[f.source];
            if src.fails_after_s.is_some_and(|x| t >= x) {
                flights.remove(&id);
                sched.failed(at(t), id);
                continue;
            }
            if t - f.started < src.latency.as_secs_f64() {
                continue;
            }
            let sharing = 1.0; // sources serve one request at a time in this harness
            let step = ((src.rate_at(t) * dt / sharing) as u64).min(SEG_BYTES - f.got);
            if f.got == 0 {
                sched.first_byte(at(t), id, Some(SEG_BYTES));
            }
            f.got += step;
            out.bytes += step;
            sched.progress(at(t), id, step);
            if f.got >= SEG_BYTES {
                flights.remove(&id);
                sched.completed(at(t), id);
            }
        }
        sched.handle_timeout(at(t));
        while let Some(a) = sched.poll_action() {
            match a {
                Action::Fetch { req, source, .. } => {
                    flights.insert(req, Flight { source, started: t, got: 0 });
                }
                Action::Cancel { req } => {
                    if let Some(f) = flights.remove(&req) {
                        out.duplicate_bytes += f.got;
                    } else {
                        out.duplicate_bytes += SEG_BYTES; // a completed copy that lost the race
                    }
                }
                Action::Deliver { seq, source, .. } => {
                    out.delivered.push(seq);
                    out.sources.push((seq, source));
                }
                Action::Skip { seq } => out.skipped.push(seq),
                Action::DeliverSupplied { .. } => unreachable!("nothing is supplied from elsewhere here"),
            }
        }
        t += dt;
    }
    sched.finish(at(end));
    out.stalls = sched.buffer().stalls().len();
    out.stall_time = sched.buffer().stall_time();
    out
}

#[test]
fn alternate_mode_takes_segment_k_from_source_k_mod_n() {
    let o = run(Mode::Alternate, vec![Source::steady(400_000.0), Source::steady(400_000.0)], None);
    assert_in_order_once(&o);
    for (seq, source) in &o.sources {
        assert_eq!(*source as u64, seq % 2, "segment {seq} came from source {source}");
    }
}

fn assert_in_order_once(o: &Outcome) {
    assert!(!o.delivered.is_empty());
    for w in o.delivered.windows(2) {
        assert_eq!(w[1], w[0] + 1, "segments delivered in order, each once, no gap: {:?}", o.delivered);
    }
}

/// 1 Mbit/s stream = 125 kB/s; 400 kB/s is ample; 60 kB/s is below the bitrate.
fn throttled_for_a_while() -> Source {
    Source {
        latency: Duration::from_millis(20),
        rate: vec![(0.0, 400_000.0), (15.0, 60_000.0), (35.0, 400_000.0)],
        fails_after_s: None,
    }
}

#[test]
fn one_healthy_source_plays_without_stalls() {
    let o = run(Mode::Adaptive, vec![Source::steady(400_000.0)], None);
    assert_in_order_once(&o);
    assert_eq!(o.stalls, 0, "stall time {:?}", o.stall_time);
    assert!(o.delivered.len() >= 25, "{}", o.delivered.len());
    assert_eq!(o.duplicate_bytes, 0);
}

#[test]
fn a_second_source_removes_the_stalls_of_a_throttled_one() {
    let single = run(Mode::Adaptive, vec![throttled_for_a_while()], None);
    assert!(
        single.stalls >= 1,
        "the throttle is meant to stall a single source: {:?} delivered {}",
        single.stall_time,
        single.delivered.len()
    );
    for mode in [Mode::Alternate, Mode::Hedge, Mode::Adaptive] {
        let dual = run(mode, vec![throttled_for_a_while(), Source::steady(400_000.0)], None);
        eprintln!(
            "{mode:?}: single stalled {:?} ({} stalls), dual {:?} ({} stalls), duplicates {:.1} %",
            single.stall_time,
            single.stalls,
            dual.stall_time,
            dual.stalls,
            dual.duplicate_bytes as f64 * 100.0 / dual.bytes as f64
        );
        assert_in_order_once(&dual);
        assert!(
            dual.stall_time * 2 <= single.stall_time,
            "{mode:?}: dual stalled {:?}, single {:?}",
            dual.stall_time,
            single.stall_time
        );
    }
}

#[test]
fn healthy_sources_cost_few_duplicate_bytes() {
    for mode in [Mode::Alternate, Mode::Hedge, Mode::Adaptive] {
        let o = run(mode, vec![Source::steady(400_000.0), Source::steady(400_000.0)], None);
        assert_in_order_once(&o);
        assert_eq!(o.stalls, 0, "{mode:?}");
        assert!(o.duplicate_bytes * 20 <= o.bytes, "{mode:?}: {} duplicate of {}", o.duplicate_bytes, o.bytes);
    }
}

#[test]
fn a_source_that_disappears_is_replaced_without_a_gap() {
    let dying = Source { fails_after_s: Some(20.0), ..Source::steady(400_000.0) };
    let o = run(Mode::Alternate, vec![dying, Source::steady(400_000.0)], None);
    assert_in_order_once(&o);
    assert!(o.skipped.is_empty(), "{:?}", o.skipped);
    assert_eq!(o.stalls, 0, "stall time {:?}", o.stall_time);
}

#[test]
fn switching_source_mid_stream_leaves_no_gap() {
    let o = run(Mode::Hedge, vec![Source::steady(400_000.0), Source::steady(300_000.0)], Some((25.0, 0)));
    assert_in_order_once(&o);
    assert!(o.skipped.is_empty());
    assert_eq!(o.stalls, 0);
}

/// With `pipeline`, a source is asked for the next segment once its current answer has begun;
/// without it, only once that answer is complete.
#[test]
fn pipelining_asks_for_the_next_segment_while_the_current_one_arrives() {
    #[allow(clippy::disallowed_methods)] // the test's one clock read: its virtual epoch
    let t0 = Instant::now();
    for pipeline in [false, true] {
        let config = SchedulerConfig { pipeline, live_offset: 3, ..SchedulerConfig::default() };
        let mut sched = Scheduler::new(config, 1);
        sched.playlist(t0, 0, &[(1, SEG), (2, SEG), (3, SEG), (4, SEG)]);
        let fetches = |sched: &mut Scheduler| {
            std::iter::from_fn(|| sched.poll_action())
                .filter_map(|a| if let Action::Fetch { req, seq, .. } = a { Some((req, seq)) } else { None })
                .collect::<Vec<_>>()
        };
        let first = fetches(&mut sched);
        assert_eq!(first.iter().map(|f| f.1).collect::<Vec<_>>(), [1], "one request to start with");
        sched.first_byte(t0 + Duration::from_millis(400), first[0].0, Some(SEG_BYTES));
        let next: Vec<u64> = fetches(&mut sched).iter().map(|f| f.1).collect();
        if pipeline {
            assert_eq!(next, [2], "the next segment is asked for behind the first");
        } else {
            assert!(next.is_empty(), "without pipelining the source stays busy: {next:?}");
        }
    }
}
