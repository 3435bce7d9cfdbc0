//! The bodies of the fuzz targets: one function per parser that reads outside input. The
//! targets in `fuzz_targets/` call them under libFuzzer (nightly, `cargo fuzz run NAME`); the
//! corpus replay in `tests/` calls them on stable, so every input that ever crashed one stays a
//! regression test.
//!
//! Beyond "no panic, no hang, no runaway allocation", each asserts a property where one exists:
//! decode∘encode is the identity for wire frames, every cut of a transport stream starts with a
//! keyframe (cutting it again gives the same cut), every CMAF segment starts with an
//! independent part, a parsed playlist re-serialises to one that parses the same.

use relaycast_core::cmaf::{Packaged, Packager, PackagerConfig};
use relaycast_core::p2p::wire as peer;
use relaycast_core::wire::{self, SegmentHeader};

/// Largest segment payload a node accepts by default (32 MiB).
const MAX_PAYLOAD: usize = 32 << 20;

/// QUIC control frames between nodes (postcard, length-prefixed).
pub fn wire_message(data: &[u8]) {
    if let Ok(Some((msg, used))) = wire::decode_message(data) {
        assert!(used <= data.len());
        let again = wire::encode_message(&msg);
        let (back, n) = wire::decode_message(&again).expect("our own frame decodes").expect("whole frame");
        assert_eq!(back, msg, "decode(encode(m)) == m");
        assert_eq!(n, again.len());
    }
}

/// The header in front of every segment and part on a QUIC stream.
pub fn segment_header(data: &[u8]) {
    if let Ok(Some((header, used))) = SegmentHeader::decode(data, MAX_PAYLOAD) {
        assert!(used <= data.len());
        assert!(header.payload_len <= MAX_PAYLOAD);
        let again = header.encode();
        let (back, n) = SegmentHeader::decode(&again, MAX_PAYLOAD).expect("our own header decodes").expect("whole");
        assert_eq!(back, header, "decode(encode(h)) == h");
        assert_eq!(n, again.len());
    }
}

/// The viewer-to-viewer wire (P2P sharing).
pub fn peer_wire(data: &[u8]) {
    const MAX_PIECE: usize = 8 << 20;
    if let Ok(Some((msg, used))) = peer::decode(data, MAX_PIECE) {
        assert!(used <= data.len());
        let again = peer::encode(&msg);
        let (back, _) = peer::decode(&again, MAX_PIECE).expect("our own frame decodes").expect("whole frame");
        assert_eq!(back, msg, "decode(encode(m)) == m");
    }
}

/// MPEG-TS files cut at keyframes (looped files, HLS pushes and pulls).
pub fn ts_cut(data: &[u8]) {
    let Ok(cuts) = relaycast_core::ts::cut_at_keyframes(data, 1_000_000) else { return };
    for cut in &cuts {
        assert_eq!(cut.data.len() % 188, 0, "whole packets");
        // A cut starts with its keyframe: cutting it again (no target) keeps that keyframe
        // first, so the single cut it gives starts at the same PTS.
        let again = relaycast_core::ts::cut_at_keyframes(&cut.data, u64::MAX).expect("a cut cuts again");
        assert_eq!(again.first().map(|c| c.first_pts), Some(cut.first_pts), "a cut opens on its keyframe");
    }
}

fn drain(packager: &mut Packager, segments_open_independent: &mut bool) {
    while let Some(out) = packager.poll() {
        if let Packaged::Part(p) = out {
            assert!(!p.data.is_empty(), "a part has bytes");
            if p.index == 0 && !p.independent {
                *segments_open_independent = false;
            }
        }
    }
}

/// The CMAF packager fed MPEG-TS (HTTP push of a TS stream, SRT), in uneven chunks.
pub fn cmaf_ts(data: &[u8]) {
    let mut packager = Packager::new(PackagerConfig::default());
    let mut ok = true;
    let mut rest = data;
    while !rest.is_empty() {
        // The first byte of each chunk sets its length, so the fuzzer explores splits.
        let take = (usize::from(rest[0]) * 7 + 1).min(rest.len());
        let (chunk, tail) = rest.split_at(take);
        let _ = packager.push(chunk);
        drain(&mut packager, &mut ok);
        rest = tail;
    }
    packager.end_segment();
    drain(&mut packager, &mut ok);
    assert!(ok, "every segment starts with an independent part");
}

/// The CMAF packager fed FLV tags (RTMP publish): `[kind, ms (4), len (2), tag...]` records.
pub fn cmaf_flv(data: &[u8]) {
    let mut packager = Packager::for_flv(PackagerConfig::default());
    let mut ok = true;
    let mut rest = data;
    while rest.len() >= 7 {
        let kind = rest[0];
        let ms = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        let len = usize::from(u16::from_be_bytes([rest[5], rest[6]])).min(rest.len() - 7);
        let tag = &rest[7..7 + len];
        let _ = if kind & 1 == 0 { packager.push_video_tag(ms, tag) } else { packager.push_audio_tag(ms, tag) };
        drain(&mut packager, &mut ok);
        rest = &rest[7 + len..];
    }
    packager.end_segment();
    drain(&mut packager, &mut ok);
    assert!(ok, "every segment starts with an independent part");
}

/// Playlists pulled from other servers and pushed by encoders (m3u8-rs, as the node uses it),
/// and LL-HLS query directives from viewers.
pub fn playlist(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = relaycast_core::llhls::parse_directives(text);
    }
    let Ok(parsed) = m3u8_rs::parse_playlist_res(data) else { return };
    let mut out = Vec::new();
    match &parsed {
        m3u8_rs::Playlist::MediaPlaylist(p) => p.write_to(&mut out),
        m3u8_rs::Playlist::MasterPlaylist(p) => p.write_to(&mut out),
    }
    .expect("writing to memory");
    let back = m3u8_rs::parse_playlist_res(&out).expect("a written playlist parses");
    // The same sequence and segments — for media playlists made of tags and plain URIs.
    // On junk lines m3u8-rs guesses (any line after an unknown tag is a URI, e.g. "," or a
    // broken tag) and its writer does not reproduce the guess, so junk is only parsed twice.
    let plain = |u: &str| !u.is_empty() && u.bytes().all(|c| c.is_ascii_alphanumeric() || b"./-_:?=&%".contains(&c));
    // A tag's name is capitals, digits and '-' ("#EXTM3U,#EXT-X-..." is junk m3u8-rs half-reads).
    let tag = |l: &str| {
        l.starts_with("#EXT")
            && l[1..]
                .split(':')
                .next()
                .is_some_and(|n| n.bytes().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'-'))
    };
    let clean = std::str::from_utf8(data)
        .is_ok_and(|t| t.lines().map(|l| l.trim_end_matches('\r')).all(|l| l.is_empty() || tag(l) || plain(l)));
    if !clean {
        return;
    }
    // Master playlists only have to parse again: m3u8-rs reads a malformed EXT-X-STREAM-INF
    // (bad attribute bytes, no URI line) and writes it back differently, even as a media
    // playlist. The node refuses such junk either way (no variant, no segment).
    if let (m3u8_rs::Playlist::MediaPlaylist(a), m3u8_rs::Playlist::MediaPlaylist(b)) = (&parsed, &back) {
        assert_eq!(a.media_sequence, b.media_sequence);
        if a.segments.iter().all(|s| plain(&s.uri)) {
            let uris = |p: &m3u8_rs::MediaPlaylist| p.segments.iter().map(|s| s.uri.clone()).collect::<Vec<_>>();
            assert_eq!(uris(a), uris(b), "the same segments");
        }
    }
}

/// JSON the tracker and nodes read from the network: node announcements and the tracker's
/// answer, edge reports, P2P announces and answers.
pub fn tracker_json(data: &[u8]) {
    use relaycast_core::neighbours::{AnnounceReply, Announcement};
    use relaycast_core::p2p::peers::{PeerAnnounce, PeerAnnounceReply};
    use relaycast_core::steering::EdgeReport;
    let _ = serde_json::from_slice::<Announcement>(data);
    let _ = serde_json::from_slice::<AnnounceReply>(data);
    let _ = serde_json::from_slice::<EdgeReport>(data);
    let _ = serde_json::from_slice::<PeerAnnounce>(data);
    let _ = serde_json::from_slice::<PeerAnnounceReply>(data);
}

/// An RTMP publisher's bytes: handshake, then the chunk stream (rml_rtmp, as the ingest uses it).
pub fn rtmp(data: &[u8]) {
    use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
    use rml_rtmp::sessions::{ServerSession, ServerSessionConfig};
    let mut hs = Handshake::new(PeerType::Server);
    let rest = match hs.process_bytes(data) {
        Ok(HandshakeProcessResult::Completed { remaining_bytes, .. }) => remaining_bytes,
        // Past the handshake the fuzzer also drives the session directly.
        _ => data.get(1..).unwrap_or_default().to_vec(),
    };
    let Ok((mut session, _)) = ServerSession::new(ServerSessionConfig::new()) else { return };
    // rml_rtmp panics on some chunk streams; the ingest contains that panic and drops the
    // connection (node/ingest/rtmp.rs `read_chunks`), so this target does the same and looks
    // for what containment can't help: hangs, runaway memory, aborts.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for chunk in rest.chunks(4096) {
            if session.handle_input(chunk).is_err() {
                return;
            }
        }
    }));
    std::panic::set_hook(hook);
}
