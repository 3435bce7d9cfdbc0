//! Replays every committed seed and every input a fuzzer ever found through its target's body,
//! on stable: what crashed once is a regression test for good. `cargo test` in `fuzz/`.

use std::path::Path;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("wire_message", relaycast_fuzz::wire_message),
    ("segment_header", relaycast_fuzz::segment_header),
    ("peer_wire", relaycast_fuzz::peer_wire),
    ("ts_cut", relaycast_fuzz::ts_cut),
    ("cmaf_ts", relaycast_fuzz::cmaf_ts),
    ("cmaf_flv", relaycast_fuzz::cmaf_flv),
    ("playlist", relaycast_fuzz::playlist),
    ("tracker_json", relaycast_fuzz::tracker_json),
    ("rtmp", relaycast_fuzz::rtmp),
];

#[test]
fn every_seed_and_regression_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, target) in TARGETS {
        let mut inputs = 0;
        for dir in ["seeds", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else { continue };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                target(&data);
                inputs += 1;
            }
        }
        assert!(inputs > 0, "target {name} has no seed in fuzz/seeds/{name}");
    }
}

/// Writes the seeds that are made from our own encoders (run with `--ignored` after a wire
/// change): frames as nodes and viewers send them.
#[test]
#[ignore]
fn write_encoded_seeds() {
    use relaycast_core::p2p::wire::{PeerMessage, RejectReason, encode};
    use relaycast_core::wire::{Message, PartInfo, SegmentHeader, encode_message};
    use relaycast_core::{Name, SegmentMeta};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let write = |target: &str, file: &str, data: &[u8]| {
        std::fs::create_dir_all(root.join(target)).unwrap();
        std::fs::write(root.join(target).join(file), data).unwrap();
    };
    let hello = Message::Hello { version: 2, node: "relay-1".into(), id: 7, token: "secret".into() };
    for (i, m) in
        [hello, Message::Welcome { node: "origin".into(), id: 1 }, Message::NoRoute, Message::Attach].iter().enumerate()
    {
        write("wire_message", &format!("msg{i}"), &encode_message(m));
    }
    let meta = SegmentMeta { seq: 1234, disc_seq: 2, discontinuity: true, duration_us: 1_000_000, origin_ms: 1 << 40 };
    let name = |s: &str| Name::new(s).unwrap();
    let header = SegmentHeader {
        channel: name("demo"),
        rendition: name("720p"),
        meta,
        payload_len: 1000,
        signature: Some([7; 64]),
        part: Some(PartInfo { index: 2, independent: true, last: false }),
    };
    write("segment_header", "part", &header.encode());
    write("segment_header", "segment", &SegmentHeader { part: None, signature: None, ..header }.encode());
    let peers = [
        PeerMessage::Hello { channel: name("demo"), rendition: name("main"), viewer: 9, region: "eu".into() },
        PeerMessage::Have { seqs: vec![1, 2, 3] },
        PeerMessage::Request { seq: 3 },
        PeerMessage::Piece { seq: 3, len: 100, origin_ms: 5, signature: vec![1; 64] },
        PeerMessage::Reject { seq: 3, reason: RejectReason::Busy },
    ];
    for (i, m) in peers.iter().enumerate() {
        write("peer_wire", &format!("msg{i}"), &encode(m));
    }
}
