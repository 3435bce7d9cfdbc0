//! The origin's ffmpeg ladder (F6), with real ffmpeg: one single-rendition input becomes three
//! renditions whose segment k starts on a keyframe at the same presentation time and has the
//! same frames in every rendition; the master playlist (at an edge, one hop away) carries
//! BANDWIDTH, RESOLUTION and CODECS; ffmpeg killed (SIGKILL) or hung (SIGSTOP) is restarted,
//! counted in `relaycast_ladder_restarts_total` by reason, and the channel goes on after an
//! EXT-X-DISCONTINUITY; ffmpeg does not outlive a killed origin.

mod ladder_support;
mod support;

use std::process::Command;
use std::time::Duration;

use ladder_support::make_clip;
use support::{MEDIA_WAIT, Node, TempDir, counter_with, require_ffmpeg, run, segment_uris, seq_of, wait_until};

/// (key_frame, pts_time) of every video frame of a segment file.
fn frames(path: &std::path::Path) -> Vec<(bool, f64)> {
    let out = run(Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "frame=key_frame,pts_time"])
        .args(["-of", "csv=p=0"])
        .arg(path));
    assert!(out.status.success(), "ffprobe {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            // A keyframe line may carry extra (side data) fields after the two asked for.
            let mut f = l.split(',');
            let (k, t) = (f.next()?, f.next()?);
            Some((k.trim() == "1", t.trim().parse().ok()?))
        })
        .collect()
}

/// PIDs of the ladder ffmpeg of origin process `origin_pid`.
fn ladder_ffmpeg(origin_pid: u32) -> Vec<u32> {
    let out = run(Command::new("pgrep").args(["-f", &format!("relaycast-ladder-{origin_pid}-")]));
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn latest_seq(node: &Node, rendition: &str) -> Option<u64> {
    let r = node.get(&format!("/live/lad/{rendition}/index.m3u8"));
    (r.status == 200).then(|| segment_uris(&r.text()).last().map(|u| seq_of(u)))?
}

#[test]
fn an_ffmpeg_ladder_is_aligned_described_and_restarted() {
    require_ffmpeg();
    let dir = TempDir::new("ladder");
    let clip = dir.join("in.mp4");
    make_clip(&clip, "480x270", 6);
    let origin = Node::origin(
        "origin",
        "ladder-token",
        &[
            "--ladder",
            &format!("lad={}", clip.display()),
            "--ladder-segment-s",
            "1",
            "--ladder-preset",
            "ultrafast",
            "--ladder-stall-timeout-s",
            "3",
        ],
    );
    let edge = Node::relay("edge", origin.quic.unwrap(), "ladder-token", false);

    // The master playlist, as the edge serves it, describes every rendition fully.
    let master = wait_until(MEDIA_WAIT, "a master playlist with CODECS", || {
        let r = edge.get("/live/lad/index.m3u8");
        let t = r.text();
        (r.status == 200 && t.matches("CODECS=").count() == 3).then_some(t)
    });
    for (res, name) in [("480x270", "270p"), ("320x180", "180p"), ("160x90", "90p")] {
        let line = master
            .lines()
            .find(|l| l.contains(&format!("RESOLUTION={res}")))
            .unwrap_or_else(|| panic!("no {res} variant in\n{master}"));
        assert!(line.contains("BANDWIDTH=") && line.contains("CODECS=\"avc1.") && line.contains("mp4a.40.2"), "{line}");
        assert!(master.contains(&format!("{name}/index.m3u8")), "{master}");
    }
    let bandwidth = |name: &str| -> u64 {
        let i = master.lines().position(|l| l == format!("{name}/index.m3u8")).unwrap();
        let line = master.lines().nth(i - 1).unwrap();
        line.split("BANDWIDTH=").nth(1).unwrap().split(',').next().unwrap().parse().unwrap()
    };
    assert!(bandwidth("270p") > bandwidth("180p") && bandwidth("180p") > bandwidth("90p"), "{master}");

    // Segment k of every rendition: opens on a keyframe at the same time, same frames.
    let (seq, bodies) = wait_until(MEDIA_WAIT, "one segment number in all three renditions", || {
        let s = ["270p", "180p", "90p"].iter().map(|r| latest_seq(&edge, r)).collect::<Option<Vec<_>>>()?;
        let seq = *s.iter().min()?;
        let bodies = ["270p", "180p", "90p"]
            .iter()
            .map(|r| {
                let resp = edge.get(&format!("/live/lad/{r}/{seq}.ts"));
                (resp.status == 200).then_some(resp.body)
            })
            .collect::<Option<Vec<_>>>()?;
        Some((seq, bodies))
    });
    let mut timings = Vec::new();
    for (r, body) in ["270p", "180p", "90p"].into_iter().zip(bodies) {
        let path = dir.join(&format!("{r}-{seq}.ts"));
        std::fs::write(&path, &body).unwrap();
        let f = frames(&path);
        assert!(f.len() >= 20, "{r}/{seq}.ts has {} frames", f.len());
        assert!(f[0].0, "{r}/{seq}.ts opens on a keyframe: {:?}", &f[..3]);
        timings.push((r, f.len(), f[0].1));
    }
    for w in timings.windows(2) {
        assert_eq!(w[0].1, w[1].1, "same frame count: {timings:?}");
        assert!((w[0].2 - w[1].2).abs() < 0.001, "same start time: {timings:?}");
    }

    // SIGKILL: the watchdog sees the exit, restarts, and the channel goes on after a discontinuity.
    let first = wait_until(MEDIA_WAIT, "the ladder ffmpeg", || ladder_ffmpeg(origin.proc.id()).first().copied());
    let before = latest_seq(&origin, "180p").unwrap();
    run(Command::new("kill").args(["-KILL", &first.to_string()]));
    wait_until(MEDIA_WAIT, "a restart counted with reason exit", || {
        (counter_with(&origin.get("/metrics").text(), "relaycast_ladder_restarts_total", "reason=\"exit\"") >= 1.0)
            .then_some(())
    });
    wait_until(MEDIA_WAIT, "new segments after a discontinuity", || {
        let text = origin.get("/live/lad/180p/index.m3u8").text();
        let last = segment_uris(&text).last().map(|u| seq_of(u))?;
        (last > before + 1 && text.contains("#EXT-X-DISCONTINUITY\n")).then_some(())
    });
    assert!(origin.log().contains("reason=\"exit\""), "the restart is logged:\n{}", origin.log());

    // SIGSTOP: a hung ffmpeg produces nothing; after the stall timeout it is killed and replaced.
    let second = wait_until(MEDIA_WAIT, "a new ladder ffmpeg", || {
        ladder_ffmpeg(origin.proc.id()).into_iter().find(|&p| p != first)
    });
    run(Command::new("kill").args(["-STOP", &second.to_string()]));
    let stalled_at = latest_seq(&origin, "90p").unwrap();
    wait_until(MEDIA_WAIT, "a restart counted with reason stall", || {
        (counter_with(&origin.get("/metrics").text(), "relaycast_ladder_restarts_total", "reason=\"stall\"") >= 1.0)
            .then_some(())
    });
    wait_until(MEDIA_WAIT, "segments again after the hang", || {
        (latest_seq(&origin, "90p")? > stalled_at + 1).then_some(())
    });
    assert!(!ladder_ffmpeg(origin.proc.id()).contains(&second), "the hung ffmpeg was killed");
    // Every rendition continues with the same numbers.
    wait_until(Duration::from_secs(20), "renditions aligned after the restarts", || {
        let s = ["270p", "180p", "90p"].iter().map(|r| latest_seq(&origin, r)).collect::<Option<Vec<_>>>()?;
        let a = origin.get(&format!("/live/lad/270p/{}.ts", s.iter().min()?)).status;
        let b = origin.get(&format!("/live/lad/90p/{}.ts", s.iter().min()?)).status;
        (a == 200 && b == 200).then_some(())
    });

    // ffmpeg dies with its origin, even one killed outright.
    let origin_pid = origin.proc.id();
    assert!(!ladder_ffmpeg(origin_pid).is_empty());
    drop(edge);
    drop(origin); // SIGKILL
    wait_until(Duration::from_secs(10), "ffmpeg gone with its origin", || {
        ladder_ffmpeg(origin_pid).is_empty().then_some(())
    });
}

#[test]
fn a_bad_ladder_input_is_reported_not_fatal() {
    require_ffmpeg();
    let dir = TempDir::new("ladder-bad");
    let bad = dir.join("broken.mp4");
    std::fs::write(&bad, vec![0x42u8; 4096]).unwrap();
    let origin = Node::origin("origin", "t", &["--ladder", &format!("bad={}", bad.display()), "--sample"]);
    wait_until(MEDIA_WAIT, "a log line naming the input", || {
        origin.log().contains("cannot probe ladder input").then_some(())
    });
    assert!(origin.log().contains("broken.mp4"), "{}", origin.log());
    assert_eq!(origin.get("/live/demo/index.m3u8").status, 200, "other channels keep working");
    let out = Command::new(env!("CARGO_BIN_EXE_relaycast"))
        .args(["origin", "--ladder", "nameonly", "--http", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NAME=INPUT"), "{}", String::from_utf8_lossy(&out.stderr));
}
