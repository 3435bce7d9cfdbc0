//! The one viewer session (F40–F45, F50): servers alone play in order like a plain player;
//! with sharing, peers are a second kind of source — a seeder takes its segments from a
//! server at once, everyone else from a peer, falling back to the servers before the deadline
//! (to whichever server is healthy); a lying peer is caught and its segment fetched again.

use std::time::{Duration, Instant};

use relaycast_core::Name;
use relaycast_core::multisource::{RequestId, SchedulerConfig};
use relaycast_core::p2p::signing::{SIGNATURE_LEN, SegmentVerifier, Signature};
use relaycast_core::p2p::swarm::PieceOutcome;
use relaycast_core::p2p::{Swarm, SwarmConfig};
use relaycast_core::viewer::{From, Output, STARTUP_PATIENCE, Session, Sharing};

/// A toy signature: byte 0 is the low byte of seq + data length. It only has to tell good
/// bytes from bad ones.
struct Toy;

fn sign(seq: u64, data: &[u8]) -> Signature {
    let mut sig = [0u8; SIGNATURE_LEN];
    sig[0] = (seq as usize + data.len()) as u8;
    sig[1] = 1;
    sig
}

impl SegmentVerifier for Toy {
    fn verify(&self, _: &Name, _: &Name, seq: u64, data: &[u8], signature: &Signature) -> bool {
        sign(seq, data) == *signature
    }
}

/// The tests' one clock read: a virtual epoch; everything after it is computed.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

const SEG: Duration = Duration::from_secs(2);

fn listing(from: u64, to: u64) -> Vec<(u64, Duration)> {
    (from..=to).map(|s| (s, SEG)).collect()
}

fn outputs(s: &mut Session) -> Vec<Output> {
    std::iter::from_fn(|| s.poll_output()).collect()
}

fn fetches(out: &[Output]) -> Vec<(RequestId, usize, u64)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Fetch { req, source, seq } => Some((*req, *source, *seq)),
            _ => None,
        })
        .collect()
}

fn played(out: &[Output]) -> Vec<(u64, From)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Play { seq, from } => Some((*seq, *from)),
            _ => None,
        })
        .collect()
}

/// A sharing session at `index` of a swarm of `size` viewers.
fn sharing_session(sources: usize, index: usize, size: usize) -> Session {
    let cfg = SwarmConfig { seeders: 1, ..SwarmConfig::default() };
    let mut swarm = Swarm::new(cfg, Name::new("live").unwrap(), Name::new("src").unwrap());
    swarm.set_position(index, size);
    let startup = Duration::from_secs(2);
    Session::new(
        SchedulerConfig { startup, ..SchedulerConfig::default() },
        sources,
        Some(Sharing { swarm, verifier: Box::new(Toy) }),
    )
}

#[test]
fn without_sharing_segments_come_from_the_server_in_order() {
    let t0 = epoch();
    let mut s = Session::new(SchedulerConfig::default(), 1, None);
    s.playlist(t0, 0, &listing(10, 15));
    let out = outputs(&mut s);
    // Starts two behind the newest, one request at a time.
    let f = fetches(&out);
    assert_eq!(f.iter().map(|x| x.2).collect::<Vec<_>>(), vec![13]);
    let data = b"segment";
    assert_eq!(s.completed(t0 + Duration::from_millis(100), f[0].0, data, None), PieceOutcome::Accepted);
    let out = outputs(&mut s);
    assert_eq!(played(&out), vec![(13, From::Server { req: f[0].0, source: 0 })]);
    assert_eq!(fetches(&out).iter().map(|x| x.2).collect::<Vec<_>>(), vec![14]);
}

#[test]
fn a_seeder_fetches_from_the_server_at_once_and_others_take_it_from_a_peer() {
    let t0 = epoch();
    // Swarm of 4, one seeder per segment: find one viewer that seeds 13 and one that does not.
    let seeds = |i: usize| {
        let mut sw = Swarm::new(
            SwarmConfig { seeders: 1, ..SwarmConfig::default() },
            Name::new("a").unwrap(),
            Name::new("b").unwrap(),
        );
        sw.set_position(i, 4);
        sw.is_seeder(13)
    };
    let seeder = (0..4).find(|i| seeds(*i)).unwrap();
    let other = (0..4).find(|i| !seeds(*i)).unwrap();

    let mut a = sharing_session(1, seeder, 4);
    a.playlist(t0, 0, &listing(10, 15));
    let out = outputs(&mut a);
    assert!(fetches(&out).iter().any(|f| f.2 == 13), "the seeder of 13 asks the server at once: {out:?}");

    let mut b = sharing_session(1, other, 4);
    b.playlist(t0, 0, &listing(10, 15));
    let out = outputs(&mut b);
    assert!(!fetches(&out).iter().any(|f| f.2 == 13), "a non-seeder waits for peers: {out:?}");
    assert!(b.peer_connected(t0, 77, true, Some(Duration::from_millis(10))));
    b.peer_have(t0, 77, &[13]);
    let out = outputs(&mut b);
    assert!(out.contains(&Output::FetchPeer { peer: 77, seq: 13 }), "{out:?}");
    let data = b"thirteen";
    let t1 = t0 + Duration::from_millis(200);
    assert_eq!(b.peer_piece(t1, 77, 13, data, &sign(13, data)), PieceOutcome::Accepted);
    let out = outputs(&mut b);
    assert_eq!(played(&out), vec![(13, From::Peer(77))]);
    assert!(out.iter().any(|o| matches!(o, Output::Advertise { seqs } if seqs.contains(&13))));
    assert_eq!(b.swarm().unwrap().stats().peer_bytes, data.len() as u64);
}

#[test]
fn with_no_peer_the_segment_falls_back_to_a_healthy_server_before_its_deadline() {
    let t0 = epoch();
    let cfg = SwarmConfig { seeders: 1, ..SwarmConfig::default() };
    let idx = (0..8)
        .find(|i| {
            let mut sw = Swarm::new(cfg.clone(), Name::new("a").unwrap(), Name::new("b").unwrap());
            sw.set_position(*i, 8);
            !sw.is_seeder(13)
        })
        .unwrap();
    let mut s = sharing_session(2, idx, 8);
    s.playlist(t0, 0, &listing(10, 15));
    s.playlist(t0, 1, &listing(10, 15));
    let out = outputs(&mut s);
    assert!(!fetches(&out).iter().any(|f| f.2 == 13));
    // Not playing yet: the fallback point is first-listed + patience (+ margin − margin).
    let fallback = s.poll_timeout(t0).expect("a fallback timer");
    assert!(fallback <= t0 + STARTUP_PATIENCE + Duration::from_millis(100), "fallback at {:?}", fallback - t0);
    s.handle_timeout(t0 + STARTUP_PATIENCE);
    let out = outputs(&mut s);
    let f: Vec<_> = fetches(&out).into_iter().filter(|f| f.2 == 13).collect();
    assert_eq!(f.len(), 1, "13 goes to one server: {out:?}");
    // That server fails: the other one gets it.
    s.failed(t0 + STARTUP_PATIENCE + Duration::from_millis(10), f[0].0);
    let out = outputs(&mut s);
    let again: Vec<_> = fetches(&out).into_iter().filter(|x| x.2 == 13).collect();
    assert_eq!(again.len(), 1, "{out:?}");
    let data = b"from-a-server";
    let t1 = t0 + STARTUP_PATIENCE + Duration::from_millis(300);
    assert_eq!(s.completed(t1, again[0].0, data, Some(&sign(13, data))), PieceOutcome::Accepted);
    assert_eq!(played(&outputs(&mut s)), vec![(13, From::Server { req: again[0].0, source: again[0].1 })]);
    assert!(s.swarm().unwrap().stats().fallbacks >= 1);
}

#[test]
fn a_lying_peer_is_dropped_reported_and_its_segment_fetched_again() {
    let t0 = epoch();
    let idx = (0..8)
        .find(|i| {
            let mut sw = Swarm::new(
                SwarmConfig { seeders: 1, ..SwarmConfig::default() },
                Name::new("a").unwrap(),
                Name::new("b").unwrap(),
            );
            sw.set_position(*i, 8);
            !sw.is_seeder(13)
        })
        .unwrap();
    let mut s = sharing_session(1, idx, 8);
    s.playlist(t0, 0, &listing(10, 15));
    s.peer_connected(t0, 5, true, None);
    s.peer_connected(t0, 6, true, None);
    s.peer_have(t0, 5, &[13]);
    s.peer_have(t0, 6, &[13]);
    let out = outputs(&mut s);
    let asked = out.iter().find_map(|o| match o {
        Output::FetchPeer { peer, seq: 13 } => Some(*peer),
        _ => None,
    });
    let liar = asked.expect("a peer is asked for 13");
    let honest = if liar == 5 { 6 } else { 5 };
    let t1 = t0 + Duration::from_millis(100);
    assert_eq!(s.peer_piece(t1, liar, 13, b"garbage", &[0u8; SIGNATURE_LEN]), PieceOutcome::Rejected);
    let out = outputs(&mut s);
    assert!(out.contains(&Output::BadPiece { seq: 13, from: From::Peer(liar) }), "{out:?}");
    assert!(out.contains(&Output::ReportPeer { peer: liar }), "{out:?}");
    assert!(out.iter().any(|o| matches!(o, Output::DropPeer { peer, .. } if *peer == liar)));
    assert!(out.contains(&Output::FetchPeer { peer: honest, seq: 13 }), "asked again elsewhere: {out:?}");
    assert!(played(&out).is_empty(), "bad bytes are never played");
}

#[test]
fn server_bytes_that_fail_the_signature_are_not_played_and_fetched_again() {
    let t0 = epoch();
    let mut s = sharing_session(1, 0, 1); // alone: seeds everything
    s.playlist(t0, 0, &listing(10, 15));
    let out = outputs(&mut s);
    let f = fetches(&out);
    let first = f.iter().find(|x| x.2 == 13).copied().expect("13 fetched");
    let t1 = t0 + Duration::from_millis(50);
    assert_eq!(s.completed(t1, first.0, b"tampered", None), PieceOutcome::Rejected);
    let out = outputs(&mut s);
    assert!(out.contains(&Output::BadPiece { seq: 13, from: From::Server { req: first.0, source: 0 } }));
    assert!(played(&out).is_empty());
    let retry = fetches(&out).into_iter().find(|x| x.2 == 13).expect("fetched again");
    let data = b"genuine";
    s.completed(t1, retry.0, data, Some(&sign(13, data)));
    assert_eq!(played(&outputs(&mut s)).first().map(|p| p.0), Some(13));
}

#[test]
fn the_hedging_timer_does_not_move_with_every_input() {
    // A shell re-reads poll_timeout after every input (each chunk of a download): the lateness
    // checks must still run every 100 ms, not be pushed back forever.
    let t0 = epoch();
    let mut s = Session::new(SchedulerConfig::default(), 2, None);
    s.playlist(t0, 0, &listing(10, 15));
    s.playlist(t0, 1, &listing(10, 15));
    let f = fetches(&outputs(&mut s));
    assert!(!f.is_empty());
    let first = s.poll_timeout(t0).expect("checks while two servers could hedge");
    s.handle_timeout(first);
    let next = s.poll_timeout(first).unwrap();
    for ms in [10, 40, 90] {
        s.progress(first + Duration::from_millis(ms), f[0].0, 1000);
        assert_eq!(s.poll_timeout(first + Duration::from_millis(ms)), Some(next), "moved after {ms} ms of progress");
    }
    assert_eq!(next, first + Duration::from_millis(100));
    // One server: nothing to hedge with, no periodic timer.
    let mut one = Session::new(SchedulerConfig::default(), 1, None);
    one.playlist(t0, 0, &listing(10, 15));
    assert_eq!(one.poll_timeout(t0), None);
}
