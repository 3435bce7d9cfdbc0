//! Chaos in the lab: faults drawn from a seed, a watch over every server while they happen, and
//! what the watch tells — how long the tree took to repair after each fault, whether any
//! playlist went backwards, and what the viewers lost (docs/LAB.md, "Chaos").

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use tokio::time::Instant;

use super::topology::{Chaos, Event, Fault};

/// Faults to the end of a run of `duration_s`, one at a time, each after a quiet gap; the last
/// ends at least 15 s before the run does, so its repair is seen.
pub fn schedule(c: &Chaos, duration_s: f64) -> Vec<Event> {
    let mut rng = ChaCha8Rng::seed_from_u64(c.seed);
    let kinds: Vec<(Fault, &Vec<String>)> =
        [(Fault::Kill, &c.kill), (Fault::Partition, &c.partition), (Fault::Loss, &c.loss)]
            .into_iter()
            .filter(|(_, hosts)| !hosts.is_empty())
            .collect();
    let mut events = Vec::new();
    let mut t = 0.0;
    loop {
        let gap = rng.random_range(c.gap_s[0]..=c.gap_s[1]);
        let for_s = rng.random_range(c.for_s[0]..=c.for_s[1]);
        let (fault, hosts) = kinds[rng.random_range(0..kinds.len())];
        let host = hosts[rng.random_range(0..hosts.len())].clone();
        t += gap;
        if t + for_s > duration_s - 15.0 {
            return events;
        }
        let round = |x: f64| (x * 10.0).round() / 10.0;
        events.push(Event {
            at_s: round(t),
            host,
            egress_kbps: None,
            fault: Some(fault),
            for_s: round(for_s),
            loss: c.loss_rate,
        });
        t += for_s;
    }
}

/// What one poll of one server saw: the newest segment its playlist lists, and its media
/// sequence number (None when it did not answer).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Seen {
    pub t_s: f64,
    pub media_seq: u64,
    pub latest: u64,
}

/// Every poll of the run: per server, what it listed; the tracker's count of live nodes.
#[derive(Default, Debug, serde::Serialize)]
pub struct Timeline {
    pub servers: BTreeMap<String, Vec<Option<Seen>>>,
    pub tracker: Vec<(f64, Option<usize>)>,
}

/// Poll every server's playlist (and the tracker's node list) every 250 ms until `until`.
pub async fn watch(
    client: reqwest::Client,
    servers: Vec<(String, SocketAddr)>,
    tracker: Option<SocketAddr>,
    channel: String,
    started: Instant,
    until: Instant,
) -> Timeline {
    let mut timeline = Timeline::default();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    while Instant::now() < until {
        tick.tick().await;
        let t_s = started.elapsed().as_secs_f64();
        let polls = servers.iter().map(|(_, http)| latest_listed(&client, *http, &channel));
        let seen = futures_util::future::join_all(polls).await;
        for ((name, _), s) in servers.iter().zip(seen) {
            let sample = s.map(|(media_seq, latest)| Seen { t_s, media_seq, latest });
            timeline.servers.entry(name.clone()).or_default().push(sample);
        }
        if let Some(addr) = tracker {
            timeline.tracker.push((t_s, live_nodes(&client, addr).await));
        }
    }
    timeline
}

/// The media sequence and newest sequence number of a server's playlist (following a master
/// playlist to its first variant).
async fn latest_listed(client: &reqwest::Client, http: SocketAddr, channel: &str) -> Option<(u64, u64)> {
    let get = |path: String| async move {
        let resp = client.get(format!("http://{http}{path}")).timeout(Duration::from_secs(2)).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.text().await.ok()
    };
    let mut text = get(format!("/live/{channel}/index.m3u8")).await?;
    if text.contains("#EXT-X-STREAM-INF") {
        let variant = text.lines().find(|l| !l.is_empty() && !l.starts_with('#'))?.to_string();
        text = get(format!("/live/{channel}/{variant}")).await?;
    }
    media_span(&text)
}

/// `(media sequence, newest sequence)` of a media playlist; None if it lists no segment.
pub fn media_span(playlist: &str) -> Option<(u64, u64)> {
    let media_seq = playlist.lines().find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))?.trim().parse().ok()?;
    let segments = playlist.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).count() as u64;
    (segments > 0).then(|| (media_seq, media_seq + segments - 1))
}

async fn live_nodes(client: &reqwest::Client, tracker: SocketAddr) -> Option<usize> {
    let resp = client.get(format!("http://{tracker}/api/v1/nodes")).timeout(Duration::from_secs(2)).send().await;
    let v: serde_json::Value = serde_json::from_slice(&resp.ok()?.bytes().await.ok()?).ok()?;
    Some(v["nodes"].as_array()?.len())
}

/// How long after a fault ended the tree was whole again, in seconds (None: not within the run).
///
/// Server faults: every server lists a segment newer than any listed when the fault ended, so
/// the figure includes up to one segment's duration of waiting for the next one. Tracker kills:
/// the tracker knows every server again.
pub fn repair_s(timeline: &Timeline, event: &Event, tracker_host: Option<&str>) -> Option<f64> {
    let end = event.at_s + event.for_s;
    if tracker_host == Some(event.host.as_str()) {
        let all = timeline.servers.len();
        return timeline.tracker.iter().find(|(t, n)| *t >= end && *n >= Some(all)).map(|(t, _)| t - end);
    }
    let last_before = |samples: &Vec<Option<Seen>>| {
        samples.iter().flatten().take_while(|s| s.t_s <= end).map(|s| s.latest).max().unwrap_or(0)
    };
    let newest_at_end = timeline.servers.values().map(last_before).max()?;
    let polls = timeline.servers.values().map(Vec::len).min().unwrap_or(0);
    (0..polls).find_map(|i| {
        let row: Vec<Option<Seen>> = timeline.servers.values().map(|v| v[i]).collect();
        let t = row.iter().flatten().map(|s| s.t_s).next()?;
        let whole = row.iter().all(|s| s.is_some_and(|s| s.latest > newest_at_end));
        (t >= end && whole).then_some(t - end)
    })
}

/// Per server: polls where the playlist went backwards (a smaller media sequence or newest
/// segment than the poll before), while the server stayed up and across its own restart.
pub fn backwards(timeline: &Timeline) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for (name, samples) in &timeline.servers {
        let (mut while_up, mut across_restart) = (0u64, 0u64);
        let mut last: Option<Seen> = None;
        let mut gap_since_last = false;
        for s in samples {
            let Some(s) = s else {
                gap_since_last = true;
                continue;
            };
            if let Some(l) = last
                && (s.media_seq < l.media_seq || s.latest < l.latest)
            {
                if gap_since_last { across_restart += 1 } else { while_up += 1 }
            }
            last = Some(*s);
            gap_since_last = false;
        }
        out.insert(name.clone(), json!({"while_up": while_up, "after_an_outage": across_restart}));
    }
    serde_json::Value::Object(out)
}

/// Every sequence number some server listed during the run.
pub fn listed(timeline: &Timeline) -> BTreeSet<u64> {
    timeline.servers.values().flatten().flatten().flat_map(|s| s.media_seq..=s.latest).collect()
}

/// Per viewer log: stalls, stall time, segments played, segments skipped that a server had
/// listed (lost) and those no server ever listed (never made: a restarted origin numbers from
/// the clock, so its numbers jump past its downtime), and the lost ones that fell outside every
/// fault's window (from its start to its repair plus `slack_s`).
pub fn viewers(
    logs: &[(String, PathBuf)],
    listed: &BTreeSet<u64>,
    windows: &[(f64, f64)],
    slack_s: f64,
) -> serde_json::Value {
    let rows: Vec<_> = logs
        .iter()
        .map(|(label, log)| {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let (mut end, mut skipped, mut never_made, mut outside) = (serde_json::Value::Null, 0u64, 0u64, 0u64);
            for v in text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
                match v["type"].as_str() {
                    Some("skip") if v["seq"].as_u64().is_some_and(|seq| !listed.contains(&seq)) => never_made += 1,
                    Some("skip") => {
                        skipped += 1;
                        let t = v["t_ms"].as_f64().unwrap_or(0.0) / 1000.0;
                        if !windows.iter().any(|(a, b)| t >= *a && t <= b + slack_s) {
                            outside += 1;
                        }
                    }
                    Some("end") => end = v,
                    _ => {}
                }
            }
            json!({
                "viewer": label, "log": log.file_name().map(|f| f.to_string_lossy().into_owned()),
                "segments": end["segments"], "stalls": end["stalls"], "stall_ms": end["stall_ms"],
                "skipped": skipped, "skipped_outside_faults": outside, "never_made": never_made,
            })
        })
        .collect();
    json!(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chaos() -> Chaos {
        Chaos {
            seed: 3,
            gap_s: [5.0, 20.0],
            for_s: [2.0, 8.0],
            kill: vec!["a".into(), "tracker".into()],
            partition: vec!["a".into()],
            loss: vec![],
            loss_rate: 0.1,
        }
    }

    #[test]
    fn schedules_are_seeded_serial_and_end_in_time() {
        let one = schedule(&chaos(), 600.0);
        assert_eq!(one, schedule(&chaos(), 600.0), "one seed, one schedule");
        assert!(one.len() >= 15, "a fault every 7–28 s over 10 minutes: {}", one.len());
        for w in one.windows(2) {
            assert!(w[1].at_s >= w[0].at_s + w[0].for_s + 5.0 - 0.2, "faults do not overlap: {w:?}");
        }
        let last = one.last().unwrap();
        assert!(last.at_s + last.for_s <= 585.0);
        assert!(one.iter().all(|e| e.fault != Some(Fault::Loss)), "no loss hosts listed");
        assert!(one.iter().any(|e| e.fault == Some(Fault::Partition)));
    }

    fn seen(t_s: f64, latest: u64) -> Option<Seen> {
        Some(Seen { t_s, media_seq: latest - 5, latest })
    }

    #[test]
    fn repair_is_when_every_server_lists_something_newer() {
        let mut tl = Timeline::default();
        // The fault on b lasts from 1 s to 2 s; b answers again at 3 s with old segments,
        // and holds a newer one at 4 s.
        tl.servers.insert("a".into(), vec![seen(1.0, 10), seen(2.0, 11), seen(3.0, 12), seen(4.0, 13)]);
        tl.servers.insert("b".into(), vec![seen(1.0, 10), None, seen(3.0, 11), seen(4.0, 13)]);
        let fault =
            Event { at_s: 1.0, host: "b".into(), egress_kbps: None, fault: Some(Fault::Kill), for_s: 1.0, loss: 0.1 };
        assert_eq!(repair_s(&tl, &fault, None), Some(2.0));
        assert_eq!(backwards(&tl)["b"]["after_an_outage"], 0);
        tl.servers.get_mut("a").unwrap().push(seen(5.0, 12));
        assert_eq!(backwards(&tl)["a"]["while_up"], 1, "a newest segment that goes back is counted");
    }

    #[test]
    fn media_span_reads_sequence_and_newest() {
        let list = "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:40\n#EXTINF:1,\n40.ts\n#EXTINF:1,\n41.ts\n";
        assert_eq!(media_span(list), Some((40, 41)));
        assert_eq!(media_span("#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:40\n"), None);
    }
}
