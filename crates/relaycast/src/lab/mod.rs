//! `relaycast lab TOPOLOGY.toml` (F60, F61): an emulated network of real processes on one
//! machine. Every host of the topology — origin, relays, a broadcaster (ffmpeg), viewers
//! (`relaycast watch`) — is a real process on 127.0.0.1; every connection between two hosts runs
//! through a user-space proxy that applies both hosts' links (delay, rate, loss; see `link.rs`
//! and docs/LAB.md). Each run writes raw logs, a summary JSON and a report with pictures into
//! `results/<name>-<time>/`.

pub mod link;
mod topology;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use self::link::{Path as LinkPath, Shaper};
use self::topology::{Host, Role, Topology};

const TOKEN: &str = "relaycast-lab";
const CHANNEL: &str = "cam";
const PUSH_KEY: &str = "lab-key";

#[derive(Args, Debug, Clone)]
pub struct LabArgs {
    /// Topology file (see lab/*.toml).
    pub topology: PathBuf,
    /// Parent folder of the results folder.
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Override the topology's duration_s (seconds viewers watch).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Override the sweep's viewer counts, e.g. `--counts 1,20`.
    #[arg(long, value_delimiter = ',')]
    pub counts: Vec<usize>,
}

/// A host's link, as two shapers: host → switch and switch → host.
struct HostLink {
    egress: Arc<Shaper>,
    ingress: Arc<Shaper>,
}

/// A started server (origin or relay).
struct Server {
    http: SocketAddr,
    quic: SocketAddr,
}

/// Child processes, killed when the lab ends (also on error or Ctrl-C).
#[derive(Default)]
struct Procs(Vec<(String, Child)>);

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
        }
        for (_, c) in &mut self.0 {
            let _ = c.wait();
        }
    }
}

pub async fn run(args: LabArgs) -> Result<()> {
    let mut topo = Topology::load(&args.topology)?;
    if let Some(d) = args.duration {
        topo.duration_s = d;
    }
    if let Some(sweep) = topo.sweep.as_mut()
        && !args.counts.is_empty()
    {
        sweep.counts = args.counts.iter().copied().filter(|c| *c > 0).collect();
    }
    let stamp =
        relaycast_core::playlist::iso8601_utc(crate::common::wall_ms()).replace([':', '.'], "").replace('T', "-");
    let dir = args.results.join(format!("{}-{}", topo.name, &stamp[..17]));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!("lab {}: results in {}", topo.name, dir.display());
    let Some(sweep) = topo.sweep.clone() else {
        let summary = run_once(&topo, &dir).await?;
        println!("{}", serde_json::to_string_pretty(&summary["viewers"])?);
        println!("results: {}", dir.display());
        return Ok(());
    };
    let mut rows = Vec::new();
    for &count in &sweep.counts {
        let mut t = topo.clone();
        for h in t.hosts.iter_mut().filter(|h| sweep.hosts.contains(&h.name)) {
            h.count = count;
        }
        let sub = dir.join(format!("viewers-{count}"));
        std::fs::create_dir_all(&sub)?;
        eprintln!("--- {count} viewer(s) per host ---");
        let summary = run_once(&t, &sub).await?;
        rows.push(json!({"viewers": count, "origin": summary["origin"], "qoe": summary["viewers"]}));
    }
    std::fs::write(dir.join("sweep.json"), serde_json::to_vec_pretty(&rows)?)?;
    sweep_chart(&rows, &dir.join("origin-load.svg"))?;
    println!("{}", serde_json::to_string_pretty(&rows)?);
    println!("results: {}", dir.display());
    Ok(())
}

/// Origin egress against audience size: to viewers directly (HTTP) and to relays (QUIC).
fn sweep_chart(rows: &[serde_json::Value], out: &Path) -> Result<()> {
    use plotters::prelude::*;
    let pts = |key: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .map(|r| (r["viewers"].as_f64().unwrap_or(0.0), r["origin"][key].as_f64().unwrap_or(0.0) / 1e6))
            .collect()
    };
    let (direct, tier) = (pts("http_egress_bytes"), pts("peer_egress_bytes"));
    let max_x = direct.iter().map(|p| p.0).fold(1.0, f64::max);
    let max_y = direct.iter().chain(&tier).map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(out, (800, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Origin egress vs audience size", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_x * 1.05, 0.0..max_y)?;
    chart.configure_mesh().x_desc("viewers per group").y_desc("origin egress (MB)").draw()?;
    chart
        .draw_series(LineSeries::new(direct.clone(), RED.stroke_width(2)))?
        .label("viewers on the origin directly (HTTP)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart.draw_series(direct.iter().map(|p| Circle::new(*p, 4, RED.filled())))?;
    chart
        .draw_series(LineSeries::new(tier.clone(), BLUE.stroke_width(2)))?
        .label("viewers behind a relay tier (QUIC to relays)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart.draw_series(tier.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))?;
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.9)).draw()?;
    root.present()?;
    Ok(())
}

/// Run the topology once into `dir`; returns the summary it wrote.
async fn run_once(topo: &Topology, dir: &Path) -> Result<serde_json::Value> {
    let exe = std::env::current_exe().context("locating the relaycast binary")?;
    let mut procs = Procs::default();

    let links: BTreeMap<String, HostLink> = topo
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let one_way = Duration::from_secs_f64(h.link.delay_ms / 2000.0);
            let rate = h.link.rate_kbps.map(|k| k * 1000);
            let egress = Shaper::new(&format!("{}-out", h.name), one_way, rate, h.link.loss, 2 * i as u64 + 1);
            let ingress = Shaper::new(&format!("{}-in", h.name), one_way, rate, h.link.loss, 2 * i as u64 + 2);
            (h.name.clone(), HostLink { egress, ingress })
        })
        .collect();
    let path = |from: &str, to: &str| LinkPath(vec![links[from].egress.clone(), links[to].ingress.clone()]);
    let mut proxies = Vec::new();

    // Servers, parents first. Relays reach their parent through a UDP proxy (QUIC).
    let pushed = topo.hosts.iter().any(|h| h.role == Role::Broadcaster);
    let mut servers: BTreeMap<String, Server> = BTreeMap::new();
    for h in topo.servers_in_start_order() {
        let mut cmd_args: Vec<String> = Vec::new();
        match h.role {
            Role::Origin => {
                cmd_args.push("origin".into());
                if pushed {
                    cmd_args.extend(["--push".into(), format!("{CHANNEL}={PUSH_KEY}")]);
                } else {
                    cmd_args.push("--sample".into());
                }
            }
            Role::Relay => {
                let parent = h.parent.as_deref().expect("validated: relays have a parent");
                let target = servers[parent].quic;
                let (proxy, task) =
                    link::udp_proxy(localhost0(), target, path(&h.name, parent), path(parent, &h.name)).await?;
                proxies.push(task);
                cmd_args.extend(["relay".into(), "--parent".into(), proxy.to_string()]);
            }
            _ => unreachable!("servers_in_start_order yields origins and relays"),
        }
        cmd_args.extend(
            [
                "--name",
                &h.name,
                "--http",
                "127.0.0.1:0",
                "--quic",
                "127.0.0.1:0",
                "--token",
                TOKEN,
                "--max-children",
                "1000",
            ]
            .map(String::from),
        );
        let (child, http, quic) = start_node(&exe, &h.name, &cmd_args, dir)?;
        procs.0.push((h.name.clone(), child));
        servers.insert(h.name.clone(), Server { http, quic });
    }

    // The broadcaster pushes through its link and the origin's.
    for h in topo.hosts.iter().filter(|h| h.role == Role::Broadcaster) {
        let to = h.push_to.as_deref().expect("validated: broadcasters push somewhere");
        let (proxy, task) =
            link::tcp_proxy(localhost0(), servers[to].http, path(&h.name, to), path(to, &h.name)).await?;
        proxies.push(task);
        procs.0.push((h.name.clone(), start_broadcaster(h, proxy, dir)?));
    }
    let channel = if pushed { CHANNEL } else { "demo" };
    let origin = topo.hosts.iter().find(|h| h.role == Role::Origin).expect("validated: one origin");
    let origin_http = servers[&origin.name].http;
    wait_for_channel(origin_http, channel, Duration::from_secs(60)).await?;
    eprintln!("stream is live at {}; settling for {} s", origin.name, topo.warmup_s);
    tokio::time::sleep(Duration::from_secs_f64(topo.warmup_s)).await;

    // Viewers, each through its own link and the watched server's.
    let mut viewers = Vec::new();
    let client = lab_client()?;
    let mut paths_rtt = BTreeMap::new();
    for h in topo.hosts.iter().filter(|h| h.role == Role::Viewer) {
        let mut urls = Vec::new();
        for w in &h.watch {
            let (proxy, task) =
                link::tcp_proxy(localhost0(), servers[w].http, path(&h.name, w), path(w, &h.name)).await?;
            proxies.push(task);
            let rtt = measured_rtt_ms(&client, proxy).await;
            paths_rtt.insert(format!("{}->{}", h.name, w), json!({"configured_ms": h.link.delay_ms + topo.host(w).map_or(0.0, |x| x.link.delay_ms), "measured_ms": rtt}));
            urls.push(format!("http://{proxy}/live/{channel}/index.m3u8"));
        }
        let log = dir.join(format!("{}.jsonl", h.name));
        let mut cmd = Command::new(&exe);
        cmd.args([
            "watch",
            "--quiet",
            "--duration",
            &topo.duration_s.to_string(),
            "--label",
            h.label.as_deref().unwrap_or(&h.name),
        ])
        .arg("--log")
        .arg(&log)
        .args(["--viewers", &h.count.to_string()]);
        if h.pop {
            cmd.arg("--pop").arg(urls.join(","));
        } else {
            cmd.args(&urls);
        }
        if let Some(mode) = &h.mode {
            cmd.args(["--mode", mode]);
        }
        let err = std::fs::File::create(dir.join(format!("{}.log", h.name)))?;
        cmd.stdout(Stdio::null()).stderr(err).env("NO_COLOR", "1");
        let child = cmd.spawn().context("starting a viewer")?;
        viewers.push((h.clone(), log, child));
    }
    eprintln!("{} viewer host(s) watching for {} s", viewers.len(), topo.duration_s);

    // Timed events, then wait for the viewers.
    let started = Instant::now();
    let mut events = topo.events.clone();
    events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    for e in &events {
        let at = started + Duration::from_secs_f64(e.at_s);
        tokio::time::sleep(at.saturating_duration_since(Instant::now())).await;
        if let (Some(kbps), Some(server)) = (e.egress_kbps, servers.get(&e.host)) {
            set_egress(&client, server.http, kbps)
                .await
                .with_context(|| format!("event at {} s on {}", e.at_s, e.host))?;
            eprintln!("t={:.0}s: {} egress cap {} kbit/s", e.at_s, e.host, kbps);
        }
    }
    let mut results = Vec::new();
    for (h, log, mut child) in viewers {
        let status = tokio::task::spawn_blocking(move || child.wait()).await??;
        if !status.success() {
            eprintln!("viewer {} exited with {status}; see {}", h.name, dir.join(format!("{}.log", h.name)).display());
        }
        let logs: Vec<PathBuf> = if h.count == 1 {
            vec![log]
        } else {
            (1..=h.count).map(|i| PathBuf::from(format!("{}.{i}", log.display()))).collect()
        };
        results.push((h, logs));
    }

    // Summary: per viewer host, stalls and per-chunk delay against the path's minimum; origin load.
    let origin_metrics = fetch_text(&client, origin_http, "/metrics").await.unwrap_or_default();
    let mut viewer_summaries = Vec::new();
    for (h, logs) in &results {
        let s = summarize_logs(logs);
        let path_min_ms = delivery_path_ms(topo, h);
        viewer_summaries.push(
            json!({"host": h.name, "viewers": h.count, "watch": h.watch, "path_min_one_way_ms": path_min_ms, "qoe": s}),
        );
    }
    let shapers: Vec<_> = links
        .iter()
        .map(|(name, l)| json!({"host": name, "egress": format!("{:?}", l.egress.stats()), "ingress": format!("{:?}", l.ingress.stats())}))
        .collect();
    let summary = json!({
        "name": topo.name,
        "duration_s": topo.duration_s,
        "viewers": viewer_summaries,
        "paths_rtt": paths_rtt,
        "origin": {
            "http_egress_bytes": metric(&origin_metrics, "relaycast_http_egress_bytes_total"),
            "peer_egress_bytes": metric(&origin_metrics, "relaycast_peer_egress_bytes_total"),
        },
        "links": shapers,
    });
    std::fs::write(dir.join("summary.json"), serde_json::to_vec_pretty(&summary)?)?;
    let report_logs: Vec<PathBuf> =
        results.iter().filter_map(|(_, logs)| logs.first().cloned()).filter(|p| p.exists()).collect();
    if !report_logs.is_empty() {
        let report = crate::report::ReportArgs {
            logs: report_logs,
            out: dir.join("report"),
            title: Some(format!("Lab: {}", topo.name)),
            ramp: None,
        };
        if let Err(e) = crate::report::run(report) {
            eprintln!("report failed: {e:#}");
        }
    }
    for p in proxies {
        p.abort();
    }
    drop(procs);
    Ok(summary)
}

fn localhost0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Start a node and read its HTTP and QUIC addresses from its first lines.
fn start_node(exe: &Path, name: &str, args: &[String], dir: &Path) -> Result<(Child, SocketAddr, SocketAddr)> {
    let err = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let mut child = Command::new(exe)
        .args(args)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let out = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut http, mut quic) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while http.is_none() || quic.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            bail!("{name} did not start; see {}", dir.join(format!("{name}.log")).display());
        };
        if let Some((_, a)) = line.split_once(" listening: http://") {
            http = Some(a.trim_end_matches('/').parse()?);
        } else if let Some((_, a)) = line.split_once(" accepting relays on udp ") {
            quic = Some(a.trim().parse()?);
        }
    }
    Ok((child, http.expect("loop ends when known"), quic.expect("loop ends when known")))
}

fn start_broadcaster(h: &Host, ingest: SocketAddr, dir: &Path) -> Result<Child> {
    let url = format!("http://{ingest}/ingest/{CHANNEL}/{PUSH_KEY}/src.m3u8");
    let gop = ((h.segment_s * 25.0).round() as u32).max(1).to_string();
    let err = std::fs::File::create(dir.join(format!("{}.log", h.name)))?;
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency"])
        .args([
            "-b:v",
            &format!("{}k", h.bitrate_kbps),
            "-maxrate",
            &format!("{}k", h.bitrate_kbps),
            "-bufsize",
            &format!("{}k", h.bitrate_kbps),
        ])
        .args(["-g", &gop, "-keyint_min", &gop, "-sc_threshold", "0", "-c:a", "aac", "-b:a", "64k"])
        .args(["-f", "hls", "-hls_time", &h.segment_s.to_string(), "-hls_list_size", "6", "-method", "PUT", &url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .context("starting ffmpeg as the broadcaster (apt-get install -y ffmpeg)")
}

async fn wait_for_channel(http: SocketAddr, channel: &str, timeout: Duration) -> Result<()> {
    let client = lab_client()?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(body) = fetch_text(&client, http, &format!("/live/{channel}/index.m3u8")).await
            && body.contains(".ts")
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    bail!("channel {channel} did not go live at {http} within {timeout:?}")
}

/// The lab's HTTP client: a request that takes over 10 s counts as failed.
fn lab_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?)
}

async fn fetch_text(client: &reqwest::Client, http: SocketAddr, path: &str) -> Result<String> {
    let url = reqwest::Url::parse(&format!("http://{http}{path}"))?;
    let body = crate::common::http::fetch(client, &url, 16 * 1024 * 1024).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

async fn set_egress(client: &reqwest::Client, http: SocketAddr, kbps: u64) -> Result<()> {
    let resp = client
        .put(format!("http://{http}/api/v1/egress"))
        .bearer_auth(TOKEN)
        .body(format!("{{\"kbps\": {kbps}}}"))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("egress change refused: HTTP {}", resp.status());
    }
    Ok(())
}

/// The smallest of five request round trips through a proxy (what its links add, plus ~0).
async fn measured_rtt_ms(client: &reqwest::Client, proxy: SocketAddr) -> Option<f64> {
    let mut best: Option<f64> = None;
    for _ in 0..5 {
        let t = Instant::now();
        if fetch_text(client, proxy, "/api/v1/egress").await.is_ok() {
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            best = Some(best.map_or(ms, |b: f64| b.min(ms)));
        }
    }
    best
}

/// The configured one-way delay from the origin to a viewer: every hop A→B on the way crosses
/// A's link and B's link, each adding half its delay_ms.
fn delivery_path_ms(topo: &Topology, viewer: &Host) -> Vec<f64> {
    viewer
        .watch
        .iter()
        .map(|server| {
            let mut total = (viewer.link.delay_ms + topo.host(server).map_or(0.0, |s| s.link.delay_ms)) / 2.0;
            let mut at = topo.host(server);
            while let Some(h) = at {
                let Some(parent) = h.parent.as_deref().and_then(|p| topo.host(p)) else { break };
                total += (h.link.delay_ms + parent.link.delay_ms) / 2.0;
                at = Some(parent);
            }
            total
        })
        .collect()
}

/// Stalls, stall time, duplicate share and per-chunk origin delay over a viewer host's logs.
fn summarize_logs(logs: &[PathBuf]) -> serde_json::Value {
    let mut delays = Vec::new();
    let (mut stalls, mut stall_ms, mut bytes, mut dup, mut segments) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for log in logs {
        let Ok(text) = std::fs::read_to_string(log) else { continue };
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            match v["type"].as_str() {
                Some("segment") => {
                    if let Some(d) = v["origin_delay_ms"].as_f64() {
                        delays.push(d);
                    }
                }
                Some("end") => {
                    stalls += v["stalls"].as_u64().unwrap_or(0);
                    stall_ms += v["stall_ms"].as_u64().unwrap_or(0);
                    bytes += v["bytes"].as_u64().unwrap_or(0);
                    dup += v["duplicate_bytes"].as_u64().unwrap_or(0);
                    segments += v["segments"].as_u64().unwrap_or(0);
                }
                _ => {}
            }
        }
    }
    delays.sort_by(|a, b| a.total_cmp(b));
    let pct = |q: f64| delays.get(((delays.len() as f64 - 1.0) * q).round() as usize).copied();
    json!({
        "segments": segments, "stalls": stalls, "stall_ms": stall_ms, "bytes": bytes,
        "duplicate_pct": if bytes > 0 { dup as f64 * 100.0 / bytes as f64 } else { 0.0 },
        "delay_ms_p50": pct(0.5), "delay_ms_p99": pct(0.99),
    })
}

/// Sum of a Prometheus metric over its label sets.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
