//! One viewer: the single loop that drives the core's [`Session`] with real I/O.
//!
//! Inputs come from tasks — playlist pollers and segment fetches per server ([`super::http`]),
//! peer links and the tracker when sharing ([`super::p2p`]), server switches
//! ([`super::switch`]) — and from the session's timer. After each input the loop carries out
//! what the session decided: start or cancel fetches, play segments in order (to the output,
//! the QoE log and the status line), ask peers. Steering, POP probing, several servers, client
//! ABR and sharing are all inputs or outputs of this one loop, so they compose.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use relaycast_core::multisource::{Mode, RequestId, SchedulerConfig, SourceId};
use relaycast_core::p2p::swarm::PieceOutcome;
use relaycast_core::viewer::{From, Output, Session};
use reqwest::Url;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::abr::ClientLadder;
use super::http::{self, HttpEvent, SegmentHeaders, min_rtt_ms, resolve_media_playlist};
use super::output::Output as Sink;
use super::p2p::{PeerEvent, PeerNet};
use super::peers::Held;
use super::qoe::QoeLog;
use super::status::Status;
use super::switch::{Attempt, Switcher};
use super::{ModeArg, Summary, WatchArgs};
use crate::common::signing::sha256_hex;
use crate::common::wall_ms;

/// How often the buffer is logged, the status line redrawn and switches looked for.
const TICK: Duration = Duration::from_millis(250);

/// Watch until the duration ends or Ctrl-C; `index` 0 is a lone viewer, 1.. are load viewers.
pub async fn watch_one(args: &WatchArgs, client: reqwest::Client, index: usize) -> Result<Summary> {
    let mut viewer = Viewer::start(args, client, index).await?;
    let ran = viewer.run().await;
    let finished = viewer.finish().await;
    ran.and(finished)?;
    Ok(viewer.summary)
}

/// How long a viewer without `--duration` keeps asking servers that are not ready yet.
const START_PATIENCE: Duration = Duration::from_secs(30);

/// Where a viewer starts: its first server URL(s), the steering follower, the client ABR
/// ladder and the media playlist of each server.
struct Opening {
    initial: Vec<String>,
    follower: Option<super::steering::Follower>,
    ladder: Option<ClientLadder>,
    media: Vec<Url>,
}

async fn open_sources(args: &WatchArgs, client: &reqwest::Client) -> Result<Opening> {
    let (initial, follower) = match (&args.steer, args.pop.is_empty()) {
        (Some(url), _) => {
            let (first, f) = super::steering::steer(client, url).await?;
            (vec![first], Some(f))
        }
        (None, false) => {
            let (first, f) = super::steering::pop(client, &args.pop).await?;
            (vec![first], Some(f))
        }
        (None, true) => (args.sources.clone(), None),
    };
    let ladder = match (args.client_abr, initial.as_slice()) {
        (false, _) => None,
        (true, [one]) => Some(ClientLadder::load(client, &Url::parse(one).context("invalid URL")?).await?),
        (true, _) => bail!("--client-abr works with one server"),
    };
    let mut media = Vec::new();
    for url in &initial {
        media.push(match &ladder {
            Some(l) => l.url().clone(),
            None => resolve_media_playlist(client, url, args.rendition.as_deref()).await?,
        });
    }
    Ok(Opening { initial, follower, ladder, media })
}

/// Run `attempt` until it succeeds, fails for good, or `give_up` comes; transient failures
/// (see [`is_transient`]) are retried with backoff from 250 ms to 2 s.
async fn retrying<T, F, Fut>(give_up: Instant, viewer: usize, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut backoff = Duration::from_millis(250);
    let mut tries = 0u32;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if is_transient(&e) && Instant::now() + backoff < give_up => {
                tries += 1;
                if tries == 1 {
                    tracing::info!(viewer, error = %format!("{e:#}"), "not ready yet; retrying");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) if tries > 0 => return Err(e.context(format!("still failing after {tries} retries"))),
            Err(e) => return Err(e),
        }
    }
}

/// Whether a failure to start may pass by itself — a server not up yet, an edge without a
/// parent, a tracker with no edge for the channel yet: connection errors, timeouts, 5xx, 429,
/// a playlist with no segment yet. A 4xx (no such channel, a refused token) or malformed input
/// is final.
pub fn is_transient(e: &anyhow::Error) -> bool {
    for cause in e.chain() {
        if let Some(r) = cause.downcast_ref::<reqwest::Error>() {
            return match r.status() {
                Some(s) => s.is_server_error() || s.as_u16() == 429,
                None => r.is_connect() || r.is_timeout() || r.is_request() || r.is_body(),
            };
        }
    }
    let text = format!("{e:#}");
    let code = text.split("HTTP ").skip(1).find_map(|rest| rest.get(..3)?.parse::<u16>().ok());
    match code {
        Some(code) => code >= 500 || code == 429,
        None => text.contains("lists no segments yet"),
    }
}

/// One server in use: its media playlist, what it last listed, and its poller.
struct Server {
    uris: BTreeMap<u64, (Url, Duration)>,
    poller: JoinHandle<()>,
}

/// A segment request to a server.
struct InFlight {
    source: SourceId,
    seq: u64,
    task: JoinHandle<()>,
    data: BytesMut,
    /// The whole body, once complete.
    done: Option<Bytes>,
    requested_ms: f64,
    first_byte_ms: Option<f64>,
    meta: SegmentHeaders,
    hedge: bool,
}

/// What woke the loop.
enum Wake {
    Http(HttpEvent),
    Peer(PeerEvent),
    Switch(Attempt),
    Timer,
    Tick,
    Stop,
}

struct Viewer<'a> {
    args: &'a WatchArgs,
    index: usize,
    client: reqwest::Client,
    started: Instant,
    session: Session,
    /// By source id; `None` once switched away from.
    servers: Vec<Option<Server>>,
    flights: BTreeMap<RequestId, InFlight>,
    http_tx: mpsc::UnboundedSender<HttpEvent>,
    http_rx: mpsc::UnboundedReceiver<HttpEvent>,
    peer_rx: Option<mpsc::UnboundedReceiver<PeerEvent>>,
    peers: Option<PeerNet>,
    switch_rx: mpsc::UnboundedReceiver<Attempt>,
    switcher: Switcher,
    ladder: Option<ClientLadder>,
    /// Playlist polls per target duration: more often when sharing, to see segments early.
    polls_per_target: u32,
    log: QoeLog,
    /// Log records made while handling events (written by `perform`): per-part delays.
    pending_log: Vec<serde_json::Value>,
    /// When a playlist first listed each recent segment (ms since start): a latency budget stage.
    listed_at: BTreeMap<u64, f64>,
    sink: Sink,
    status: Status,
    summary: Summary,
    deadline: Option<Instant>,
}

impl<'a> Viewer<'a> {
    async fn start(args: &'a WatchArgs, client: reqwest::Client, index: usize) -> Result<Viewer<'a>> {
        let started = Instant::now();
        // Until the run's end (or half a minute), a server that is not ready yet is asked
        // again, as players do; the wait shows as startup delay, not as a failure.
        let give_up = started + args.duration.map_or(START_PATIENCE, Duration::from_secs_f64);
        let Opening { initial, follower, ladder, media } =
            retrying(give_up, index, || open_sources(args, &client)).await?;
        let sharing = args.p2p.p2p;

        let (http_tx, http_rx) = mpsc::unbounded_channel();
        let (peers, sharing_half, peer_rx) = if sharing {
            let first_uri = retrying(give_up, index, || async {
                let (listing, _) = http::poll_playlist(&client, &media[0]).await?;
                let Some((_, _, first_uri)) = listing.into_iter().next() else {
                    bail!("{} lists no segments yet", media[0])
                };
                Ok(first_uri)
            })
            .await?;
            let first_uri = &first_uri;
            let (tx, rx) = mpsc::unbounded_channel();
            match PeerNet::join(&args.p2p, &client, first_uri, tx).await {
                Ok((net, half)) => (Some(net), Some(half), Some(rx)),
                // A tracker that is full or away must not cost the viewer its stream.
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "P2P unavailable: playing from the servers alone");
                    (None, None, None)
                }
            }
        } else {
            (None, None, None)
        };
        let mode = match args.mode {
            Some(ModeArg::Alternate) => Mode::Alternate,
            Some(ModeArg::Hedge) => Mode::Hedge,
            Some(ModeArg::Adaptive) | None => Mode::Adaptive,
        };
        let mut config =
            SchedulerConfig { mode, startup: Duration::from_secs_f64(args.startup.max(0.0)), ..Default::default() };
        // A low-latency stream lists the segment being made and the next: start with the next
        // (its parts are held by the server until they are made, so each arrives as it is made;
        // starting with the one being made would play up to a segment behind for the whole
        // session, for a start-up at most one segment sooner), and keep the next request queued
        // behind the current answer (no idle round trip).
        let low_latency = http::is_low_latency(&client, &media[0]).await;
        if low_latency {
            config.live_offset = 0;
            config.pipeline = true;
        }
        let session = Session::new(config, media.len(), sharing_half);

        let (switch_tx, switch_rx) = mpsc::unbounded_channel();
        let planned = args.switch_at.map(|s| (started + Duration::from_secs_f64(s), args.switch_to.clone()));
        let switcher = Switcher::new(client.clone(), args.rendition.clone(), follower, planned, switch_tx);
        // Playlists and media of a low-latency stream over HTTP/2 where the server speaks it
        // (steering stays on HTTP/1.1; servers switched to later are Relaycast edges too).
        let client = match low_latency {
            true => http::http2_client(&media[0]).await.unwrap_or(client),
            false => client,
        };
        let log_path = args
            .log
            .as_ref()
            .map(|p| if index == 0 { p.clone() } else { PathBuf::from(format!("{}.{index}", p.display())) });
        let mut viewer = Viewer {
            args,
            index,
            client,
            started,
            session,
            servers: Vec::new(),
            flights: BTreeMap::new(),
            http_tx,
            http_rx,
            peer_rx,
            peers,
            switch_rx,
            switcher,
            ladder,
            polls_per_target: if sharing { 4 } else { 2 },
            log: QoeLog::create(log_path.as_deref()).await?,
            pending_log: Vec::new(),
            listed_at: BTreeMap::new(),
            sink: if index == 0 { Sink::open(args).await? } else { Sink::None },
            status: Status::new(args.quiet || index > 0),
            summary: Summary::default(),
            deadline: args.duration.map(|d| started + Duration::from_secs_f64(d)),
        };
        viewer.log_start(&initial, mode).await?;
        for (i, m) in media.into_iter().enumerate() {
            viewer
                .log
                .write(json!({"type": "rtt", "source": i, "rtt_ms": min_rtt_ms(&viewer.client, &m).await}))
                .await?;
            viewer.add_server(m);
        }
        Ok(viewer)
    }

    async fn log_start(&mut self, initial: &[String], mode: Mode) -> Result<()> {
        let args = self.args;
        let (label, mode) = match &self.peers {
            Some(_) => (args.label.clone().unwrap_or_else(|| "p2p".into()), "p2p".to_string()),
            None => {
                let label = args.label.clone().unwrap_or_else(|| match initial.len() {
                    1 => "single".into(),
                    2 => "dual".into(),
                    n => format!("multi-{n}"),
                });
                (label, format!("{mode:?}").to_lowercase())
            }
        };
        let viewer = self.peers.as_ref().map(|p| p.id);
        self.log
            .write(json!({"type": "start", "unix_ms": wall_ms(), "label": label, "mode": mode, "sources": initial, "viewer": viewer, "region": args.p2p.region}))
            .await
    }

    fn elapsed_ms(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.started).as_secs_f64() * 1000.0
    }

    /// A server taken on mid-stream: the session's new source, its switch record, its poller.
    async fn switch_in(&mut self, now: Instant, url: &str, media: Url) -> Result<SourceId> {
        let id = self.session.add_source(now);
        debug_assert_eq!(id, self.servers.len());
        let t_ms = self.elapsed_ms(now);
        self.log.write(json!({"type": "switch", "t_ms": t_ms, "source": id, "url": url})).await?;
        self.add_server(media);
        Ok(id)
    }

    /// Stop using server `id`: its poller ends and the session moves its requests elsewhere.
    fn drop_server(&mut self, now: Instant, id: SourceId) {
        if let Some(old) = self.servers.get_mut(id).and_then(Option::take) {
            old.poller.abort();
            self.session.remove_source(now, id);
        }
    }

    /// Poll a new server's media playlist; its id is the next source id.
    fn add_server(&mut self, media: Url) {
        let id = self.servers.len();
        let poller = http::spawn_poller(&self.client, id, media, self.polls_per_target, self.http_tx.clone());
        self.servers.push(Some(Server { uris: BTreeMap::new(), poller }));
    }

    async fn run(&mut self) -> Result<()> {
        let mut tick = tokio::time::interval(TICK);
        loop {
            let timer = self.session.poll_timeout(Instant::now());
            let wake = tokio::select! {
                Some(ev) = self.http_rx.recv() => Wake::Http(ev),
                Some(ev) = recv_or_wait(&mut self.peer_rx) => Wake::Peer(ev),
                Some(a) = self.switch_rx.recv() => Wake::Switch(a),
                _ = sleep_or_wait(timer) => Wake::Timer,
                _ = tick.tick() => Wake::Tick,
                _ = crate::common::shutdown_signal(), if self.index <= 1 => Wake::Stop,
            };
            let now = Instant::now();
            match wake {
                Wake::Http(ev) => self.on_http(now, ev),
                Wake::Peer(ev) => {
                    if let Some(p) = &mut self.peers {
                        p.handle(now, ev, &mut self.session);
                    }
                }
                Wake::Switch(a) => self.on_switch(now, a).await?,
                Wake::Timer => self.session.handle_timeout(now),
                Wake::Tick => self.on_tick(now).await?,
                Wake::Stop => return Ok(()),
            }
            self.perform().await?;
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(());
            }
        }
    }

    fn on_http(&mut self, now: Instant, ev: HttpEvent) {
        match ev {
            HttpEvent::Playlist { source, result: Ok((segments, _target)) } => {
                let Some(Some(server)) = self.servers.get_mut(source) else { return };
                server.uris = segments.iter().map(|(seq, d, uri)| (*seq, (uri.clone(), *d))).collect();
                let listed: Vec<(u64, Duration)> = segments.iter().map(|(seq, d, _)| (*seq, *d)).collect();
                let t_ms = self.elapsed_ms(now);
                for (seq, _) in &listed {
                    self.listed_at.entry(*seq).or_insert(t_ms);
                }
                while self.listed_at.len() > 256 {
                    self.listed_at.pop_first();
                }
                self.session.playlist(now, source, &listed);
            }
            HttpEvent::Playlist { source, result: Err(e) } => {
                tracing::warn!(viewer = self.index, source, error = %e, "playlist reload failed");
            }
            HttpEvent::Headers { req, len, meta } => {
                let t_ms = self.elapsed_ms(now);
                let Some(f) = self.flights.get_mut(&req) else { return };
                f.first_byte_ms = Some(t_ms);
                f.meta = meta;
                self.session.first_byte(now, req, len);
            }
            HttpEvent::Chunk { req, bytes } => {
                let Some(f) = self.flights.get_mut(&req) else { return };
                f.data.extend_from_slice(&bytes);
                self.summary.bytes += bytes.len() as u64;
                self.session.progress(now, req, bytes.len() as u64);
            }
            HttpEvent::Part { req, index, len, origin_ms, signature } => {
                let Some(f) = self.flights.get_mut(&req) else { return };
                // The segment's origin time is its last part's: when the origin had all of it.
                f.meta.origin_ms = origin_ms.or(f.meta.origin_ms);
                // The last part carries the origin's signature over the whole segment.
                f.meta.signature = signature.or(f.meta.signature);
                let delay = origin_ms.map(|o| wall_ms().saturating_sub(o));
                self.pending_log.push(
                    json!({"type": "part", "seq": f.seq, "part": index, "bytes": len, "source": f.source, "origin_delay_ms": delay}),
                );
            }
            HttpEvent::Done { req } => self.on_done(now, req),
            HttpEvent::Failed { req, error } => {
                let Some(f) = self.flights.remove(&req) else { return };
                tracing::warn!(viewer = self.index, source = f.source, seq = f.seq, %error, "segment request failed; retrying elsewhere");
                self.summary.duplicate_bytes += f.data.len() as u64;
                self.session.failed(now, req);
            }
        }
    }

    /// A server delivered a whole segment: the session checks it (when sharing) and decides.
    fn on_done(&mut self, now: Instant, req: RequestId) {
        let Some(f) = self.flights.get_mut(&req) else { return };
        let data = std::mem::take(&mut f.data).freeze();
        f.done = Some(data.clone());
        let (seq, signature, origin_ms) = (f.seq, f.meta.signature, f.meta.origin_ms);
        let outcome = self.session.completed(now, req, &data, signature.as_ref());
        if outcome == PieceOutcome::Rejected {
            self.flights.remove(&req);
        } else if let (Some(p), Some(signature)) = (&mut self.peers, signature) {
            p.hold(seq, Held { data, signature, origin_ms: origin_ms.unwrap_or(0) });
        }
    }

    /// New servers answered: use them instead of the old ones.
    async fn on_switch(&mut self, now: Instant, attempt: Attempt) -> Result<()> {
        let resolved = match attempt.result {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(viewer = self.index, error = %e, "cannot switch yet; staying and retrying in 1 s");
                self.switcher.failed(attempt.urls, now);
                return Ok(());
            }
        };
        self.switcher.done();
        for id in 0..self.servers.len() {
            self.drop_server(now, id);
        }
        for r in resolved {
            let id = self.switch_in(now, &r.url, r.media).await?;
            self.log.write(json!({"type": "rtt", "source": id, "rtt_ms": r.rtt_ms})).await?;
        }
        Ok(())
    }

    async fn on_tick(&mut self, now: Instant) -> Result<()> {
        // Bring the buffer model to now (it is otherwise advanced only by the session's own
        // timers and arrivals), so the log and the status line show the level as it is.
        self.session.handle_timeout(now);
        let level = self.session.buffer().level().as_millis() as u64;
        let t_ms = self.elapsed_ms(now);
        self.log.write(json!({"type": "buffer", "t_ms": t_ms, "level_ms": level})).await?;
        self.status.update(&self.session, &self.summary);
        self.switcher.poll(now);
        if let Some(p) = &self.peers {
            p.refresh_measured(&self.session);
        }
        Ok(())
    }

    /// Carry out everything the session decided.
    async fn perform(&mut self) -> Result<()> {
        for record in std::mem::take(&mut self.pending_log) {
            self.log.write(record).await?;
        }
        while let Some(out) = self.session.poll_output() {
            match out {
                Output::Fetch { req, source, seq } => self.fetch(req, source, seq),
                Output::Cancel { req } => {
                    let Some(f) = self.flights.remove(&req) else { continue };
                    f.task.abort();
                    let bytes = f.done.as_ref().map_or(f.data.len(), Bytes::len);
                    self.summary.duplicate_bytes += bytes as u64;
                    self.log
                        .write(json!({"type": "duplicate", "seq": f.seq, "source": f.source, "bytes": bytes}))
                        .await?;
                }
                Output::Play { seq, from } => self.play(seq, from).await?,
                Output::Skip { seq } => {
                    self.summary.skipped += 1;
                    tracing::warn!(viewer = self.index, seq, "segment expired before it could be fetched; skipping");
                    let t_ms = self.elapsed_ms(Instant::now());
                    self.log.write(json!({"type": "skip", "seq": seq, "t_ms": t_ms})).await?;
                }
                Output::BadPiece { seq, from: From::Peer(peer) } => {
                    let t_ms = self.elapsed_ms(Instant::now());
                    self.log.write(json!({"type": "bad_peer", "t_ms": t_ms, "peer": peer, "seq": seq})).await?;
                }
                Output::BadPiece { seq, from: From::Server { source, .. } } => {
                    tracing::error!(
                        viewer = self.index,
                        seq,
                        source,
                        "server bytes fail the origin's signature; not played, fetched again"
                    );
                }
                peer_output => {
                    if let Some(p) = &mut self.peers {
                        p.perform(peer_output, &mut self.session);
                    }
                }
            }
        }
        Ok(())
    }

    fn fetch(&mut self, req: RequestId, source: SourceId, seq: u64) {
        let uri = self.servers.get(source).and_then(Option::as_ref).and_then(|s| s.uris.get(&seq));
        let Some((uri, _)) = uri.cloned() else {
            return self.session.failed(Instant::now(), req);
        };
        let hedge = self.flights.values().any(|f| f.seq == seq);
        let task = http::spawn_fetch(&self.client, req, uri, self.http_tx.clone());
        let requested_ms = self.elapsed_ms(Instant::now());
        let flight = InFlight {
            source,
            seq,
            task,
            data: BytesMut::new(),
            done: None,
            requested_ms,
            first_byte_ms: None,
            meta: SegmentHeaders::default(),
            hedge,
        };
        self.flights.insert(req, flight);
    }

    /// Play segment `seq`: the output, the QoE log, client ABR.
    async fn play(&mut self, seq: u64, from: From) -> Result<()> {
        let now = Instant::now();
        let done_ms = self.elapsed_ms(now);
        let (data, origin_ms, mut record) = match from {
            From::Server { req, source } => {
                let Some(f) = self.flights.remove(&req) else { return Ok(()) };
                let data = f.done.unwrap_or_default();
                let busy_ms = done_ms - f.first_byte_ms.unwrap_or(f.requested_ms);
                self.after_server_segment(now, source, data.len() as u64, busy_ms).await?;
                let record = json!({
                    "source": source, "from": "edge", "request_ms": f.requested_ms, "first_byte_ms": f.first_byte_ms,
                    "hedge": f.hedge, "rendition": f.meta.rendition,
                });
                (data, f.meta.origin_ms, record)
            }
            From::Peer(peer) => {
                let Some((held, rendition, asked)) = self.peers.as_mut().and_then(|p| p.take_for_playing(seq)) else {
                    return Ok(());
                };
                let request_ms = asked.map(|t| self.elapsed_ms(t));
                let record = json!({
                    "source": null, "from": "peer", "peer": peer, "request_ms": request_ms, "first_byte_ms": null,
                    "hedge": false, "rendition": rendition.as_str(),
                });
                (held.data, Some(held.origin_ms), record)
            }
        };
        let duration_ms =
            self.servers.iter().flatten().find_map(|s| s.uris.get(&seq)).map_or(0, |(_, d)| d.as_millis());
        let common = json!({
            "type": "segment", "seq": seq, "done_ms": done_ms, "bytes": data.len(), "duration_ms": duration_ms,
            "listed_ms": self.listed_at.get(&seq),
            "origin_delay_ms": origin_ms.map(|o| wall_ms().saturating_sub(o)),
            "bitrate_bps": (duration_ms > 0).then(|| data.len() as f64 * 8000.0 / duration_ms as f64),
        });
        if let (Some(fields), Value::Object(common)) = (record.as_object_mut(), common) {
            fields.extend(common);
            if self.peers.is_some() {
                fields.insert("sha256".into(), sha256_hex(&data).into());
            }
        }
        self.log.write(record).await?;
        self.summary.segments += 1;
        self.sink.write(data).await
    }

    /// Per-server bookkeeping after it delivered a played segment: its throughput, and client
    /// ABR's next rendition.
    async fn after_server_segment(&mut self, now: Instant, source: SourceId, bytes: u64, busy_ms: f64) -> Result<()> {
        let busy = Duration::from_secs_f64((busy_ms / 1000.0).max(0.001));
        let t_ms = self.elapsed_ms(now);
        if let Some(url) = self.ladder.as_mut().and_then(|l| l.delivered(bytes, busy)) {
            self.log.write(json!({"type": "abr_switch", "t_ms": t_ms, "url": url.as_str()})).await?;
            if self.peers.is_none() {
                if let Some(Some(server)) = self.servers.get_mut(source) {
                    server.poller.abort();
                    let tx = self.http_tx.clone();
                    server.poller = http::spawn_poller(&self.client, source, url, self.polls_per_target, tx);
                }
            } else {
                // Sharing: what is in flight from the old rendition would fail the new swarm's
                // signatures, so the server is replaced as in a switch, and the viewer moves swarm.
                let (_, rendition) = http::names_from_url(&url)?;
                self.drop_server(now, source);
                if let Some(peers) = &mut self.peers {
                    peers.move_to(now, rendition, &mut self.session);
                }
                self.switch_in(now, url.as_str(), url.clone()).await?;
            }
        }
        let bps = bytes as f64 * 8.0 / busy.as_secs_f64();
        self.log.write(json!({"type": "throughput", "t_ms": t_ms, "source": source, "bps": bps})).await
    }

    /// Stop every task and write the session's last records.
    async fn finish(&mut self) -> Result<()> {
        for s in self.servers.iter().flatten() {
            s.poller.abort();
        }
        for f in self.flights.values() {
            f.task.abort();
        }
        if let Some(p) = &mut self.peers {
            p.close();
        }
        let now = Instant::now();
        self.session.finish(now);
        let stalls: Vec<_> = self.session.buffer().stalls().to_vec();
        for stall in &stalls {
            let start_ms = self.elapsed_ms(stall.start);
            self.log
                .write(json!({"type": "stall", "start_ms": start_ms, "duration_ms": stall.duration.as_millis()}))
                .await?;
        }
        self.summary.stalls = stalls.len();
        self.summary.stall_time = self.session.buffer().stall_time();
        if let Some(p) = &self.peers {
            self.log.write(p.record(&self.session)).await?;
        }
        let s = &self.summary;
        let end = json!({
            "type": "end", "t_ms": self.elapsed_ms(now), "segments": s.segments, "stalls": s.stalls,
            "stall_ms": s.stall_time.as_millis(), "bytes": s.bytes, "duplicate_bytes": s.duplicate_bytes,
            "skipped": s.skipped,
        });
        self.log.write(end).await?;
        self.log.flush().await?;
        std::mem::replace(&mut self.sink, Sink::None).close().await?;
        self.status.finish();
        if let (Some(swarm), true) = (self.session.swarm(), self.index <= 1) {
            let st = swarm.stats();
            let total = (st.edge_bytes + st.peer_bytes).max(1);
            eprintln!(
                "p2p: {:.1} % of bytes from peers, uploaded {} bytes, {} bad pieces",
                st.peer_bytes as f64 * 100.0 / total as f64,
                st.uploaded_bytes,
                st.bad_pieces
            );
        }
        Ok(())
    }
}

async fn recv_or_wait<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_or_wait(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
