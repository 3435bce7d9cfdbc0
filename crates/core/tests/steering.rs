//! The traffic manager's policy: thresholds, secondaries started once (hysteresis), drain after
//! a grace period, retirement, rebalancing earliest first, cordons, and the POP chooser.

use std::time::{Duration, Instant};

use relaycast_core::steering::{Action, EdgeKind, EdgeReport, EdgeState, PopChooser, SteeringConfig, SteeringPolicy};

fn config() -> SteeringConfig {
    SteeringConfig {
        threshold: 20,
        secondary_capacity: 40,
        low_water: 0.5,
        grace: Duration::from_secs(5),
        max_secondaries: 2,
        report_ttl: Duration::from_secs(5),
        session_ttl: Duration::from_secs(10),
        start_timeout: Duration::from_secs(20),
        drain_timeout: Duration::from_secs(60),
        lead: Duration::ZERO,
        max_sessions: 1_000,
    }
}

/// The tests' virtual epoch (the one clock read; everything after is `t0 + d`).
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

fn secs(t0: Instant, s: f64) -> Instant {
    t0 + Duration::from_secs_f64(s)
}

/// Edge `name` announces itself and reports that it serves channel `demo`.
fn seen(p: &mut SteeringPolicy, now: Instant, name: &str, region: &str, url: Option<String>) {
    p.edge_seen(now, name, region, url);
    p.edge_report(now, name, EdgeReport { channels: vec!["demo".into()], ..EdgeReport::default() });
}

/// A policy with one primary `p1` in region `eu`, kept alive by reports at `now`.
fn with_primary(t0: Instant) -> SteeringPolicy {
    let mut p = SteeringPolicy::new(config());
    seen(&mut p, t0, "p1", "eu", Some("http://127.0.0.1:1".into()));
    p
}

fn keep_alive(p: &mut SteeringPolicy, now: Instant, sessions: &[String]) {
    let names: Vec<String> = p.edges().filter(|e| e.state != EdgeState::Retired).map(|e| e.name.clone()).collect();
    for name in names {
        seen(p, now, &name, "eu", None);
    }
    for id in sessions {
        p.rank(now, "eu", id, "demo");
    }
}

fn start_actions(p: &mut SteeringPolicy) -> Vec<Action> {
    std::iter::from_fn(|| p.poll_action()).collect()
}

#[test]
fn below_threshold_everyone_stays_on_the_primary_and_nothing_starts() {
    let t0 = epoch();
    let mut p = with_primary(t0);
    for i in 0..19 {
        assert_eq!(p.rank(t0, "eu", &format!("s{i}"), "demo")[0].name, "p1");
    }
    p.tick(t0);
    assert!(start_actions(&mut p).is_empty(), "19 < threshold 20: no secondary");
}

#[test]
fn reaching_the_threshold_starts_one_secondary_which_takes_new_viewers_once_serving() {
    let t0 = epoch();
    let mut p = with_primary(t0);
    let ids: Vec<String> = (0..25).map(|i| format!("s{i}")).collect();
    for id in &ids {
        p.rank(t0, "eu", id, "demo");
    }
    // No secondary yet: the excess overflows onto the primary.
    assert_eq!(p.load("p1"), 25);
    p.tick(t0);
    let actions = start_actions(&mut p);
    assert_eq!(actions.len(), 1, "exactly one secondary started: {actions:?}");
    let Action::Start { name, region, parent } = &actions[0] else { panic!("{actions:?}") };
    assert_eq!((region.as_str(), parent.as_deref()), ("eu", Some("p1")));
    // Ticks while it starts do not start another (hysteresis).
    for s in 1..4 {
        keep_alive(&mut p, secs(t0, s as f64), &ids);
        p.tick(secs(t0, s as f64));
        assert!(start_actions(&mut p).is_empty(), "no second start while the first is starting");
    }
    // It announces: serving. The excess over the threshold moves to it, the newest first.
    let now = secs(t0, 4.0);
    seen(&mut p, now, name, "eu", Some("http://127.0.0.1:2".into()));
    assert_eq!(p.edge(name).unwrap().state, EdgeState::Serving);
    p.tick(now);
    assert_eq!(p.load("p1"), 20, "primary back at its threshold");
    assert_eq!(p.load(name), 5, "the secondary took the excess");
    // New viewers go to the secondary, and the ranking puts it first for them.
    let r = p.rank(now, "eu", "late", "demo");
    assert_eq!(r[0].name, *name);
    assert_eq!(r[0].kind, EdgeKind::Secondary);
    assert_eq!(r[1].name, "p1", "the primary is the fallback");
}

#[test]
fn a_secondary_drains_only_after_the_grace_period_then_retires_when_empty() {
    let t0 = epoch();
    let mut p = with_primary(t0);
    let ids: Vec<String> = (0..30).map(|i| format!("s{i}")).collect();
    keep_alive(&mut p, t0, &ids);
    p.tick(t0);
    let Some(Action::Start { name, .. }) = p.poll_action() else { panic!("no start") };
    seen(&mut p, secs(t0, 1.0), &name, "eu", Some("http://127.0.0.1:2".into()));
    keep_alive(&mut p, secs(t0, 1.0), &ids);
    p.tick(secs(t0, 1.0));
    assert_eq!(p.load(&name), 10);

    // Demand drops to 5 (others stop polling and expire after the session TTL).
    let few: Vec<String> = ids[25..].to_vec();
    let mut t = 2.0;
    let mut drained_at = None;
    while t < 40.0 {
        let now = secs(t0, t);
        keep_alive(&mut p, now, &few);
        p.tick(now);
        let state = p.edge(&name).map(|e| e.state);
        if drained_at.is_none() && state == Some(EdgeState::Draining) {
            drained_at = Some(t);
        }
        if state == Some(EdgeState::Retired) {
            break;
        }
        t += 0.5;
    }
    // Sessions expire at t = 11 (TTL 10 s after t = 1); low since then; grace 5 s.
    let drained_at = drained_at.expect("the secondary drained");
    assert!(drained_at >= 11.0 + 5.0 - 0.01, "drained at {drained_at}: before the grace period was over");
    assert_eq!(p.edge(&name).unwrap().state, EdgeState::Retired, "retired once empty");
    assert_eq!(p.poll_action(), Some(Action::Stop { name: name.clone() }));
    for id in &few {
        assert_eq!(p.rank(secs(t0, t), "eu", id, "demo")[0].name, "p1", "survivors are on the primary");
    }
}

#[test]
fn demand_swinging_between_the_marks_does_not_flap() {
    let t0 = epoch();
    let mut p = with_primary(t0);
    let ids: Vec<String> = (0..25).map(|i| format!("s{i}")).collect();
    keep_alive(&mut p, t0, &ids);
    p.tick(t0);
    let Some(Action::Start { name, .. }) = p.poll_action() else { panic!("no start") };
    seen(&mut p, t0, &name, "eu", Some("http://127.0.0.1:2".into()));
    // For two minutes demand swings between 15 and 25 viewers every 15 s (longer than the
    // session TTL): below the threshold, above the low-water mark. The secondary stays up, and
    // no second one is started.
    let mut t = 0.5;
    let mut actions = Vec::new();
    while t < 120.0 {
        let n = if (t as u64 / 15).is_multiple_of(2) { 25 } else { 15 };
        keep_alive(&mut p, secs(t0, t), &ids[..n]);
        p.tick(secs(t0, t));
        actions.extend(std::iter::from_fn(|| p.poll_action()));
        t += 0.5;
    }
    assert!(actions.is_empty(), "no start or stop while demand swings: {actions:?}");
    assert_eq!(p.edge(&name).unwrap().state, EdgeState::Serving);
}

#[test]
fn rebalancing_moves_viewers_back_earliest_displaced_first() {
    let t0 = epoch();
    let mut p = with_primary(t0);
    let first: Vec<String> = (0..20).map(|i| format!("a{i}")).collect();
    keep_alive(&mut p, t0, &first);
    p.tick(t0);
    let Some(Action::Start { name, .. }) = p.poll_action() else { panic!("no start") };
    seen(&mut p, t0, &name, "eu", Some("http://127.0.0.1:2".into()));
    // Five late viewers land on the secondary one second apart.
    let late: Vec<String> = (0..5).map(|i| format!("late{i}")).collect();
    for (i, id) in late.iter().enumerate() {
        let now = secs(t0, 1.0 + i as f64);
        keep_alive(&mut p, now, &first);
        assert_eq!(p.rank(now, "eu", id, "demo")[0].name, name);
    }
    // Four of the first viewers leave.
    let staying: Vec<String> = first[4..].iter().chain(late.iter()).cloned().collect();
    let mut t = 6.0;
    while t < 20.0 {
        keep_alive(&mut p, secs(t0, t), &staying);
        p.tick(secs(t0, t));
        t += 1.0;
    }
    // 16 on the primary, limit threshold - margin = 18: the two earliest displaced come back.
    let on: Vec<&str> = late
        .iter()
        .map(|id| if p.rank(secs(t0, t), "eu", id, "demo")[0].name == "p1" { "p1" } else { "sec" })
        .collect();
    assert_eq!(on, vec!["p1", "p1", "sec", "sec", "sec"], "earliest displaced move back first");
    assert_eq!(p.load("p1"), 18);
}

#[test]
fn cordoned_edges_get_no_new_viewers_and_lose_their_viewers() {
    let t0 = epoch();
    let mut p = with_primary(t0);
    seen(&mut p, t0, "p2", "eu", Some("http://127.0.0.1:3".into()));
    assert_eq!(p.rank(t0, "eu", "x", "demo")[0].name, "p1", "least loaded, then by name");
    assert!(p.set_cordon("p1", true));
    assert_eq!(p.rank(t0, "eu", "y", "demo")[0].name, "p2", "a cordoned edge takes no new viewer");
    p.tick(t0);
    let r = p.rank(t0, "eu", "x", "demo");
    assert_eq!(r[0].name, "p2", "its viewers are steered away");
    assert_eq!(r.last().unwrap().name, "p1", "a cordoned edge ranks last");
    assert!(!p.set_cordon("nope", true));
}

#[test]
fn anonymous_viewers_reported_by_an_edge_count_towards_its_load() {
    let t0 = epoch();
    let mut p = with_primary(t0);
    seen(&mut p, t0, "p2", "eu", Some("http://127.0.0.1:3".into()));
    let report =
        EdgeReport { viewers: 15, anonymous: 15, sessions: vec![], egress_bps: 1e6, channels: vec!["demo".into()] };
    assert!(p.edge_report(t0, "p1", report));
    assert_eq!(p.load("p1"), 15);
    assert_eq!(p.rank(t0, "eu", "new", "demo")[0].name, "p2", "the less loaded edge");
}

#[test]
fn a_viewer_from_an_unknown_region_gets_the_least_loaded_edge_anywhere() {
    let t0 = epoch();
    let mut p = with_primary(t0);
    let r = p.rank(t0, "mars", "m1", "demo");
    assert_eq!(r[0].name, "p1");
}

#[test]
fn pop_chooser_switches_only_for_a_sustained_margin() {
    let t0 = epoch();
    let mut c = PopChooser::new(0.2, 5.0, Duration::from_secs(3));
    c.observe(t0, 0, 30.0, 10.0);
    c.observe(t0, 1, 35.0, 10.0);
    assert_eq!(c.current(), Some(0));
    // Slightly better (10 %): never switches.
    for s in 1..10 {
        c.observe(secs(t0, s as f64), 1, 26.0, 10.0);
    }
    assert_eq!(c.current(), Some(0), "10 % better is within the margin");
    // Much better but only briefly: no switch.
    c.observe(secs(t0, 10.0), 1, 5.0, 5.0);
    c.observe(secs(t0, 11.0), 1, 30.0, 10.0);
    c.observe(secs(t0, 12.0), 1, 5.0, 5.0);
    c.observe(secs(t0, 14.0), 1, 5.0, 5.0);
    assert_eq!(c.current(), Some(0), "better for 2 s only");
    c.observe(secs(t0, 15.5), 1, 5.0, 5.0);
    assert_eq!(c.current(), Some(1), "better by the margin for 3 s: switched");
    c.unreachable(secs(t0, 16.0), 1);
    assert_eq!(c.current(), Some(0), "an unreachable POP is left at once");
}

#[test]
fn pop_chooser_first_choice_is_the_best_of_the_first_round() {
    let t0 = epoch();
    let mut c = PopChooser::new(0.2, 5.0, Duration::from_secs(3));
    c.observe_round(t0, &[Some((130.0, 60.0)), None, Some((20.0, 6.0))]);
    assert_eq!(c.current(), Some(2), "the near POP, though measured last");
    c.observe_round(secs(t0, 2.0), &[Some((130.0, 60.0)), Some((1.0, 1.0)), None]);
    assert_eq!(c.current(), Some(1), "the current POP became unreachable: the best other at once");
}

#[test]
fn look_ahead_starts_a_secondary_before_a_fast_growing_region_reaches_its_threshold() {
    let t0 = epoch();
    let mut p = with_primary(t0);
    p.config.lead = Duration::from_secs(10);
    // 2 viewers a second: at 12 viewers (t = 6 s) the projection (12 + 2 × 10) passes 20.
    let mut started_at = None;
    for step in 0..20 {
        let t = step as f64 * 0.5;
        let ids: Vec<String> = (0..(t * 2.0) as usize).map(|i| format!("s{i}")).collect();
        keep_alive(&mut p, secs(t0, t), &ids);
        p.tick(secs(t0, t));
        if started_at.is_none() && matches!(p.poll_action(), Some(Action::Start { .. })) {
            started_at = Some((t, ids.len()));
        }
    }
    let (t, viewers) = started_at.expect("a secondary was started");
    assert!(viewers < 20, "started at {viewers} viewers (t = {t} s), before the threshold of 20");
}

#[test]
fn a_flood_of_made_up_sessions_is_answered_but_not_remembered_past_the_cap() {
    let t0 = epoch();
    let mut p = SteeringPolicy::new(SteeringConfig { threshold: 1_000_000, ..config() });
    seen(&mut p, t0, "p1", "eu", Some("http://127.0.0.1:1".into()));
    for i in 0..5_000 {
        let chosen = p.choose(t0, "eu", &format!("flood-{i}"), "demo");
        assert_eq!(chosen.as_deref(), Some("p1"), "session {i} still gets an edge");
    }
    assert_eq!(p.sessions().count(), 1_000, "state stays at the cap");
    // Once they expire, real sessions are remembered again.
    seen(&mut p, secs(t0, 11.0), "p1", "eu", None);
    p.tick(secs(t0, 11.0));
    assert_eq!(p.sessions().count(), 0);
    p.rank(secs(t0, 11.0), "eu", "real", "demo");
    assert_eq!(p.sessions().count(), 1);
}

#[test]
fn viewers_go_only_to_edges_that_serve_their_channel_and_move_when_one_stops() {
    let t0 = epoch();
    let mut p = SteeringPolicy::new(config());
    // Announced, not attached yet: no viewer is sent there.
    p.edge_seen(t0, "p1", "eu", Some("http://127.0.0.1:1".into()));
    assert!(p.rank(t0, "eu", "early", "demo").is_empty(), "an edge that can't serve yet is not offered");
    assert_eq!(p.choose(t0, "eu", "early", "demo"), None);
    seen(&mut p, t0, "p1", "eu", None);
    assert_eq!(p.rank(t0, "eu", "early", "demo")[0].name, "p1");
    assert!(p.rank(t0, "eu", "other", "news").is_empty(), "p1 does not offer channel news");
    // p2 serves too; p1 loses its parent and stops listing the channel: p1's viewer moves.
    seen(&mut p, t0, "p2", "eu", Some("http://127.0.0.1:2".into()));
    p.edge_report(secs(t0, 1.0), "p1", EdgeReport::default());
    let r = p.rank(secs(t0, 1.0), "eu", "early", "demo");
    assert_eq!(r.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["p2"], "{r:?}");
    assert_eq!(p.load("p2"), 1);
    assert_eq!(p.load("p1"), 0);
}
