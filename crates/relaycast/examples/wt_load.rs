//! Tracker WebSocket capacity (issue 20): how many WebTorrent announces a tracker answers per
//! second of its own CPU, to set beside aquatic_ws's published ~120k responses/s per core.
//!
//! `--connections` clients each join one of `--swarms` swarms, then announce (with one offer, as
//! p2p-media-loader does) about 9 times a second — under the tracker's per-connection limit of
//! 100 messages per 10 s — for `--seconds`, reading every reply and relayed offer. Prints the
//! answers counted, the tracker's CPU seconds in that window (from /proc, `--pid`), and their
//! ratio: announces per CPU-second, i.e. per core. The clients share the machine, so the rate
//! per second is bounded by them; the ratio to the tracker's own CPU is the figure.
//!
//!   cargo run --release --example wt_load -- ws://127.0.0.1:7070/announce --pid PID \
//!       [--connections 1000] [--swarms 10] [--seconds 10]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

struct Args {
    url: String,
    pid: u32,
    connections: usize,
    swarms: usize,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args { url: String::new(), pid: 0, connections: 1000, swarms: 10, seconds: 10 };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--pid" => a.pid = value().parse().expect("--pid: a process id"),
            "--connections" => a.connections = value().parse().expect("--connections: a number"),
            "--swarms" => a.swarms = value().parse().expect("--swarms: a number"),
            "--seconds" => a.seconds = value().parse().expect("--seconds: a number"),
            url if !url.starts_with("--") => a.url = url.to_string(),
            other => panic!("unknown option {other}"),
        }
    }
    assert!(
        !a.url.is_empty() && a.pid != 0,
        "usage: wt_load ws://HOST:PORT/announce --pid TRACKER_PID [--connections N] [--swarms N] [--seconds N]"
    );
    a
}

/// utime + stime of a process, in seconds (clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("tracker process");
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// A 20-character id (p2p-media-loader's shape).
fn id20(prefix: &str, n: usize) -> String {
    format!("{prefix}{n:0>width$}", width = 20 - prefix.len())
}

async fn client(
    url: String,
    n: usize,
    swarm: String,
    until: Instant,
    answers: Arc<AtomicU64>,
    counting: Arc<AtomicU64>,
) {
    let Ok((ws, _)) = tokio_tungstenite::connect_async(url).await else { return };
    let (mut tx, mut rx) = ws.split();
    let peer = id20("-PM0203-", n);
    let reader = {
        let answers = answers.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = rx.next().await {
                if let Message::Text(t) = msg
                    && t.contains("\"interval\"")
                    && counting.load(Ordering::Relaxed) == 1
                {
                    answers.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let mut tick = tokio::time::interval(Duration::from_millis(111));
    let mut i = 0u64;
    while Instant::now() < until {
        tick.tick().await;
        let offer = json!({"offer": {"type": "offer", "sdp": "v=0 load"}, "offer_id": id20("o", i as usize)});
        let event = if i == 0 { "started" } else { "update" };
        let msg = json!({"action": "announce", "info_hash": swarm, "peer_id": peer, "numwant": 1,
            "uploaded": 0, "downloaded": 0, "event": event, "offers": [offer]});
        if tx.send(Message::Text(msg.to_string().into())).await.is_err() {
            break;
        }
        i += 1;
    }
    reader.abort();
}

#[tokio::main]
async fn main() {
    let a = args();
    let answers = Arc::new(AtomicU64::new(0));
    let counting = Arc::new(AtomicU64::new(0));
    let warmup = Duration::from_secs(2);
    let until = Instant::now() + warmup + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for n in 0..a.connections {
        let swarm = id20("relaycast-load-", n % a.swarms);
        tasks.push(tokio::spawn(client(a.url.clone(), n, swarm, until, answers.clone(), counting.clone())));
    }
    tokio::time::sleep(warmup).await;
    let cpu0 = cpu_seconds(a.pid);
    let t0 = Instant::now();
    counting.store(1, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    counting.store(0, Ordering::Relaxed);
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(a.pid) - cpu0;
    for t in tasks {
        let _ = t.await;
    }
    let n = answers.load(Ordering::Relaxed);
    println!(
        "{} connections, {} swarms: {n} announces answered in {wall:.1} s ({:.0}/s); tracker CPU {cpu:.2} s; {:.0} announces per CPU-second",
        a.connections,
        a.swarms,
        n as f64 / wall,
        n as f64 / cpu.max(0.01)
    );
}
