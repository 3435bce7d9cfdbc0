//! Link emulation in user space: per-host delay, rate and loss for every connection in the lab.
//!
//! This kernel has no `netem` qdisc, so every connection between two lab hosts (all on
//! 127.0.0.1) runs through a proxy of this module that applies the links it crosses. The lab is a
//! star: each host has one link to a switch, modelled as two [`Shaper`]s (host → switch and
//! switch → host). A byte from host A to host B crosses A's outgoing shaper, then B's incoming
//! one; a [`Path`] lists those hops in order. A shaper is shared by every flow that crosses it —
//! one FIFO queue per direction, like an interface.
//!
//! The model of one shaper: a chunk (TCP) or datagram (UDP) of `n` bytes admitted at `t` leaves
//! the queue at `start = max(t, busy_until)`, sets `busy_until = start + n·8/rate`, and arrives at
//! `busy_until + delay`; without a rate it arrives at `t + delay`. The arrival time at hop `i` is
//! the admission time at hop `i + 1`, and each hop is entered when the data really gets there, so
//! flows that share a later hop queue in the order they reach it.
//!
//! - Loss applies to datagrams only: a datagram is dropped with probability `loss` at each hop
//!   (seeded ChaCha8), or when the hop's queue is full (tail drop). TCP is never dropped — the
//!   real TCP underneath would retransmit on loopback anyway — and a full queue holds the bytes
//!   back instead, up to [`FLOW_BUFFER`] per connection and direction; then the proxy stops
//!   reading, so the sender feels back-pressure.
//! - A queue holds at most [`QUEUE_TIME`] of serialisation (at least [`MIN_QUEUE`]).
//! - A shaper can be cut (a partition, [`Shaper::set_cut`]): datagrams are dropped and stream
//!   bytes wait, as TCP's would, until it is mended. Its loss can change while it runs.
//! - TCP is split at the proxy: each side sees a loopback connection, so slow start and
//!   congestion control over the emulated link are not reproduced; bytes are forwarded in
//!   chunks of at most 16 KiB and 4 ms of the slowest hop's serialisation.
//! - Timers have ~1 ms granularity and never fire early: expect 0–2 ms above the configured
//!   delay per direction.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use futures_util::future::join_all;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::{Instant, sleep_until};

/// Largest TCP chunk scheduled as one unit.
pub const MAX_CHUNK: usize = 16 * 1024;
/// Bytes a proxy holds per connection (or UDP client) and direction before it stops reading
/// (TCP) or drops (UDP).
pub const FLOW_BUFFER: usize = 4 * 1024 * 1024;
/// A shaper's queue holds what its rate serialises in this time...
pub const QUEUE_TIME: Duration = Duration::from_millis(100);
/// ...but at least this many bytes.
pub const MIN_QUEUE: usize = 64 * 1024;

/// One direction of one host's link: FIFO serialisation at `rate` plus a fixed one-way `delay`
/// and random `loss` (datagrams only), shared by every flow crossing it.
pub struct Shaper {
    name: String,
    delay: Duration,
    rate_bps: Option<u64>,
    queue_limit: usize,
    state: Mutex<State>,
    /// A partition: nothing crosses while set.
    cut: AtomicBool,
    /// Wakes the stream flows held by a cut when it is mended.
    mended: Notify,
    /// Stream flows waiting for room take turns here (tokio's mutex is FIFO), so flows sharing a
    /// full queue get equal shares.
    turn: tokio::sync::Mutex<()>,
}

struct State {
    /// The latest admission time seen: admissions never go back in time.
    clock: Option<Instant>,
    /// When the last admitted byte has been serialised.
    busy_until: Option<Instant>,
    /// Datagram loss probability, in [0, 1].
    loss: f64,
    rng: ChaCha8Rng,
    stats: ShaperStats,
}

/// What a shaper has carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ShaperStats {
    /// Bytes admitted (and delivered, unless the proxy stopped first).
    pub bytes: u64,
    /// Chunks and datagrams admitted.
    pub packets: u64,
    /// Datagrams dropped at random (`loss`).
    pub dropped: u64,
    /// Datagrams dropped because the queue was full.
    pub overflowed: u64,
    /// Datagrams dropped while the link was cut.
    pub cut: u64,
    /// The longest wait in the queue (not counting the delay).
    #[serde(rename = "max_queue_delay_ms", serialize_with = "millis")]
    pub max_queue_delay: Duration,
}

impl Shaper {
    /// `rate_bps` of `None` (or 0) means unlimited; `loss` is clamped to [0, 1]; `seed` seeds the
    /// loss draws, so one seed gives one loss pattern.
    pub fn new(name: &str, delay: Duration, rate_bps: Option<u64>, loss: f64, seed: u64) -> Arc<Self> {
        let rate_bps = rate_bps.filter(|&r| r > 0);
        let queue_limit = rate_bps.map_or(MIN_QUEUE, |r| {
            let in_queue_time = u128::from(r) * QUEUE_TIME.as_nanos() / 8 / 1_000_000_000;
            usize::try_from(in_queue_time).unwrap_or(usize::MAX).max(MIN_QUEUE)
        });
        Arc::new(Shaper {
            name: name.to_owned(),
            delay,
            rate_bps,
            queue_limit,
            state: Mutex::new(State {
                clock: None,
                busy_until: None,
                loss: clamp_loss(loss),
                rng: ChaCha8Rng::seed_from_u64(seed),
                stats: ShaperStats::default(),
            }),
            cut: AtomicBool::new(false),
            mended: Notify::new(),
            turn: tokio::sync::Mutex::new(()),
        })
    }

    /// Cut the link (a partition) or mend it.
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if !cut {
            self.mended.notify_waiters();
        }
    }

    /// Change the datagram loss probability from now on (clamped to [0, 1]).
    pub fn set_loss(&self, loss: f64) {
        self.lock().loss = clamp_loss(loss);
    }

    /// The datagram loss probability now.
    pub fn loss(&self) -> f64 {
        self.lock().loss
    }

    /// When `bytes` entering now leave this hop (queueing + serialisation + delay), or None if lost.
    ///
    /// `lossy` (datagrams) applies the random loss and drops when the queue is full; otherwise
    /// the bytes are always admitted, even past the queue limit.
    pub fn admit(&self, now: Instant, bytes: usize, lossy: bool) -> Option<Instant> {
        let mut s = self.lock();
        let now = s.clock.map_or(now, |c| c.max(now));
        s.clock = Some(now);
        if lossy {
            // One draw per datagram, lost or not, so the pattern depends only on the seed.
            let roll: f64 = s.rng.random();
            if self.cut.load(Ordering::SeqCst) {
                s.stats.cut += 1;
                return None;
            }
            if roll < s.loss {
                s.stats.dropped += 1;
                return None;
            }
            if self.room_at_locked(&s, now, bytes, self.queue_limit).is_some() {
                s.stats.overflowed += 1;
                return None;
            }
        }
        let start = s.busy_until.map_or(now, |b| b.max(now));
        let departs = start + self.serialisation(bytes);
        if self.rate_bps.is_some() {
            s.busy_until = Some(departs);
        }
        s.stats.bytes += bytes as u64;
        s.stats.packets += 1;
        s.stats.max_queue_delay = s.stats.max_queue_delay.max(start - now);
        Some(departs + self.delay)
    }

    pub fn stats(&self) -> ShaperStats {
        self.lock().stats
    }

    /// Admit a stream chunk once the queue has room for it, waiting (in turn with the other
    /// stream flows) if it is full. Returns the arrival time at the next hop.
    async fn admit_stream(&self, mut at: Instant, bytes: usize) -> Option<Instant> {
        let _turn = self.turn.lock().await;
        loop {
            let mended = self.mended.notified();
            if !self.cut.load(Ordering::SeqCst) {
                break;
            }
            mended.await;
            at = at.max(Instant::now());
        }
        loop {
            let room = {
                let s = self.lock();
                // Streams may fill only a quarter of the queue: the proxy's TCP never backs off on loss,
                // so without that headroom it would keep the queue full and every datagram
                // (QUIC) sharing the link would be tail-dropped.
                self.room_at_locked(&s, at, bytes, self.queue_limit / 4)
            };
            let Some(room) = room else { break };
            sleep_until(room).await;
            at = at.max(room);
        }
        self.admit(at, bytes, false)
    }

    /// None if `bytes` fit in a queue of `limit` bytes at `now`, else when they will.
    fn room_at_locked(&self, s: &State, now: Instant, bytes: usize, limit: usize) -> Option<Instant> {
        self.rate_bps?;
        let busy = s.busy_until?;
        let now = s.clock.map_or(now, |c| c.max(now));
        let allowed = self.serialisation(limit.saturating_sub(bytes));
        (busy.saturating_duration_since(now) > allowed).then(|| busy - allowed)
    }

    fn serialisation(&self, bytes: usize) -> Duration {
        let Some(rate) = self.rate_bps else { return Duration::ZERO };
        let nanos = bytes as u128 * 8 * 1_000_000_000 / u128::from(rate);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain numbers, consistent after every statement: a panic elsewhere while
        // holding the lock cannot leave it half-updated in a way that matters.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Shaper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shaper")
            .field("name", &self.name)
            .field("delay", &self.delay)
            .field("rate_bps", &self.rate_bps)
            .field("loss", &self.loss())
            .field("cut", &self.cut.load(Ordering::SeqCst))
            .field("queue_limit", &self.queue_limit)
            .finish()
    }
}

fn clamp_loss(loss: f64) -> f64 {
    if loss.is_nan() { 0.0 } else { loss.clamp(0.0, 1.0) }
}

/// The hops a byte crosses in one direction, in order.
#[derive(Clone, Debug, Default)]
pub struct Path(pub Vec<Arc<Shaper>>);

impl Path {
    /// Chunk size for streams: at most 16 KiB and 4 ms of the slowest hop (at least one
    /// 1460-byte segment), so a slow link delivers in small steps rather than 16 KiB bursts.
    fn chunk_size(&self) -> usize {
        let slowest = self.0.iter().filter_map(|s| s.rate_bps).min();
        slowest.map_or(MAX_CHUNK, |r| usize::try_from(r / 2000).unwrap_or(MAX_CHUNK).clamp(1460, MAX_CHUNK))
    }
}

/// A running proxy. It stops, with all its connections, when dropped.
#[derive(Debug)]
pub struct ProxyHandle(JoinHandle<()>);

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Future for ProxyHandle {
    type Output = Result<(), JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// Proxy TCP: accept on `listen`, connect each client to `target`; client→target bytes cross
/// `up`, target→client bytes cross `down`. Returns the bound address (listen may use port 0)
/// and a handle that stops it when dropped or aborted.
///
/// When one side closes its sending half, the other side's is closed once the bytes queued
/// before it have been delivered; an error on either side ends the connection.
pub async fn tcp_proxy(
    listen: SocketAddr,
    target: SocketAddr,
    up: Path,
    down: Path,
) -> Result<(SocketAddr, ProxyHandle)> {
    let listener = TcpListener::bind(listen).await.with_context(|| format!("link proxy: binding tcp {listen}"))?;
    let addr = listener.local_addr().context("link proxy: reading the bound address")?;
    Ok((addr, ProxyHandle(tokio::spawn(tcp_accept(listener, addr, target, up, down)))))
}

/// Proxy UDP (QUIC between nodes): datagrams from each client address to `target` cross `up`,
/// replies cross `down`; one upstream socket per client address so replies find their way.
/// Client addresses are remembered for the proxy's lifetime.
pub async fn udp_proxy(
    listen: SocketAddr,
    target: SocketAddr,
    up: Path,
    down: Path,
) -> Result<(SocketAddr, ProxyHandle)> {
    let socket = UdpSocket::bind(listen).await.with_context(|| format!("link proxy: binding udp {listen}"))?;
    let addr = socket.local_addr().context("link proxy: reading the bound address")?;
    Ok((addr, ProxyHandle(tokio::spawn(udp_run(Arc::new(socket), addr, target, up, down)))))
}

/// Data on its way through a path: due at the next hop (or the far end) at `at`, holding its
/// share of the flow's buffer until delivered or dropped.
struct Parcel {
    at: Instant,
    data: Bytes,
    _budget: OwnedSemaphorePermit,
}

#[derive(Clone, Copy)]
enum Mode {
    /// TCP: never dropped; waits for room in a full queue.
    Stream,
    /// UDP: random loss and tail drop.
    Datagram,
}

/// The hops of `path` as futures, fed by the returned sender, ending in the returned receiver:
/// each parcel enters hop `i` when it arrives there and comes out due at its arrival time.
fn conveyor(
    path: &Path,
    mode: Mode,
) -> (UnboundedSender<Parcel>, Vec<impl Future<Output = ()> + use<>>, UnboundedReceiver<Parcel>) {
    let (input, mut rx) = unbounded_channel();
    let mut hops = Vec::new();
    for shaper in &path.0 {
        let (tx, next) = unbounded_channel();
        hops.push(hop(shaper.clone(), mode, rx, tx));
        rx = next;
    }
    (input, hops, rx)
}

async fn hop(shaper: Arc<Shaper>, mode: Mode, mut rx: UnboundedReceiver<Parcel>, tx: UnboundedSender<Parcel>) {
    while let Some(mut p) = rx.recv().await {
        sleep_until(p.at).await;
        let arrives = match mode {
            Mode::Stream => shaper.admit_stream(p.at, p.data.len()).await,
            Mode::Datagram => shaper.admit(p.at, p.data.len(), true),
        };
        let Some(arrives) = arrives else { continue };
        p.at = arrives;
        if tx.send(p).is_err() {
            return; // the far end is gone
        }
    }
}

async fn tcp_accept(listener: TcpListener, addr: SocketAddr, target: SocketAddr, up: Path, down: Path) {
    // Connections live in the set, so stopping the proxy stops them too.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    let (up, down) = (up.clone(), down.clone());
                    conns.spawn(async move {
                        if let Err(e) = tcp_connection(client, target, up, down).await {
                            log_error(&e.context(format!("link proxy {addr}: connection {peer} → {target}")));
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("link proxy {addr}: accepting: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await; // e.g. out of file descriptors
                }
            },
            Some(done) = conns.join_next(), if !conns.is_empty() => {
                if let Err(e) = done {
                    tracing::warn!("link proxy {addr}: connection task failed: {e}");
                }
            }
        }
    }
}

async fn tcp_connection(client: TcpStream, target: SocketAddr, up: Path, down: Path) -> Result<()> {
    let server = TcpStream::connect(target).await.context("connecting to the target")?;
    for s in [&client, &server] {
        s.set_nodelay(true).context("setting TCP_NODELAY")?;
    }
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::try_join!(
        async { convey_stream(client_read, server_write, &up).await.context("client → target") },
        async { convey_stream(server_read, client_write, &down).await.context("target → client") },
    )?;
    Ok(())
}

/// Read from `reader`, carry through `path`, write each chunk at its arrival time; shut
/// `writer` down after the last byte once `reader` ends.
async fn convey_stream(
    mut reader: impl AsyncRead + Unpin,
    mut writer: impl AsyncWrite + Unpin,
    path: &Path,
) -> io::Result<()> {
    let (input, hops, mut output) = conveyor(path, Mode::Stream);
    let budget = Arc::new(Semaphore::new(FLOW_BUFFER));
    let chunk = path.chunk_size();
    let read = async move {
        let mut buf = vec![0; chunk];
        loop {
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                return Ok(()); // dropping `input` lets the hops drain, then closes the writer
            }
            let at = Instant::now();
            // n ≤ MAX_CHUNK, far below u32::MAX; the semaphore is never closed.
            let Ok(permit) = budget.clone().acquire_many_owned(n as u32).await else { return Ok(()) };
            if input.send(Parcel { at, data: Bytes::copy_from_slice(&buf[..n]), _budget: permit }).is_err() {
                return Ok(());
            }
        }
    };
    let write = async move {
        while let Some(p) = output.recv().await {
            sleep_until(p.at).await;
            writer.write_all(&p.data).await?;
        }
        writer.shutdown().await
    };
    let hops = async move {
        join_all(hops).await;
        Ok(())
    };
    tokio::try_join!(read, hops, write)?;
    Ok(())
}

struct UdpFlow {
    input: UnboundedSender<Parcel>,
    budget: Arc<Semaphore>,
}

async fn udp_run(socket: Arc<UdpSocket>, addr: SocketAddr, target: SocketAddr, up: Path, down: Path) {
    let mut flows: HashMap<SocketAddr, UdpFlow> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut buf = vec![0; 65_536];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("link proxy {addr}: receiving: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let at = Instant::now();
        let flow = match flows.entry(from) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => match udp_flow(socket.clone(), from, target, &up, &down).await {
                Ok((flow, task)) => {
                    tasks.spawn(task);
                    e.insert(flow)
                }
                Err(e) => {
                    tracing::warn!("link proxy {addr}: client {from} → {target}: {e:#}");
                    continue;
                }
            },
        };
        // n < 65 536; the semaphore is never closed.
        let Ok(permit) = flow.budget.clone().try_acquire_many_owned(n as u32) else {
            tracing::debug!("link proxy {addr}: client {from}: buffer full, datagram dropped");
            continue;
        };
        if flow.input.send(Parcel { at, data: Bytes::copy_from_slice(&buf[..n]), _budget: permit }).is_err() {
            flows.remove(&from); // its task failed (and logged why); start afresh next time
        }
    }
}

/// A new client: an upstream socket connected to `target`, and the task that carries its
/// datagrams both ways.
async fn udp_flow(
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    target: SocketAddr,
    up: &Path,
    down: &Path,
) -> Result<(UdpFlow, impl Future<Output = ()> + Send + use<>)> {
    let any = if target.is_ipv4() { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
    let upstream = Arc::new(UdpSocket::bind(SocketAddr::new(any, 0)).await.context("binding an upstream socket")?);
    upstream.connect(target).await.context("connecting the upstream socket")?;
    let (up_input, up_hops, mut up_output) = conveyor(up, Mode::Datagram);
    let (down_input, down_hops, mut down_output) = conveyor(down, Mode::Datagram);
    let budget = Arc::new(Semaphore::new(FLOW_BUFFER));
    let down_budget = Arc::new(Semaphore::new(FLOW_BUFFER));

    let sender = upstream.clone();
    let send_up = async move {
        while let Some(p) = up_output.recv().await {
            sleep_until(p.at).await;
            if let Err(e) = sender.send(&p.data).await {
                tracing::debug!("link proxy: client {client} → {target}: {e}"); // e.g. target not up yet
            }
        }
    };
    let receive_down = async move {
        let mut buf = vec![0; 65_536];
        loop {
            let n = match upstream.recv(&mut buf).await {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue, // ICMP from an earlier send
                Err(e) => {
                    tracing::warn!("link proxy: {target} → client {client}: receiving: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let at = Instant::now();
            let Ok(permit) = down_budget.clone().try_acquire_many_owned(n as u32) else { continue };
            if down_input.send(Parcel { at, data: Bytes::copy_from_slice(&buf[..n]), _budget: permit }).is_err() {
                return;
            }
        }
    };
    let send_down = async move {
        while let Some(p) = down_output.recv().await {
            sleep_until(p.at).await;
            if let Err(e) = socket.send_to(&p.data, client).await {
                tracing::debug!("link proxy: {target} → client {client}: {e}");
            }
        }
    };
    let task = async move {
        tokio::join!(send_up, join_all(up_hops), receive_down, join_all(down_hops), send_down);
    };
    Ok((UdpFlow { input: up_input, budget }, task))
}

/// Peers going away is routine in the lab (processes are killed); anything else is a warning.
fn log_error(e: &anyhow::Error) {
    let routine = e.chain().filter_map(|c| c.downcast_ref::<io::Error>()).any(|e| {
        matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::UnexpectedEof
        )
    });
    if routine {
        tracing::debug!("{e:#}");
    } else {
        tracing::warn!("{e:#}");
    }
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    //! Real sockets on 127.0.0.1 and real time: the emulated links measure as configured.

    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn lo() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    fn delay_only(name: &str, delay: Duration) -> Arc<Shaper> {
        Shaper::new(name, delay, None, 0.0, 1)
    }

    fn median(mut v: Vec<Duration>) -> Duration {
        v.sort();
        v[v.len() / 2]
    }

    /// Every sample is at least the configured RTT (timers never fire early) and the median is
    /// within 10 ms of it.
    fn assert_rtt(what: &str, samples: Vec<Duration>, expected: Duration) {
        let (min, med) = (*samples.iter().min().unwrap(), median(samples.clone()));
        println!("{what}: RTT min {min:?}, median {med:?} (configured {expected:?})");
        assert!(min >= expected - ms(1), "{what}: RTT {min:?} below the configured {expected:?}: {samples:?}");
        assert!(med <= expected + ms(10), "{what}: median RTT {med:?} above {expected:?} + 10 ms: {samples:?}");
    }

    async fn tcp_echo() -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind(lo()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                s.set_nodelay(true).unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        (addr, task)
    }

    async fn tcp_rtts(proxy: SocketAddr, n: usize) -> Vec<Duration> {
        let mut s = TcpStream::connect(proxy).await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut out = Vec::new();
        let mut back = [0; 64];
        for i in 0..n {
            let t = Instant::now();
            s.write_all(&[i as u8; 64]).await.unwrap();
            s.read_exact(&mut back).await.unwrap();
            out.push(t.elapsed());
            assert_eq!(back, [i as u8; 64]);
        }
        out
    }

    async fn udp_echo() -> (SocketAddr, JoinHandle<()>) {
        let socket = UdpSocket::bind(lo()).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = [0; 2048];
            while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(&buf[..n], from).await;
            }
        });
        (addr, task)
    }

    async fn udp_rtts(proxy: SocketAddr, n: usize) -> Vec<Duration> {
        let s = UdpSocket::bind(lo()).await.unwrap();
        s.connect(proxy).await.unwrap();
        let mut out = Vec::new();
        let mut back = [0; 64];
        for i in 0..n {
            let t = Instant::now();
            s.send(&[i as u8; 32]).await.unwrap();
            let got = tokio::time::timeout(ms(1000), s.recv(&mut back)).await.expect("echo lost").unwrap();
            out.push(t.elapsed());
            assert_eq!(&back[..got], &[i as u8; 32]);
        }
        out
    }

    #[test]
    fn admit_follows_the_model() {
        let t0 = Instant::now();
        // 8 Mbit/s: 1000 bytes take 1 ms.
        let s = Shaper::new("s", ms(10), Some(8_000_000), 0.0, 1);
        assert_eq!(s.admit(t0, 1000, false), Some(t0 + ms(11)));
        assert_eq!(s.admit(t0, 1000, false), Some(t0 + ms(12)), "queued behind the first");
        assert_eq!(s.admit(t0 + ms(5), 1000, false), Some(t0 + ms(16)), "idle link: no queueing");
        let st = s.stats();
        assert_eq!((st.bytes, st.packets, st.max_queue_delay), (3000, 3, ms(1)));
        // A path: the arrival at hop 1 is the admission at hop 2.
        let path = [Shaper::new("a", ms(25), None, 0.0, 1), Shaper::new("b", ms(25), Some(8_000_000), 0.0, 1)];
        let arrival = path.iter().try_fold(t0, |t, hop| hop.admit(t, 1000, false));
        assert_eq!(arrival, Some(t0 + ms(51)));
    }

    #[test]
    fn full_queues_drop_datagrams_but_not_streams() {
        let t0 = Instant::now();
        let s = Shaper::new("s", ms(0), Some(8_000_000), 0.0, 1); // queue: 100 ms = 100 000 bytes
        let admitted = (0..200).filter(|_| s.admit(t0, 1000, true).is_some()).count();
        assert_eq!(admitted, 100);
        assert_eq!(s.stats().overflowed, 100);
        assert!(s.admit(t0, 1000, false).is_some(), "streams are never dropped");
    }

    #[test]
    fn a_cut_drops_datagrams_and_loss_can_change() {
        let t0 = Instant::now();
        let s = Shaper::new("s", ms(0), None, 0.0, 1);
        s.set_cut(true);
        assert!(s.admit(t0, 100, true).is_none());
        assert_eq!(s.stats().cut, 1);
        s.set_cut(false);
        assert!(s.admit(t0, 100, true).is_some());
        s.set_loss(1.0);
        assert!(s.admit(t0, 100, true).is_none(), "loss 1 drops every datagram");
        s.set_loss(0.0);
        assert!(s.admit(t0, 100, true).is_some());
    }

    #[tokio::test]
    async fn a_cut_holds_stream_bytes_until_mended() {
        let (sink, mut done) = tcp_sink().await;
        let link = Shaper::new("cut", ms(0), None, 0.0, 1);
        let (proxy, _p) = tcp_proxy(lo(), sink, Path(vec![link.clone()]), Path::default()).await.unwrap();
        link.set_cut(true);
        let sent = tokio::spawn(send(proxy, 50_000));
        let early = tokio::time::timeout(Duration::from_millis(300), done.recv()).await;
        assert!(early.is_err(), "nothing crosses a cut link");
        link.set_cut(false);
        let (bytes, _) = tokio::time::timeout(Duration::from_secs(5), done.recv()).await.unwrap().unwrap();
        assert_eq!(bytes, 50_000, "held bytes arrive whole once mended");
        sent.await.unwrap();
    }

    #[tokio::test]
    async fn tcp_delay_two_hops_each_way() {
        let (echo, _e) = tcp_echo().await;
        let hops = |d: &str| Path(vec![delay_only(&format!("{d}1"), ms(25)), delay_only(&format!("{d}2"), ms(25))]);
        let (proxy, _p) = tcp_proxy(lo(), echo, hops("up"), hops("down")).await.unwrap();
        assert_rtt("tcp 2×25 ms each way", tcp_rtts(proxy, 10).await, ms(100));
    }

    #[tokio::test]
    async fn tcp_delay_one_hop_each_way() {
        let (echo, _e) = tcp_echo().await;
        let (up, down) = (Path(vec![delay_only("up", ms(50))]), Path(vec![delay_only("down", ms(50))]));
        let (proxy, _p) = tcp_proxy(lo(), echo, up, down).await.unwrap();
        assert_rtt("tcp 50 ms each way", tcp_rtts(proxy, 10).await, ms(100));
    }

    #[tokio::test]
    async fn udp_delay_two_hops_each_way() {
        let (echo, _e) = udp_echo().await;
        let hops = |d: &str| Path(vec![delay_only(&format!("{d}1"), ms(25)), delay_only(&format!("{d}2"), ms(25))]);
        let (proxy, _p) = udp_proxy(lo(), echo, hops("up"), hops("down")).await.unwrap();
        assert_rtt("udp 2×25 ms each way", udp_rtts(proxy, 10).await, ms(100));
    }

    #[tokio::test]
    async fn udp_delay_one_hop_each_way() {
        let (echo, _e) = udp_echo().await;
        let (up, down) = (Path(vec![delay_only("up", ms(50))]), Path(vec![delay_only("down", ms(50))]));
        let (proxy, _p) = udp_proxy(lo(), echo, up, down).await.unwrap();
        assert_rtt("udp 50 ms each way", udp_rtts(proxy, 10).await, ms(100));
    }

    /// A TCP server that counts what each connection sends and reports (bytes, when it ended).
    async fn tcp_sink() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<(usize, Instant)>) {
        let listener = TcpListener::bind(lo()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 64 * 1024];
                    let mut total = 0;
                    while let Ok(n @ 1..) = s.read(&mut buf).await {
                        total += n;
                    }
                    let _ = tx.send((total, Instant::now()));
                });
            }
        });
        (addr, rx)
    }

    async fn send(proxy: SocketAddr, bytes: usize) {
        let mut s = TcpStream::connect(proxy).await.unwrap();
        s.write_all(&vec![1; bytes]).await.unwrap();
        s.shutdown().await.unwrap();
    }

    fn mbps(bytes: usize, d: Duration) -> f64 {
        bytes as f64 * 8.0 / d.as_secs_f64() / 1e6
    }

    #[tokio::test]
    async fn rate_one_flow() {
        let (sink, mut done) = tcp_sink().await;
        let link = Shaper::new("4M", ms(0), Some(4_000_000), 0.0, 1);
        let (proxy, _p) = tcp_proxy(lo(), sink, Path(vec![link.clone()]), Path::default()).await.unwrap();
        let start = Instant::now();
        send(proxy, 2_000_000).await;
        let (bytes, end) = done.recv().await.unwrap();
        let took = end - start;
        println!("2 MB through 4 Mbit/s: {took:?}, {:.3} Mbit/s; {:?}", mbps(bytes, took), link.stats());
        assert_eq!(bytes, 2_000_000);
        assert!((3.6..4.4).contains(&took.as_secs_f64()), "2 MB at 4 Mbit/s took {took:?}, not 4 s ± 10 %");
    }

    /// A burst crosses two links of the same rate pipelined, as packets do: one transfer time
    /// plus the delays, not one transfer per link (a 20 kB part over 2 × 4 Mbit/s, 50 ms each).
    #[tokio::test]
    async fn a_burst_crosses_two_links_in_one_transfer_time() {
        let (sink, mut done) = tcp_sink().await;
        let hop = |name| Shaper::new(name, ms(50), Some(4_000_000), 0.0, 1);
        let (proxy, _p) = tcp_proxy(lo(), sink, Path(vec![hop("a"), hop("b")]), Path::default()).await.unwrap();
        let mut s = TcpStream::connect(proxy).await.unwrap();
        s.set_nodelay(true).unwrap();
        let start = Instant::now();
        s.write_all(&[1; 20_000]).await.unwrap();
        s.shutdown().await.unwrap();
        let (bytes, end) = done.recv().await.unwrap();
        let took = end - start;
        println!("20 kB through 2 × (4 Mbit/s, 50 ms): {took:?} (bound 140 ms)");
        assert_eq!(bytes, 20_000);
        assert!(took >= ms(139) && took <= ms(155), "took {took:?}, expected 140 ms + a chunk and timer lateness");
    }

    #[tokio::test]
    async fn rate_shared_by_two_flows() {
        let (sink, mut done) = tcp_sink().await;
        let link = Shaper::new("4M", ms(0), Some(4_000_000), 0.0, 1);
        // Two proxies, one shaper: like two hosts sending to one host's link.
        let (a, _pa) = tcp_proxy(lo(), sink, Path(vec![link.clone()]), Path::default()).await.unwrap();
        let (b, _pb) = tcp_proxy(lo(), sink, Path(vec![link.clone()]), Path::default()).await.unwrap();
        let start = Instant::now();
        tokio::join!(send(a, 1_000_000), send(b, 1_000_000));
        let (ends, bytes): (Vec<_>, Vec<_>) = [done.recv().await.unwrap(), done.recv().await.unwrap()]
            .into_iter()
            .map(|(n, end)| (end - start, n))
            .unzip();
        let each: Vec<f64> = ends.iter().map(|&d| mbps(1_000_000, d)).collect();
        let total = mbps(2_000_000, *ends.iter().max().unwrap());
        println!("two flows through one 4 Mbit/s link: {each:.3?} Mbit/s each, {total:.3} together");
        assert_eq!(bytes, [1_000_000, 1_000_000]);
        for e in each {
            assert!((1.6..2.4).contains(&e), "a flow got {e:.2} Mbit/s, not ~2");
        }
        assert!((3.6..4.4).contains(&total), "together {total:.2} Mbit/s, not ~4");
    }

    #[tokio::test]
    async fn loss_is_seeded_and_near_the_rate() {
        async fn lost(seed: u64) -> u64 {
            let target = UdpSocket::bind(lo()).await.unwrap();
            let link = Shaper::new("lossy", ms(0), None, 0.1, seed);
            let (proxy, _p) =
                udp_proxy(lo(), target.local_addr().unwrap(), Path(vec![link.clone()]), Path::default()).await.unwrap();
            let client = UdpSocket::bind(lo()).await.unwrap();
            let receive = async {
                let (mut got, mut buf) = (0, [0; 256]);
                while let Ok(Ok(_)) = tokio::time::timeout(ms(500), target.recv(&mut buf)).await {
                    got += 1;
                }
                got
            };
            let sending = async {
                for i in 0..2000u32 {
                    client.send_to(&i.to_be_bytes(), proxy).await.unwrap();
                    if i % 50 == 49 {
                        tokio::time::sleep(ms(2)).await; // stay under the socket buffers
                    }
                }
            };
            let (received, ()) = tokio::join!(receive, sending);
            let st = link.stats();
            println!("seed {seed}: {} of 2000 datagrams lost, {received} received; {st:?}", st.dropped);
            assert_eq!(st.dropped + st.packets, 2000, "every datagram reached the shaper");
            assert_eq!(received, st.packets, "every survivor was delivered");
            st.dropped
        }
        let first = lost(7).await;
        assert!((140..=260).contains(&first), "{first} of 2000 lost, not 7–13 %");
        assert_eq!(lost(7).await, first, "same seed, same losses");
    }

    #[tokio::test]
    async fn tcp_bytes_arrive_intact_and_in_order() {
        let (echo, _e) = tcp_echo().await;
        let up = Path(vec![
            Shaper::new("u1", ms(5), Some(80_000_000), 0.0, 1),
            Shaper::new("u2", ms(5), Some(100_000_000), 0.0, 2),
        ]);
        let down = Path(vec![Shaper::new("d1", ms(5), Some(100_000_000), 0.0, 3)]);
        let (proxy, _p) = tcp_proxy(lo(), echo, up, down).await.unwrap();
        let mut data = vec![0; 5_000_000];
        ChaCha8Rng::seed_from_u64(5).fill(&mut data[..]);
        let s = TcpStream::connect(proxy).await.unwrap();
        let (mut r, mut w) = s.into_split();
        let t = Instant::now();
        let write = async {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap(); // the echo closes after the last byte, so must the proxy
        };
        let read = async {
            let mut back = Vec::new();
            r.read_to_end(&mut back).await.unwrap();
            back
        };
        let ((), back) = tokio::join!(write, read);
        println!("5 MB echoed through 80 Mbit/s + 100 Mbit/s links in {:?}", t.elapsed());
        assert_eq!(back.len(), data.len(), "bytes lost or added");
        let first_diff = back.iter().zip(&data).position(|(a, b)| a != b);
        assert_eq!(first_diff, None, "bytes reordered or corrupted");
    }
}
