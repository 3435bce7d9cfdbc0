//! One run of a lab topology: links, servers, broadcasters, viewers, timed events, then the
//! summary and the report (see docs/LAB.md).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::budget;
use super::chaos;
use super::link::{self, Path as LinkPath, ProxyHandle, Shaper};
use super::procs::{self, Procs};
use super::topology::{Event, Fault, Host, Link, Role, Topology};
use super::{CHANNEL, PUSH_KEY, TOKEN};

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

/// One run of a topology: its emulated links, the processes started, the proxies between them.
/// Dropping it stops every process and proxy (also on error or Ctrl-C).
struct Run<'a> {
    topo: &'a Topology,
    dir: &'a Path,
    exe: PathBuf,
    client: reqwest::Client,
    links: BTreeMap<String, HostLink>,
    servers: BTreeMap<String, Server>,
    /// The tracker's HTTP address, when the topology has one.
    tracker: Option<SocketAddr>,
    proxies: Vec<ProxyHandle>,
    procs: Procs,
}

/// A viewer host's `relaycast watch` process and its QoE log.
struct Watching {
    host: Host,
    log: PathBuf,
    child: Child,
}

/// Run the topology once into `dir`; returns the summary it wrote.
pub async fn run_once(topo: &Topology, dir: &Path) -> Result<serde_json::Value> {
    let mut run = Run::new(topo, dir)?;
    run.start_servers().await?;
    let channel = run.start_broadcasters().await?;
    let origin = topo.hosts.iter().find(|h| h.role == Role::Origin).expect("validated: one origin");
    let origin_http = run.servers[&origin.name].http;
    wait_for_channel(origin_http, channel, Duration::from_secs(60)).await?;
    eprintln!("stream is live at {}; settling for {} s", origin.name, topo.warmup_s);
    tokio::time::sleep(Duration::from_secs_f64(topo.warmup_s)).await;

    let (viewers, paths_rtt) = run.start_viewers(channel).await?;
    eprintln!("{} viewer host(s) watching for {} s", viewers.len(), topo.duration_s);
    let events = run.events();
    let faults = events.iter().any(|e| e.fault.is_some());
    let watch = faults.then(|| run.watch_servers(channel));
    run.play_events(&events).await?;
    let results = run.wait_for(viewers).await?;

    let mut summary = run.summarize(origin_http, &results, paths_rtt).await;
    summary["budget"] = run.budgets(channel, &results).await;
    if let Some(watch) = watch {
        summary["chaos"] = run.chaos_summary(&events, watch.await?, &results);
    }
    std::fs::write(dir.join("summary.json"), serde_json::to_vec_pretty(&summary)?)?;
    run.report(&results);
    Ok(summary)
}

impl<'a> Run<'a> {
    /// Each host's link becomes two shapers; nothing runs yet.
    fn new(topo: &'a Topology, dir: &'a Path) -> Result<Self> {
        let links = topo
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
        Ok(Self {
            topo,
            dir,
            exe: std::env::current_exe().context("locating the relaycast binary")?,
            client: lab_client()?,
            links,
            servers: BTreeMap::new(),
            tracker: None,
            proxies: Vec::new(),
            procs: Procs::default(),
        })
    }

    /// The emulated path from host `from` to host `to`: the one's egress, the other's ingress.
    fn path(&self, from: &str, to: &str) -> LinkPath {
        LinkPath(vec![self.links[from].egress.clone(), self.links[to].ingress.clone()])
    }

    /// Servers, parents first, and the tracker right after the origin. Relays reach their
    /// parent (and backups) through UDP proxies (QUIC).
    async fn start_servers(&mut self) -> Result<()> {
        let tracker = self.topo.tracker().map(|_| procs::free_port()).transpose()?;
        for h in self.topo.servers_in_start_order() {
            let mut cmd_args: Vec<String> = Vec::new();
            match h.role {
                Role::Origin => {
                    cmd_args.push("origin".into());
                    match self.pushed() {
                        true => cmd_args.extend(["--push".into(), format!("{CHANNEL}={PUSH_KEY}")]),
                        false => cmd_args.push("--sample".into()),
                    }
                    if tracker.is_some() {
                        // A restarted origin keeps its key, so P2P viewers keep verifying.
                        cmd_args.extend(["--signing-key".into(), self.origin_key().display().to_string()]);
                    }
                }
                Role::Relay => {
                    cmd_args.push("relay".into());
                    for up in h.parent.iter().chain(&h.backup) {
                        let target = self.servers[up].quic;
                        let (path_up, path_down) = (self.path(&h.name, up), self.path(up, &h.name));
                        let (proxy, task) = link::udp_proxy(localhost0(), target, path_up, path_down).await?;
                        self.proxies.push(task);
                        cmd_args.extend(["--parent".into(), proxy.to_string()]);
                    }
                }
                _ => unreachable!("servers_in_start_order yields origins and relays"),
            }
            if let Some(t) = tracker {
                cmd_args.extend(["--tracker".into(), format!("http://{t}"), "--region".into(), h.region.clone()]);
            }
            let common = ["--name", &h.name, "--http", "127.0.0.1:0", "--quic", "127.0.0.1:0"];
            cmd_args.extend(common.into_iter().chain(["--token", TOKEN, "--max-children", "1000"]).map(String::from));
            let at = self.procs.start_server(&self.exe, &h.name, &cmd_args, self.dir, true)?;
            let quic = at.quic.expect("servers are started waiting for their QUIC address");
            self.servers.insert(h.name.clone(), Server { http: at.http, quic });
            if let (Role::Origin, Some(t)) = (&h.role, tracker) {
                self.start_tracker(t)?;
            }
        }
        Ok(())
    }

    /// The tracker, once the origin has written its key. Nodes announce to it (so it knows the
    /// edges and their load) but get no neighbours from it: the tree's links are the
    /// topology's, through the emulated links.
    fn start_tracker(&mut self, http: SocketAddr) -> Result<()> {
        let host = self.topo.tracker().expect("called when there is a tracker");
        let links = self.dir.join("tracker-topology.toml");
        std::fs::write(&links, "# Written by the lab: nodes link only as the lab's topology says.\n[neighbours]\n")?;
        let public = crate::common::signing::public_path(&self.origin_key());
        let args = [
            "tracker".into(),
            "--http".into(),
            http.to_string(),
            "--token".into(),
            TOKEN.into(),
            "--topology".into(),
            links.display().to_string(),
            "--origin-key".into(),
            public.display().to_string(),
            "--viewer-rate".into(),
            "100000".into(),
        ];
        let at = self.procs.start_server(&self.exe, &host.name, &args, self.dir, false)?;
        self.tracker = Some(at.http);
        Ok(())
    }

    fn origin_key(&self) -> PathBuf {
        self.dir.join("origin.key")
    }

    /// Whether a broadcaster pushes the stream (else the origin plays its sample).
    fn pushed(&self) -> bool {
        self.topo.hosts.iter().any(|h| h.role == Role::Broadcaster)
    }

    /// The broadcasters push through their link and the origin's; returns the channel to watch.
    async fn start_broadcasters(&mut self) -> Result<&'static str> {
        for h in self.topo.hosts.iter().filter(|h| h.role == Role::Broadcaster) {
            let to = h.push_to.as_deref().expect("validated: broadcasters push somewhere");
            let (up, down) = (self.path(&h.name, to), self.path(to, &h.name));
            let (proxy, task) = link::tcp_proxy(localhost0(), self.servers[to].http, up, down).await?;
            self.proxies.push(task);
            self.procs.keep(&h.name, start_broadcaster(h, proxy, self.dir)?);
        }
        Ok(if self.pushed() { CHANNEL } else { "demo" })
    }

    /// Viewers, each through its own link and the watched server's; also the RTT measured
    /// over each such path.
    async fn start_viewers(&mut self, channel: &str) -> Result<(Vec<Watching>, BTreeMap<String, serde_json::Value>)> {
        let mut viewers = Vec::new();
        let mut paths_rtt = BTreeMap::new();
        for h in self.topo.hosts.iter().filter(|h| h.role == Role::Viewer) {
            let mut urls = Vec::new();
            for w in &h.watch {
                let (up, down) = (self.path(&h.name, w), self.path(w, &h.name));
                let (proxy, task) = link::tcp_proxy(localhost0(), self.servers[w].http, up, down).await?;
                self.proxies.push(task);
                let rtt = measured_rtt_ms(&self.client, proxy).await;
                let configured = h.link.delay_ms + self.topo.host(w).map_or(0.0, |x| x.link.delay_ms);
                paths_rtt
                    .insert(format!("{}->{}", h.name, w), json!({"configured_ms": configured, "measured_ms": rtt}));
                urls.push(format!("http://{proxy}/live/{channel}/index.m3u8"));
            }
            let log = self.dir.join(format!("{}.jsonl", h.name));
            let child = self.start_watch(h, &urls, channel, &log)?;
            viewers.push(Watching { host: h.clone(), log, child });
        }
        Ok((viewers, paths_rtt))
    }

    fn start_watch(&self, h: &Host, urls: &[String], channel: &str, log: &Path) -> Result<Child> {
        let mut cmd = Command::new(&self.exe);
        let label = h.label.as_deref().unwrap_or(&h.name);
        cmd.args(["watch", "--quiet", "--duration", &self.topo.duration_s.to_string(), "--label", label])
            .arg("--log")
            .arg(log)
            .args(["--viewers", &h.count.to_string()]);
        let tracker = self.tracker.map(|t| format!("http://{t}"));
        match (&tracker, h.steer) {
            (Some(t), true) => {
                cmd.arg("--steer").arg(format!("{t}/play/{channel}?region={}", h.region));
            }
            _ if h.pop => {
                cmd.arg("--pop").arg(urls.join(","));
            }
            _ => {
                cmd.args(urls);
            }
        }
        if let (Some(t), true) = (&tracker, h.p2p) {
            cmd.args(["--p2p", "--tracker", t, "--region", &h.region]);
        }
        if let Some(mode) = &h.mode {
            cmd.args(["--mode", mode]);
        }
        let err = std::fs::File::create(self.dir.join(format!("{}.log", h.name)))?;
        cmd.stdout(Stdio::null()).stderr(err).env("NO_COLOR", "1");
        cmd.spawn().context("starting a viewer")
    }

    /// The topology's events and, with `[chaos]`, the faults drawn from its seed, in time order.
    fn events(&self) -> Vec<Event> {
        let mut events = self.topo.events.clone();
        if let Some(c) = &self.topo.chaos {
            events.extend(chaos::schedule(c, self.topo.duration_s));
        }
        events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        let listed: Vec<String> = events.iter().map(describe).collect();
        if let Err(e) = std::fs::write(self.dir.join("events.txt"), listed.join("\n") + "\n") {
            tracing::warn!(error = %e, "cannot write events.txt");
        }
        events
    }

    /// Play the events from now: each change at its time, each fault undone `for_s` later.
    async fn play_events(&mut self, events: &[Event]) -> Result<()> {
        let started = Instant::now();
        let mut steps: Vec<(f64, &Event, bool)> = events.iter().map(|e| (e.at_s, e, true)).collect();
        steps.extend(events.iter().filter(|e| e.fault.is_some()).map(|e| (e.at_s + e.for_s, e, false)));
        steps.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (at_s, e, begins) in steps {
            let at = started + Duration::from_secs_f64(at_s);
            tokio::time::sleep(at.saturating_duration_since(Instant::now())).await;
            if let (Some(kbps), Some(server)) = (e.egress_kbps, self.servers.get(&e.host)) {
                set_egress(&self.client, server.http, kbps)
                    .await
                    .with_context(|| format!("event at {} s on {}", e.at_s, e.host))?;
                eprintln!("t={:.0}s: {} egress cap {} kbit/s", e.at_s, e.host, kbps);
            }
            if let Some(fault) = e.fault {
                self.fault(fault, e, begins);
                eprintln!("t={at_s:.1}s: {} {}", if begins { "begins" } else { "ends" }, describe(e));
            }
        }
        Ok(())
    }

    /// Begin or end a fault on a host.
    fn fault(&mut self, fault: Fault, e: &Event, begins: bool) {
        let link = &self.links[&e.host];
        match fault {
            // Killing waits for the process and starting one waits for its first lines: off the
            // runtime's workers, so the link proxies on them keep their timing meanwhile.
            Fault::Kill if begins => tokio::task::block_in_place(|| self.procs.kill(&e.host)),
            Fault::Kill => {
                let restarted = tokio::task::block_in_place(|| self.procs.restart(&self.exe, &e.host, self.dir));
                if let Err(err) = restarted {
                    eprintln!("lab: could not restart {}: {err:#}", e.host);
                }
            }
            Fault::Partition => {
                link.egress.set_cut(begins);
                link.ingress.set_cut(begins);
            }
            Fault::Loss => {
                let configured = self.topo.host(&e.host).map_or(0.0, |h| h.link.loss);
                let loss = if begins { e.loss } else { configured };
                link.egress.set_loss(loss);
                link.ingress.set_loss(loss);
            }
        }
    }

    /// Watch every server's playlist (and the tracker) for the viewers' whole run.
    fn watch_servers(&self, channel: &str) -> tokio::task::JoinHandle<chaos::Timeline> {
        let servers: Vec<(String, SocketAddr)> = self.servers.iter().map(|(n, s)| (n.clone(), s.http)).collect();
        let now = tokio::time::Instant::now();
        let until = now + Duration::from_secs_f64(self.topo.duration_s);
        tokio::spawn(chaos::watch(self.client.clone(), servers, self.tracker, channel.to_string(), now, until))
    }

    /// What the faults did: each fault with its repair time, playlists that went backwards,
    /// and per viewer its stalls and lost segments.
    fn chaos_summary(
        &self,
        events: &[Event],
        timeline: chaos::Timeline,
        results: &[(Host, Vec<PathBuf>)],
    ) -> serde_json::Value {
        let tracker = self.topo.tracker().map(|h| h.name.as_str());
        if let Err(e) = serde_json::to_vec(&timeline).map(|t| std::fs::write(self.dir.join("timeline.json"), t)) {
            tracing::warn!(error = %e, "cannot write timeline.json");
        }
        let faults: Vec<_> =
            events.iter().filter(|e| e.fault.is_some()).map(|e| (e, chaos::repair_s(&timeline, e, tracker))).collect();
        // A segment lost while a fault (and its repair) lasted is what that fault emptied.
        let windows: Vec<(f64, f64)> =
            faults.iter().map(|(e, r)| (e.at_s, e.at_s + e.for_s + r.unwrap_or(f64::INFINITY))).collect();
        let logs: Vec<(String, PathBuf)> = results
            .iter()
            .flat_map(|(h, logs)| {
                let label = h.label.clone().unwrap_or_else(|| h.name.clone());
                logs.iter().enumerate().map(move |(i, l)| (format!("{label} #{}", i + 1), l.clone()))
            })
            .collect();
        let viewers = chaos::viewers(&logs, &chaos::listed(&timeline), &windows, 6.0);
        let rows = viewers.as_array().cloned().unwrap_or_default();
        let total = |key: &str| rows.iter().filter_map(|v| v[key].as_u64()).sum::<u64>();
        let repairs: Vec<Option<f64>> = faults.iter().map(|(_, r)| *r).collect();
        json!({
            "faults": faults.iter().map(|(e, r)| json!({
                "at_s": e.at_s, "host": e.host, "fault": describe(e), "for_s": e.for_s, "repair_s": r,
            })).collect::<Vec<_>>(),
            "worst_repair_s": repairs.iter().flatten().copied().fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r)))),
            "unrepaired_faults": repairs.iter().filter(|r| r.is_none()).count(),
            "playlists_backwards": chaos::backwards(&timeline),
            "viewers": viewers,
            "stall_ms_total": total("stall_ms"),
            "segments_lost": total("skipped"),
            "segments_lost_outside_faults": total("skipped_outside_faults"),
            "segments_never_made": total("never_made"),
        })
    }

    /// Wait for every viewer host; returns each with its QoE logs (one per viewer).
    async fn wait_for(&self, viewers: Vec<Watching>) -> Result<Vec<(Host, Vec<PathBuf>)>> {
        let mut results = Vec::new();
        for Watching { host: h, log, mut child } in viewers {
            let status = tokio::task::spawn_blocking(move || child.wait()).await??;
            if !status.success() {
                let err_log = self.dir.join(format!("{}.log", h.name));
                eprintln!("viewer {} exited with {status}; see {}", h.name, err_log.display());
            }
            let logs: Vec<PathBuf> = if h.count == 1 {
                vec![log]
            } else {
                (1..=h.count).map(|i| PathBuf::from(format!("{}.{i}", log.display()))).collect()
            };
            results.push((h, logs));
        }
        Ok(results)
    }

    /// Per viewer host, stalls and per-chunk delay against the path's minimum; origin load;
    /// what each link's shapers did.
    async fn summarize(
        &self,
        origin_http: SocketAddr,
        results: &[(Host, Vec<PathBuf>)],
        paths_rtt: BTreeMap<String, serde_json::Value>,
    ) -> serde_json::Value {
        let origin_metrics = fetch_text(&self.client, origin_http, "/metrics").await.unwrap_or_default();
        let viewer_summaries: Vec<_> = results
            .iter()
            .map(|(h, logs)| {
                let bounds = delivery_bounds(self.topo, h);
                let path_min_ms: Vec<f64> = bounds.iter().map(|b| b.one_way_ms).collect();
                json!({"host": h.name, "viewers": h.count, "watch": h.watch, "path_min_one_way_ms": path_min_ms, "qoe": summarize_logs(logs, &bounds)})
            })
            .collect();
        // Parts each node answered while they were still arriving from its parent.
        let mut cut_through = serde_json::Map::new();
        for (name, server) in &self.servers {
            let text = fetch_text(&self.client, server.http, "/metrics").await.unwrap_or_default();
            cut_through.insert(name.clone(), json!(metric(&text, "relaycast_parts_cut_through_total")));
        }
        let shapers: Vec<_> = self
            .links
            .iter()
            .map(|(name, l)| json!({"host": name, "egress": l.egress.stats(), "ingress": l.ingress.stats()}))
            .collect();
        json!({
            "name": self.topo.name,
            "duration_s": self.topo.duration_s,
            "viewers": viewer_summaries,
            "paths_rtt": paths_rtt,
            "origin": {
                "http_egress_bytes": metric(&origin_metrics, "relaycast_http_egress_bytes_total"),
                "peer_egress_bytes": metric(&origin_metrics, "relaycast_peer_egress_bytes_total"),
            },
            "links": shapers,
            "cut_through_parts": cut_through,
        })
    }

    /// Each viewer host's latency budget (from its first log and every node on its path), also
    /// drawn as `budget.svg`.
    async fn budgets(&self, channel: &str, results: &[(Host, Vec<PathBuf>)]) -> serde_json::Value {
        let mut arrivals: BTreeMap<String, budget::Arrivals> = BTreeMap::new();
        for (name, server) in &self.servers {
            let Ok(text) = fetch_text(&self.client, server.http, "/api/v1/arrivals").await else { continue };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
            let list = v["arrivals"].as_array().cloned().unwrap_or_default();
            let of_channel = list
                .iter()
                .filter(|a| a["channel"] == channel)
                .filter_map(|a| Some((a["seq"].as_u64()?, (a["origin_ms"].as_u64()?, a["stored_ms"].as_u64()?))));
            arrivals.insert(name.clone(), of_channel.collect());
        }
        let mut rows = Vec::new();
        for (h, logs) in results {
            let (Some(server), Some(log)) = (h.watch.first(), logs.first()) else { continue };
            let path: Vec<(String, budget::Arrivals)> = path_from_origin(self.topo, server)
                .into_iter()
                .map(|n| (n.clone(), arrivals.get(&n).cloned().unwrap_or_default()))
                .collect();
            let records: Vec<serde_json::Value> = std::fs::read_to_string(log)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            rows.push((h.label.clone().unwrap_or_else(|| h.name.clone()), budget::budget(&path, &records)));
        }
        if let Err(e) = std::fs::write(self.dir.join("budget.svg"), budget::svg(&rows)) {
            tracing::warn!(error = %e, "cannot write budget.svg");
        }
        json!(rows.into_iter().map(|(path, stages)| json!({"path": path, "stages": stages})).collect::<Vec<_>>())
    }

    /// The report with pictures, from the first log of each viewer host.
    fn report(&self, results: &[(Host, Vec<PathBuf>)]) {
        let logs: Vec<PathBuf> =
            results.iter().filter_map(|(_, logs)| logs.first().cloned()).filter(|p| p.exists()).collect();
        if logs.is_empty() {
            return;
        }
        let report = crate::report::ReportArgs {
            logs,
            out: self.dir.join("report"),
            title: Some(format!("Lab: {}", self.topo.name)),
            ramp: None,
        };
        if let Err(e) = crate::report::run(report) {
            eprintln!("report failed: {e:#}");
        }
    }
}

/// One line for an event: what happens to which host.
fn describe(e: &Event) -> String {
    match (e.fault, e.egress_kbps) {
        (Some(Fault::Kill), _) => format!("kill -9 {} for {} s", e.host, e.for_s),
        (Some(Fault::Partition), _) => format!("partition {} for {} s", e.host, e.for_s),
        (Some(Fault::Loss), _) => format!("{:.0} % loss on {} for {} s", e.loss * 100.0, e.host, e.for_s),
        (None, Some(k)) => format!("egress cap {k} kbit/s on {}", e.host),
        (None, None) => format!("nothing on {}", e.host),
    }
}

fn localhost0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn start_broadcaster(h: &Host, ingest: SocketAddr, dir: &Path) -> Result<Child> {
    // Low latency: one live TS stream, every packet flushed, packaged by the origin (1 s GOP).
    let (output, segment_s) = if h.low_latency {
        let url = format!("http://{ingest}/ingest/{CHANNEL}/{PUSH_KEY}");
        (
            vec![
                "-f".into(),
                "mpegts".into(),
                "-muxdelay".into(),
                "0".into(),
                "-flush_packets".into(),
                "1".into(),
                "-method".into(),
                "PUT".into(),
                url,
            ],
            1.0,
        )
    } else {
        let url = format!("http://{ingest}/ingest/{CHANNEL}/{PUSH_KEY}/src.m3u8");
        let hls = ["-f", "hls", "-hls_time", &h.segment_s.to_string(), "-hls_list_size", "6", "-method", "PUT"];
        (hls.into_iter().map(String::from).chain([url]).collect::<Vec<String>>(), h.segment_s)
    };
    let gop = ((segment_s * 25.0).round() as u32).max(1).to_string();
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
        .args(&output)
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
        // A TS channel lists segments; a low-latency one is offered as a master once packaged.
        if let Ok(body) = fetch_text(&client, http, &format!("/live/{channel}/index.m3u8")).await
            && (body.contains(".ts") || body.contains("#EXT-X-STREAM-INF"))
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

/// The servers from the origin down to `server`, following parents.
fn path_from_origin(topo: &Topology, server: &str) -> Vec<String> {
    let mut path = vec![server.to_string()];
    let mut at = topo.host(server);
    while let Some(parent) = at.and_then(|h| h.parent.as_deref()) {
        path.push(parent.to_string());
        at = topo.host(parent);
    }
    path.reverse();
    path
}

/// The physical bound on each of a viewer's paths (one per server it watches), from the
/// origin down the tree to the server and on to the viewer.
fn delivery_bounds(topo: &Topology, viewer: &Host) -> Vec<PathBound> {
    viewer
        .watch
        .iter()
        .map(|server| {
            let hosts = path_from_origin(topo, server);
            let links: Vec<&Link> =
                hosts.iter().filter_map(|h| topo.host(h)).map(|h| &h.link).chain([&viewer.link]).collect();
            PathBound {
                // Every hop A→B crosses A's link and B's link, each adding half its delay_ms.
                one_way_ms: links.windows(2).map(|w| (w[0].delay_ms + w[1].delay_ms) / 2.0).sum(),
                rate_kbps: links.iter().filter_map(|l| l.rate_kbps).min(),
            }
        })
        .collect()
}

/// The physical bound of a chunk's delay on one viewer's path: the configured one-way delay
/// plus the chunk's size at the path's slowest link (`None`: no link on the way is shaped).
struct PathBound {
    one_way_ms: f64,
    rate_kbps: Option<u64>,
}

impl PathBound {
    fn ms(&self, bytes: f64) -> f64 {
        self.one_way_ms + self.rate_kbps.map_or(0.0, |r| bytes * 8.0 / r as f64)
    }
}

/// Segments of each viewer's start whose parts count as the join, not the steady state: its
/// first parts can be late for reasons of the start alone (a relay subscribing as the viewer
/// arrives and filling its window over the same link, a TS viewer starting behind the edge).
const JOIN_SEGMENTS: usize = 2;

/// Stalls, stall time, duplicate share and per-chunk origin delay over a viewer host's logs;
/// at low latency also the per-part delay, overall and after the join, and each part's delay
/// over its own physical bound (`bounds`: per source index).
fn summarize_logs(logs: &[PathBuf], bounds: &[PathBound]) -> serde_json::Value {
    let mut delays = Vec::new();
    let (mut part_delays, mut steady_part_delays, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut stalls, mut stall_ms, mut bytes, mut dup, mut segments) = (0u64, 0u64, 0u64, 0u64, 0u64);
    // Per source (server) index: the smallest RTT the viewers measured to it.
    let mut rtts: Vec<Option<f64>> = Vec::new();
    for log in logs {
        let Ok(text) = std::fs::read_to_string(log) else { continue };
        let mut joined: Vec<u64> = Vec::new();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            match v["type"].as_str() {
                Some("segment") => {
                    if let Some(d) = v["origin_delay_ms"].as_f64() {
                        delays.push(d);
                    }
                }
                Some("part") => {
                    let (Some(seq), Some(d)) = (v["seq"].as_u64(), v["origin_delay_ms"].as_f64()) else { continue };
                    if joined.len() < JOIN_SEGMENTS && !joined.contains(&seq) {
                        joined.push(seq);
                    }
                    part_delays.push(d);
                    let bound = v["source"].as_u64().and_then(|i| bounds.get(i as usize));
                    if let (Some(bound), Some(bytes)) = (bound, v["bytes"].as_f64()) {
                        ratios.push(d / bound.ms(bytes));
                    }
                    if !joined.contains(&seq) {
                        steady_part_delays.push(d);
                    }
                }
                Some("rtt") => {
                    let (Some(i), Some(ms)) = (v["source"].as_u64(), v["rtt_ms"].as_f64()) else { continue };
                    let i = i as usize;
                    if rtts.len() <= i {
                        rtts.resize(i + 1, None);
                    }
                    rtts[i] = Some(rtts[i].map_or(ms, |m: f64| m.min(ms)));
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
    let pct = |values: &mut Vec<f64>, q: f64| {
        values.sort_by(|a, b| a.total_cmp(b));
        values.get(((values.len() as f64 - 1.0) * q).round() as usize).copied()
    };
    json!({
        "segments": segments, "stalls": stalls, "stall_ms": stall_ms, "bytes": bytes,
        "duplicate_pct": if bytes > 0 { dup as f64 * 100.0 / bytes as f64 } else { 0.0 },
        "delay_ms_p50": pct(&mut delays, 0.5), "delay_ms_p99": pct(&mut delays, 0.99), "min_rtt_ms": rtts,
        "parts": part_delays.len(),
        "part_delay_ms_p50": pct(&mut part_delays, 0.5), "part_delay_ms_p99": pct(&mut part_delays, 0.99),
        "part_delay_ms_p99_after_join": pct(&mut steady_part_delays, 0.99),
        "part_bound_ratio_p50": pct(&mut ratios, 0.5), "part_bound_ratio_p99": pct(&mut ratios, 0.99),
    })
}

/// Sum of a Prometheus metric over its label sets.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// lab/p2p-ll.toml: the CDN viewer is 400 ms one way behind a 2 Mbit/s link, the direct one
    /// 100 ms behind 4 Mbit/s (every hop adds half of each end's delay_ms).
    #[test]
    fn delivery_bounds_follow_the_tree() {
        let topo = Topology::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lab/p2p-ll.toml")).unwrap();
        let bound = |viewer: &str| {
            let b = delivery_bounds(&topo, topo.host(viewer).unwrap());
            (b[0].one_way_ms, b[0].rate_kbps)
        };
        assert_eq!(bound("viewer-cdn"), (400.0, Some(2000)));
        assert_eq!(bound("viewer-direct"), (100.0, Some(4000)));
        // A 20 kB part adds 80 ms at 2 Mbit/s.
        assert_eq!(delivery_bounds(&topo, topo.host("viewer-cdn").unwrap())[0].ms(20_000.0), 480.0);
    }
}
