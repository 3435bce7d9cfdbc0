//! AES-128 segment encryption (F7): an origin encrypts a signed channel's segments; relays
//! carry the ciphertext; the edge lists `EXT-X-KEY` (rotating every N segments) with the
//! viewer's token in each key URI and serves keys only with a valid token, never to shared
//! caches. ffprobe and hls.js decrypt and play; the bytes on the wire are not the clear stream.

mod support;

use std::process::Command;

use aes::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
use support::{Node, TempDir, http_get, wait_until};

const TOKEN: &str = "aes-token";

#[test]
fn encrypted_channels_decrypt_and_play_and_keys_need_a_token() {
    support::require_ffmpeg();
    let dir = TempDir::new("aes128");
    let key = dir.join("playback.key");
    let key = key.to_str().unwrap();
    let origin = Node::origin(
        "origin",
        TOKEN,
        &["--sample", "--playback", "demo=signed", "--encrypt", "demo", "--key-rotation", "3", "--playback-key", key],
    );
    let relay = Node::relay("relay", origin.quic.unwrap(), TOKEN, true);
    let parent = relay.quic.unwrap().to_string();
    let edge = Node::start(
        "edge",
        &[
            "relay",
            "--name",
            "edge",
            "--parent",
            &parent,
            "--http",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--playback-key",
            key,
        ],
        false,
    );
    let link = support::sign_link(key, "demo", "1h", &format!("http://{}", edge.http), None);
    let token = link.split_once("token=").unwrap().1.to_string();

    // Enough segments for the playlist to span a key change (3 segments per key).
    let playlist = wait_until(support::MEDIA_WAIT, "an encrypted playlist spanning two keys", || {
        let r = http_get(&link).ok()?;
        let text = r.text();
        (r.status == 200 && text.matches("#EXT-X-KEY:METHOD=AES-128").count() >= 2).then_some(text)
    });
    let key_uris: Vec<String> = playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-KEY:METHOD=AES-128,URI=\""))
        .map(|rest| rest[..rest.find('"').unwrap()].to_string())
        .collect();
    assert!(key_uris.iter().all(|u| u.starts_with("keys/") && u.ends_with(&format!("?token={token}"))), "{playlist}");

    // Keys: with the token, 16 bytes no shared cache keeps; without it, refused with a reason.
    let key_url = edge.url(&format!("/live/demo/{}", key_uris[0]));
    let got = http_get(&key_url).unwrap();
    assert_eq!((got.status, got.body.len()), (200, 16));
    assert!(got.header("cache-control").unwrap().contains("no-store"));
    let bare = http_get(key_url.split('?').next().unwrap()).unwrap();
    assert_eq!(bare.status, 403, "{}", bare.text());
    assert!(bare.text().contains("needs a signed link"));

    // The segment on the wire is ciphertext; the key and the sequence-number IV open it.
    let first_key_line = playlist.lines().position(|l| l.starts_with("#EXT-X-KEY")).unwrap();
    let segment = playlist.lines().skip(first_key_line).find(|l| l.contains(".ts")).unwrap();
    let seq: u64 = segment.split('/').next_back().unwrap().split('.').next().unwrap().parse().unwrap();
    let index: u64 = key_uris[0].trim_start_matches("keys/").split('.').next().unwrap().parse().unwrap();
    assert_eq!(seq / 3, index, "segment {seq} uses key {index}");
    let wire = http_get(&edge.url(&format!("/live/demo/{segment}"))).unwrap();
    assert_eq!(wire.status, 200);
    // One byte can be 0x47 by chance (1 in 256); every 188th byte being the sync byte cannot.
    let clear_ts = wire.body.iter().step_by(188).all(|b| *b == 0x47);
    assert!(wire.body.len().is_multiple_of(16) && !clear_ts, "not MPEG-TS in the clear");
    let key16: [u8; 16] = got.body[..].try_into().unwrap();
    let clear = cbc::Decryptor::<aes::Aes128>::new(&key16.into(), &u128::from(seq).to_be_bytes().into())
        .decrypt_padded_vec_mut::<Pkcs7>(&wire.body)
        .expect("the key and IV decrypt the segment");
    assert!(clear.len() > 188 && clear.iter().step_by(188).all(|b| *b == 0x47), "decrypted: MPEG-TS packets");

    // Standard players decrypt and play.
    let streams = support::probe(&link);
    assert!(streams.iter().any(|s| s.codec_type == "video"), "ffprobe decrypts: {streams:?}");
    let run = support::play_in_browser(&link, 10, "{}");
    let summary = run.summary().clone();
    assert!(run.status.success() && summary["played"].as_f64().unwrap() >= 6.0, "hls.js decrypts: {summary}");

    // A public encrypted channel is refused at start: anyone could fetch its keys.
    let out = support::run(Command::new(env!("CARGO_BIN_EXE_relaycast")).args([
        "origin",
        "--sample",
        "--encrypt",
        "demo",
        "--playback-key",
        key,
    ]));
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--playback demo=signed"));
}
