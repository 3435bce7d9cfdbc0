//! The viewer's sharing policy (F50, F53): piece selection, deadline fallback, verification,
//! choking, uploads, and the peer wire under garbage.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use relaycast_core::Name;
use relaycast_core::p2p::signing::{SIGNATURE_LEN, SegmentVerifier, Signature};
use relaycast_core::p2p::swarm::PieceOutcome;
use relaycast_core::p2p::wire::{self, RejectReason};
use relaycast_core::p2p::{Swarm, SwarmAction, SwarmConfig};

/// A toy signature scheme: the first 8 bytes are a hash of (seq, data). Not secure; it only has
/// to tell good bytes from bad ones, which is all the policy looks at.
struct Toy;

fn toy_sign(seq: u64, data: &[u8]) -> Signature {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seq;
    for b in data {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
    let mut sig = [0u8; SIGNATURE_LEN];
    sig[..8].copy_from_slice(&h.to_be_bytes());
    sig
}

impl SegmentVerifier for Toy {
    fn verify(&self, _: &Name, _: &Name, seq: u64, data: &[u8], signature: &Signature) -> bool {
        toy_sign(seq, data) == *signature
    }
}

/// The tests' one clock read: a virtual epoch; everything after it is computed.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

fn swarm(cfg: SwarmConfig) -> Swarm {
    Swarm::new(cfg, Name::new("live").unwrap(), Name::new("src").unwrap())
}

fn actions(s: &mut Swarm) -> Vec<SwarmAction> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

/// A viewer at `index` of `size` that is not a seeder of `seq`.
fn non_seeder(seq: u64, size: usize) -> Swarm {
    let mut s = swarm(SwarmConfig::default());
    for index in 0..size {
        s.set_position(index, size);
        if !s.is_seeder(seq) {
            return s;
        }
    }
    panic!("everyone seeds {seq}");
}

#[test]
fn every_segment_has_exactly_the_configured_seeders() {
    for size in [1usize, 2, 3, 7, 20, 101] {
        for seq in 0..200u64 {
            let seeders = (0..size)
                .filter(|&i| {
                    let mut s = swarm(SwarmConfig::default());
                    s.set_position(i, size);
                    s.is_seeder(seq)
                })
                .count();
            assert_eq!(seeders, 2.min(size), "size {size} seq {seq}");
        }
    }
}

#[test]
fn a_seeder_goes_to_the_edge_at_once_others_wait_for_peers() {
    let t0 = epoch();
    let deadline = t0 + Duration::from_secs(6);
    let mut seeder = swarm(SwarmConfig::default());
    seeder.set_position(0, 20);
    let seq = (0..100).find(|&q| seeder.is_seeder(q)).unwrap();
    seeder.want(t0, seq, deadline);
    assert_eq!(actions(&mut seeder), vec![SwarmAction::FetchEdge { seq }]);

    let mut s = non_seeder(seq, 20);
    s.want(t0, seq, deadline);
    assert!(actions(&mut s).is_empty(), "no peer has it and the deadline is far: wait");
    assert_eq!(s.poll_timeout(), Some(deadline - SwarmConfig::default().margin));
}

#[test]
fn piece_selection_prefers_same_region_then_idle_then_rtt() {
    let t0 = epoch();
    let mut s = swarm(SwarmConfig::default());
    s.set_position(500, 1000); // seeds segments 250 and 749 only
    assert!(s.add_peer(t0, 1, false, Some(Duration::from_millis(1))));
    assert!(s.add_peer(t0, 2, true, Some(Duration::from_millis(30))));
    assert!(s.add_peer(t0, 3, true, Some(Duration::from_millis(10))));
    for p in [1, 2, 3] {
        s.peer_have(t0, p, &[10, 11, 12]);
    }
    let far = t0 + Duration::from_secs(8);
    s.want(t0, 10, far);
    assert_eq!(actions(&mut s), vec![SwarmAction::FetchPeer { peer: 3, seq: 10 }], "same region, lowest RTT");
    s.want(t0, 11, far);
    assert_eq!(actions(&mut s), vec![SwarmAction::FetchPeer { peer: 2, seq: 11 }], "then the idle same-region peer");
    // A peer that does not hold a segment is never asked for it.
    s.want(t0, 13, far);
    assert!(actions(&mut s).iter().all(|a| !matches!(a, SwarmAction::FetchPeer { .. })));
}

#[test]
fn deadline_fallback_to_the_edge_before_the_margin() {
    let cfg = SwarmConfig::default();
    let t0 = epoch();
    let mut s = non_seeder(5, 20);
    s.add_peer(t0, 1, true, None);
    s.peer_have(t0, 1, &[5]);
    let deadline = t0 + Duration::from_secs(4);
    s.want(t0, 5, deadline);
    assert_eq!(actions(&mut s), vec![SwarmAction::FetchPeer { peer: 1, seq: 5 }]);
    // The peer stays silent: the request is given up no later than the fallback point, and
    // the edge is asked with `margin` to spare.
    let give_up = s.poll_timeout().unwrap();
    assert!(give_up <= deadline - cfg.margin);
    s.handle_timeout(give_up);
    let acts = actions(&mut s);
    assert!(acts.contains(&SwarmAction::CancelPeer { peer: 1, seq: 5 }), "{acts:?}");
    if !acts.contains(&SwarmAction::FetchEdge { seq: 5 }) {
        // Gave up before the fallback point: waits for other peers until then, no longer.
        let at = s.poll_timeout().unwrap();
        assert!(at <= deadline - cfg.margin);
        s.handle_timeout(at);
        assert_eq!(actions(&mut s), vec![SwarmAction::FetchEdge { seq: 5 }]);
    }
    assert_eq!(s.stats().peer_timeouts, 1);
    assert_eq!(s.stats().fallbacks, 1);

    // Past the fallback point the edge is asked at once; a peer holding it races the edge,
    // and whichever verified copy comes first cancels the other.
    let mut late = non_seeder(6, 20);
    late.add_peer(t0, 1, true, None);
    late.peer_have(t0, 1, &[6]);
    late.want(t0, 6, t0 + cfg.margin / 2);
    assert_eq!(actions(&mut late), vec![SwarmAction::FetchEdge { seq: 6 }, SwarmAction::FetchPeer { peer: 1, seq: 6 }]);
    assert_eq!(late.piece_from_peer(t0, 1, 6, b"six", &toy_sign(6, b"six"), &Toy), PieceOutcome::Accepted);
    let acts = actions(&mut late);
    assert!(acts.contains(&SwarmAction::CancelEdge { seq: 6 }), "the peer won: the edge fetch is cancelled: {acts:?}");
    // And the other way round: the edge wins, the peer request is cancelled.
    late.want(t0, 7, t0 + cfg.margin / 2);
    late.peer_have(t0, 1, &[6, 7]);
    actions(&mut late);
    assert_eq!(late.piece_from_edge(t0, 7, b"seven", Some(&toy_sign(7, b"seven")), &Toy), PieceOutcome::Accepted);
    assert!(actions(&mut late).contains(&SwarmAction::CancelPeer { peer: 1, seq: 7 }));
}

#[test]
fn good_pieces_are_kept_and_advertised_bad_ones_get_the_peer_dropped_and_reported() {
    let t0 = epoch();
    let mut s = non_seeder(7, 20);
    s.add_peer(t0, 1, true, None);
    s.add_peer(t0, 2, true, None);
    s.peer_have(t0, 1, &[7]);
    s.peer_have(t0, 2, &[7]);
    s.want(t0, 7, t0 + Duration::from_secs(8));
    let first = match actions(&mut s).as_slice() {
        [SwarmAction::FetchPeer { peer, seq: 7 }] => *peer,
        other => panic!("{other:?}"),
    };
    let data = b"segment seven".to_vec();
    let mut bad = data.clone();
    bad[0] ^= 1;
    let out = s.piece_from_peer(t0, first, 7, &bad, &toy_sign(7, &data), &Toy);
    assert_eq!(out, PieceOutcome::Rejected);
    let acts = actions(&mut s);
    assert!(acts.iter().any(|a| matches!(a, SwarmAction::DropPeer { peer, .. } if *peer == first)));
    assert!(acts.contains(&SwarmAction::ReportPeer { peer: first }));
    let other = 3 - first;
    assert!(acts.contains(&SwarmAction::FetchPeer { peer: other, seq: 7 }), "asked elsewhere: {acts:?}");
    assert!(s.is_banned(t0 + Duration::from_secs(3600), first), "a liar is banned for good");
    assert!(!s.add_peer(t0, first, true, None));
    assert_eq!(s.held().count(), 0, "bad bytes are never held, so never shared");
    assert_eq!(s.upload_request(t0, 9, 7), Err(RejectReason::NotHeld));

    let out = s.piece_from_peer(t0, other, 7, &data, &toy_sign(7, &data), &Toy);
    assert_eq!(out, PieceOutcome::Accepted);
    assert_eq!(actions(&mut s), vec![SwarmAction::Advertise { seqs: vec![7] }]);
    assert_eq!(s.upload_request(t0, 9, 7), Ok(()));
    assert_eq!(s.stats().bad_pieces, 1);
    assert_eq!(s.stats().peer_bytes, data.len() as u64);
}

#[test]
fn unsigned_or_forged_edge_bytes_are_not_used() {
    let t0 = epoch();
    let mut s = swarm(SwarmConfig::default());
    s.want(t0, 1, t0 + Duration::from_secs(5));
    assert_eq!(actions(&mut s), vec![SwarmAction::FetchEdge { seq: 1 }]);
    assert_eq!(s.piece_from_edge(t0, 1, b"x", None, &Toy), PieceOutcome::Rejected);
    assert_eq!(actions(&mut s), vec![SwarmAction::FetchEdge { seq: 1 }], "fetched again");
    assert_eq!(
        s.piece_from_edge(t0, 1, b"x", Some(&toy_sign(2, b"x")), &Toy),
        PieceOutcome::Rejected,
        "signature of another seq"
    );
    actions(&mut s);
    assert_eq!(s.piece_from_edge(t0, 1, b"x", Some(&toy_sign(1, b"x")), &Toy), PieceOutcome::Accepted);
}

#[test]
fn slow_peers_are_choked_and_replaced() {
    let cfg = SwarmConfig { max_strikes: 2, ..SwarmConfig::default() };
    let t0 = epoch();
    let mut s = swarm(cfg.clone());
    s.set_position(0, 1000);
    s.add_peer(t0, 1, true, None);
    let seqs: Vec<u64> = (100..200).filter(|&q| !s.is_seeder(q)).take(2).collect();
    s.peer_have(t0, 1, &seqs);
    let mut now = t0;
    let mut acts = Vec::new();
    for &seq in &seqs {
        s.want(now, seq, now + Duration::from_secs(10));
        let asked = actions(&mut s);
        assert!(asked.contains(&SwarmAction::FetchPeer { peer: 1, seq }), "{asked:?}");
        now += cfg.peer_timeout;
        s.handle_timeout(now);
        acts = actions(&mut s);
        assert!(
            !acts.contains(&SwarmAction::FetchPeer { peer: 1, seq }),
            "a peer that timed out is not asked again for it"
        );
    }
    assert!(acts.iter().any(|a| matches!(a, SwarmAction::DropPeer { peer: 1, .. })), "{acts:?}");
    assert!(acts.contains(&SwarmAction::NeedPeers));
    assert!(s.is_banned(now, 1));
    assert!(!s.is_banned(now + cfg.choke_for + Duration::from_millis(1), 1), "choking is temporary");
    assert_eq!(s.peer_count(), 0);
}

#[test]
fn fallbacks_queue_for_the_edge_one_at_a_time_earliest_first() {
    let cfg = SwarmConfig::default();
    assert_eq!(cfg.edge_fetches, 1);
    let t0 = epoch();
    let mut s = swarm(cfg.clone());
    s.set_position(500, 1000);
    let seqs: Vec<u64> = (10..40).filter(|&q| !s.is_seeder(q)).take(3).collect();
    // All three are already past their fallback point (a viewer joining late, say).
    for (i, &seq) in seqs.iter().enumerate() {
        s.want(t0, seq, t0 + cfg.margin / 2 + Duration::from_millis(i as u64));
    }
    assert_eq!(actions(&mut s), vec![SwarmAction::FetchEdge { seq: seqs[0] }], "one edge fetch at a time");
    assert!(s.poll_timeout().is_none(), "waiting for the edge needs no timer");
    assert_eq!(s.piece_from_edge(t0, seqs[0], b"a", Some(&toy_sign(seqs[0], b"a")), &Toy), PieceOutcome::Accepted);
    let acts = actions(&mut s);
    assert!(
        acts.contains(&SwarmAction::FetchEdge { seq: seqs[1] }),
        "the next earliest goes once the edge is free: {acts:?}"
    );
    assert!(!acts.contains(&SwarmAction::FetchEdge { seq: seqs[2] }));
    // A seeder fetch never waits.
    let mine = (40..2000).find(|&q| s.is_seeder(q)).unwrap();
    s.want(t0, mine, t0 + Duration::from_secs(10));
    assert_eq!(actions(&mut s), vec![SwarmAction::FetchEdge { seq: mine }]);
}

#[test]
fn uploads_are_limited_to_the_slots() {
    let cfg = SwarmConfig { upload_slots: 2, ..SwarmConfig::default() };
    let t0 = epoch();
    let mut s = swarm(cfg);
    s.want(t0, 1, t0 + Duration::from_secs(5));
    s.piece_from_edge(t0, 1, b"a", Some(&toy_sign(1, b"a")), &Toy);
    assert_eq!(s.upload_request(t0, 5, 1), Ok(()));
    assert_eq!(s.upload_request(t0, 6, 1), Ok(()));
    assert_eq!(s.upload_request(t0, 7, 1), Err(RejectReason::Busy));
    s.upload_done(1);
    assert_eq!(s.upload_request(t0, 7, 1), Ok(()));
    assert_eq!(s.stats().uploaded_bytes, 1);
}

#[test]
fn a_lost_peer_s_requests_are_planned_again() {
    let t0 = epoch();
    let mut s = non_seeder(3, 20);
    s.add_peer(t0, 1, true, None);
    s.add_peer(t0, 2, false, None);
    s.peer_have(t0, 1, &[3]);
    s.peer_have(t0, 2, &[3]);
    s.want(t0, 3, t0 + Duration::from_secs(8));
    assert_eq!(actions(&mut s), vec![SwarmAction::FetchPeer { peer: 1, seq: 3 }]);
    s.remove_peer(t0, 1);
    let acts = actions(&mut s);
    assert!(acts.contains(&SwarmAction::FetchPeer { peer: 2, seq: 3 }), "{acts:?}");
}

proptest! {
    #[test]
    fn peer_wire_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = wire::decode(&bytes, 1 << 20);
    }

    #[test]
    fn peer_wire_prefixes_ask_for_more(seqs in proptest::collection::vec(any::<u64>(), 0..64)) {
        let b = wire::encode(&wire::PeerMessage::Have { seqs });
        for cut in 0..b.len() {
            prop_assert_eq!(wire::decode(&b[..cut], 1 << 20), Ok(None));
        }
        prop_assert!(wire::decode(&b, 1 << 20).unwrap().is_some());
    }
}
