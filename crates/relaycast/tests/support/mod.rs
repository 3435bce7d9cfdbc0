//! Shared helpers for the end-to-end tests: `relaycast` node processes, an ffmpeg pusher, a
//! tiny blocking HTTP/1.1 client, a poller, temporary folders and ffprobe wrappers.
//!
//! Every process is killed when its handle drops; a node's stderr goes to a file that is printed
//! when the test is failing, so a red test shows what the node logged.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a node may take to print its addresses.
pub const STARTUP: Duration = Duration::from_secs(20);
/// Generous wait for anything that involves media flowing (tests run in parallel on 2 cores).
pub const MEDIA_WAIT: Duration = Duration::from_secs(45);
/// Timeout of one HTTP request (a viewer request may wait up to 10 s for a first segment).
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Panic with an install hint unless ffmpeg and ffprobe are on PATH.
pub fn require_ffmpeg() {
    for tool in ["ffmpeg", "ffprobe"] {
        let ok = Command::new(tool)
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "{tool} not found: install ffmpeg: apt-get install -y ffmpeg");
    }
}

/// Panic with an install hint unless python3 is on PATH.
pub fn require_python() {
    let ok = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "python3 not found: install it: apt-get install -y python3");
}

/// Call `check` every 200 ms until it returns `Some`, or panic after `timeout` naming `what`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A free TCP port on loopback (bound, then released).
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

// ---------------------------------------------------------------------------------------------
// Temporary folders

/// A fresh folder under the system temp dir, removed on drop unless `RELAYCAST_KEEP_TMP` is set
/// (then a failing test names it, for inspection).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!(
            "relaycast-test-{label}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("RELAYCAST_KEEP_TMP").is_none() {
            let _ = std::fs::remove_dir_all(&self.path);
        } else if std::thread::panicking() {
            eprintln!("(kept {} for inspection)", self.path.display());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A child process killed (and reaped) on drop, with stderr captured in a file.
pub struct Proc {
    label: String,
    child: Child,
    log: PathBuf,
    _dir: TempDir,
}

impl Proc {
    /// Spawn `cmd` with stdin closed and stderr to a log file. Stdout is left to the caller.
    pub fn spawn(label: &str, mut cmd: Command) -> Self {
        let dir = TempDir::new(label);
        let log = dir.join("stderr.log");
        let file = std::fs::File::create(&log).expect("creating the stderr log");
        cmd.stdin(Stdio::null()).stderr(file);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {label} ({cmd:?}): {e}"));
        Self { label: label.to_string(), child, log, _dir: dir }
    }

    /// Everything the process wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `true` while the process has not exited.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child, e.g. to take its piped stdout.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(80).collect();
            eprintln!("----- {} stderr (last {} lines) -----", self.label, tail.len());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
            eprintln!("----- end of {} -----", self.label);
        }
    }
}

/// A running `relaycast` process and the addresses it printed.
pub struct Node {
    pub proc: Proc,
    /// Every line printed on stdout so far (read until the addresses were known).
    pub stdout: Vec<String>,
    pub http: SocketAddr,
    pub quic: Option<SocketAddr>,
}

impl Node {
    /// `relaycast origin --http 127.0.0.1:0 --quic 127.0.0.1:0 --token TOKEN ARGS...`.
    pub fn origin(label: &str, token: &str, args: &[&str]) -> Self {
        let mut all = vec!["origin", "--http", "127.0.0.1:0", "--quic", "127.0.0.1:0", "--token", token];
        all.extend_from_slice(args);
        Self::start(label, &all, true)
    }

    /// `relaycast relay --name LABEL --parent PARENT --http 127.0.0.1:0 [--quic 127.0.0.1:0]
    /// --token TOKEN`.
    pub fn relay(label: &str, parent: SocketAddr, token: &str, accept_children: bool) -> Self {
        let parent = parent.to_string();
        let mut all = vec!["relay", "--name", label, "--parent", &parent, "--http", "127.0.0.1:0", "--token", token];
        if accept_children {
            all.extend_from_slice(&["--quic", "127.0.0.1:0"]);
        }
        Self::start(label, &all, accept_children)
    }

    /// `relaycast tracker --http 127.0.0.1:0 ARGS...`.
    pub fn tracker(args: &[&str]) -> Self {
        let mut all = vec!["tracker", "--http", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Self::start("tracker", &all, false)
    }

    /// Start the binary with `args` and wait for its `listening` line (and, if `quic`, its
    /// `accepting relays` line).
    pub fn start(label: &str, args: &[&str], quic: bool) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_relaycast"));
        cmd.args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::piped());
        let mut proc = Proc::spawn(label, cmd);
        let lines = stdout_lines(&mut proc.child);
        let mut stdout = Vec::new();
        let mut http = None;
        let mut quic_addr = None;
        let deadline = Instant::now() + STARTUP;
        while http.is_none() || (quic && quic_addr.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match lines.recv_timeout(left) {
                Ok(l) => l,
                Err(e) => {
                    let status = proc.child.try_wait();
                    panic!(
                        "{label} did not print its addresses within {STARTUP:?} ({e}; exit status {status:?}); \
                         stdout so far: {stdout:?}\nstderr:\n{}",
                        proc.log()
                    );
                }
            };
            let listening = line.split_once(" listening: ").map(|(_, r)| r);
            if let Some(rest) = listening.and_then(|r| r.strip_prefix("http://").or_else(|| r.strip_prefix("https://")))
            {
                let addr = rest.trim_end_matches('/');
                http = Some(addr.parse().unwrap_or_else(|e| panic!("{label}: bad address in {line:?}: {e}")));
            } else if let Some((_, addr)) = line.split_once(" accepting relays on udp ") {
                quic_addr =
                    Some(addr.trim().parse().unwrap_or_else(|e| panic!("{label}: bad address in {line:?}: {e}")));
            }
            stdout.push(line);
        }
        let http = http.expect("loop ends once http is known");
        Self { proc, stdout, http, quic: quic_addr }
    }

    /// `http://ADDR{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// GET `path` on this node; panics on a transport error (with the node's log).
    pub fn get(&self, path: &str) -> Response {
        http_get(&self.url(path))
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{} stderr:\n{}", self.proc.label, self.log()))
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// The value of a Prometheus counter or gauge summed over its label sets.
    pub fn metric(&self, name: &str) -> f64 {
        metric_sum(&self.get("/metrics").text(), name)
    }
}

/// Forward a child's stdout lines to a channel from a background thread. The thread keeps
/// draining stdout after the receiver is gone, so the child never writes to a closed pipe.
pub fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// Sum every sample of metric `name` in Prometheus text (0 if absent).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// ffmpeg encoding a live test pattern (1 s GOP) with a sine tone, written with `output` args.
fn ffmpeg_pattern(label: &str, size: &str, output: &[&str]) -> Proc {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "warning", "-re"])
        .args(["-f", "lavfi", "-i", &format!("testsrc2=size={size}:rate=25")])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency"])
        .args(["-g", "25", "-keyint_min", "25", "-sc_threshold", "0", "-b:v", "300k"])
        .args(["-c:a", "aac", "-b:a", "48k"])
        .args(output)
        .stdout(Stdio::null());
    Proc::spawn(label, cmd)
}

/// ffmpeg pushing a live test pattern as HLS (1 s segments) to `url` over HTTP PUT.
pub fn ffmpeg_push(label: &str, url: &str, size: &str) -> Proc {
    ffmpeg_pattern(label, size, &["-f", "hls", "-hls_time", "1", "-hls_list_size", "5", "-method", "PUT", url])
}

/// ffmpeg streaming a live test pattern as MPEG-TS over one chunked HTTP PUT to `url` (an
/// origin's `/ingest/{channel}/{key}`), frame by frame: the low-latency feed.
pub fn ffmpeg_stream(label: &str, url: &str) -> Proc {
    ffmpeg_pattern(label, "426x240", &["-f", "mpegts", "-muxdelay", "0", "-flush_packets", "1", "-method", "PUT", url])
}

/// ffmpeg publishing a live 320x180 test pattern (1 s GOP, AAC) to `url`: `flv` for RTMP,
/// `mpegts` for SRT.
pub fn ffmpeg_publish(label: &str, format: &str, url: &str) -> Proc {
    ffmpeg_pattern(label, "320x180", &["-f", format, url])
}

/// `python3 -m http.server` serving `dir` on a free loopback port; returns it and the port.
/// Call [`require_python`] first.
pub fn serve_dir(dir: &TempDir) -> (Proc, u16) {
    let port = free_tcp_port();
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "http.server", "--bind", "127.0.0.1", &port.to_string(), "--directory"])
        .arg(dir.path())
        .stdout(Stdio::null());
    let server = Proc::spawn("http.server", cmd);
    wait_until(STARTUP, &format!("python3 http.server on port {port}"), || {
        http_get(&format!("http://127.0.0.1:{port}/")).ok().map(|_| ())
    });
    (server, port)
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// Sum of a Prometheus metric's samples (from `/metrics`) whose labels contain `label`.
pub fn counter_with(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A response read by the minimal client.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// GET `url` (`http://host:port/path`) over HTTP/1.1 with `Connection: close`.
pub fn http_get(url: &str) -> std::io::Result<Response> {
    request("GET", url, &[])
}

/// PUT `body` to `url`.
pub fn http_put(url: &str, body: &[u8]) -> std::io::Result<Response> {
    request("PUT", url, body)
}

/// One request on a fresh connection. A server may answer (e.g. 413) before reading the whole
/// body and close; a failed body write is therefore ignored and the response read anyway.
pub fn request(method: &str, url: &str, body: &[u8]) -> std::io::Result<Response> {
    send(method, url, "", body)
}

/// An admin request: `Authorization: Bearer TOKEN`.
pub fn request_with_token(method: &str, url: &str, token: &str, body: &[u8]) -> std::io::Result<Response> {
    send(method, url, &format!("Authorization: Bearer {token}\r\n"), body)
}

/// SHA-256 of `data`, hex: what the QoE log records for each segment a sharing viewer played.
pub fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn send(method: &str, url: &str, extra_headers: &str, body: &[u8]) -> std::io::Result<Response> {
    let rest = url.strip_prefix("http://").ok_or_else(|| invalid(format!("not an http:// URL: {url}")))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let addr =
        authority.to_socket_addrs()?.next().ok_or_else(|| invalid(format!("{authority} resolves to nothing")))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nUser-Agent: relaycast-tests\r\n"
    );
    if method != "GET" || !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str(extra_headers);
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    let _ = stream.write_all(body).and_then(|()| stream.flush());
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    // A reset after the response arrived (the server closed with our body unread) is fine.
    if let Err(e) = read
        && raw.is_empty()
    {
        return Err(e);
    }
    parse_response(&raw)
}

fn invalid(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid(format!("no end of headers in {} bytes", raw.len())))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|e| invalid(format!("headers are not UTF-8: {e}")))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let payload = &raw[end + 4..];
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(payload)?
    } else if let Some((_, len)) = headers.iter().find(|(n, _)| n == "content-length") {
        let len: usize = len.parse().map_err(|_| invalid(format!("bad content-length {len:?}")))?;
        if payload.len() < len {
            return Err(invalid(format!("body cut short: {} of {len} bytes", payload.len())));
        }
        payload[..len].to_vec()
    } else {
        payload.to_vec()
    };
    Ok(Response { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol =
            data.windows(2).position(|w| w == b"\r\n").ok_or_else(|| invalid("unterminated chunk size".into()))?;
        let size_text = std::str::from_utf8(&data[..eol]).unwrap_or_default();
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| invalid(format!("bad chunk size {size_text:?}")))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err(invalid("chunk cut short".into()));
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

// ---------------------------------------------------------------------------------------------
// HLS and ffprobe

/// Segment URIs of a media playlist, in order.
pub fn segment_uris(playlist: &str) -> Vec<String> {
    playlist.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
}

/// The number in `{seq}.ts` at the end of a segment URI.
pub fn seq_of(uri: &str) -> u64 {
    let file = uri.rsplit('/').next().unwrap_or(uri);
    file.strip_suffix(".ts").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("not a {{seq}}.ts URI: {uri:?}"))
}

/// `max-age` of a Cache-Control value.
pub fn max_age(cache_control: &str) -> Option<u64> {
    cache_control.split(',').find_map(|d| d.trim().strip_prefix("max-age=")?.trim().parse().ok())
}

/// `relaycast sign`: a playable link to `channel` on `base`, valid `ttl`, bound to `ip` if given.
pub fn sign_link(key: &str, channel: &str, ttl: &str, base: &str, ip: Option<&str>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relaycast"));
    cmd.args(["sign", "--key", key, "--channel", channel, "--ttl", ttl, "--base", base]);
    if let Some(ip) = ip {
        cmd.args(["--ip", ip]);
    }
    let out = run(&mut cmd);
    assert!(out.status.success(), "relaycast sign: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 link").trim().to_string()
}

/// Run a command to completion, panicking if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// One stream as ffprobe reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    pub codec_type: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub duration_s: Option<f64>,
}

/// ffprobe `input` (a file or URL): its streams. Panics if ffprobe fails or reports errors.
pub fn probe(input: &str) -> Vec<Stream> {
    let out = run(Command::new("ffprobe").args([
        "-v",
        "error",
        "-show_entries",
        "stream=codec_type,width,height,duration",
        "-of",
        "csv=p=0:nk=0",
        input,
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "ffprobe {input} failed ({}): {stderr}", out.status);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut s = Stream { codec_type: String::new(), width: None, height: None, duration_s: None };
            for kv in line.split(',') {
                let Some((k, v)) = kv.split_once('=') else { continue };
                match k {
                    "codec_type" => s.codec_type = v.to_string(),
                    "width" => s.width = v.parse().ok(),
                    "height" => s.height = v.parse().ok(),
                    "duration" => s.duration_s = v.parse().ok(),
                    _ => {}
                }
            }
            s
        })
        .collect()
}

/// Write `bytes` to a file in `dir` and ffprobe it.
pub fn probe_bytes(dir: &TempDir, name: &str, bytes: &[u8]) -> Vec<Stream> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("writing a probe file");
    probe(path.to_str().expect("UTF-8 temp path"))
}

/// The video stream's `WIDTHxHEIGHT`, or panic.
pub fn video_size(streams: &[Stream]) -> String {
    let v =
        streams.iter().find(|s| s.codec_type == "video").unwrap_or_else(|| panic!("no video stream in {streams:?}"));
    format!("{}x{}", v.width.unwrap_or(0), v.height.unwrap_or(0))
}

/// The sharing set-up of the P2P tests: an origin looping the sample and signing its segments
/// (`--signing-key DIR/origin.key`, in `region`, announcing to the tracker) and a tracker that
/// hands the origin's public key to viewers (`--origin-key`, then `tracker_args`). The origin
/// starts first, as the tracker reads the key file it writes. Returns (origin, tracker, tracker URL).
pub fn signing_origin_and_tracker(
    dir: &TempDir,
    token: &str,
    region: &str,
    tracker_args: &[&str],
) -> (Node, Node, String) {
    let key = dir.join("origin.key");
    let port = free_tcp_port();
    let tracker_url = format!("http://127.0.0.1:{port}");
    let key_arg = key.to_str().unwrap();
    let origin = Node::origin(
        "origin",
        token,
        &["--sample", "--signing-key", key_arg, "--tracker", &tracker_url, "--region", region],
    );
    let public = format!("{}.pub", key.display());
    assert!(Path::new(&public).exists(), "the origin writes its public key beside the key file");
    let http = format!("127.0.0.1:{port}");
    let mut args = vec!["tracker", "--http", &http, "--origin-key", &public, "--token", token];
    args.extend_from_slice(tracker_args);
    let tracker = Node::start("tracker", &args, false);
    (origin, tracker, tracker_url)
}

/// An edge in `region` that finds its parent through the tracker, with its viewer egress capped
/// at `kbps`, once it serves the sample channel.
pub fn capped_edge(name: &str, region: &str, tracker_url: &str, token: &str, kbps: &str) -> Node {
    let args = [
        "relay",
        "--name",
        name,
        "--region",
        region,
        "--tracker",
        tracker_url,
        "--http",
        "127.0.0.1:0",
        "--token",
        token,
        "--egress-kbps",
        kbps,
    ];
    let e = Node::start(name, &args, false);
    wait_until(Duration::from_secs(40), "the edge serves the demo channel", || {
        http_get(&e.url("/live/demo/index.m3u8")).ok().filter(|r| r.status == 200 && r.text().contains(".ts"))
    });
    e
}

/// What hls.js in headless Chromium did with a playlist: every JSON line `web/player-check.mjs`
/// printed, the last one being its `summary`.
pub struct PlayerRun {
    pub events: Vec<serde_json::Value>,
    pub status: std::process::ExitStatus,
}

impl PlayerRun {
    /// The final `summary` event (played seconds, fragments, stalls, levels/hosts seen).
    pub fn summary(&self) -> &serde_json::Value {
        self.events.iter().rev().find(|e| e["event"] == "summary").expect("player-check printed no summary")
    }

    /// All events of one kind (`frag`, `level`, `steering`, `error`, …).
    pub fn of(&self, kind: &str) -> Vec<&serde_json::Value> {
        self.events.iter().filter(|e| e["event"] == kind).collect()
    }
}

/// Play `url` with hls.js in headless Chromium for `seconds` (see web/player-check.mjs), merging
/// `hls_config` (a JSON object) into the player's config. Panics with an install hint when node,
/// Chromium or the npm packages are missing — this is the independent standard player of the tests.
pub fn play_in_browser(url: &str, seconds: u32, hls_config: &str) -> PlayerRun {
    play_in_browser_with(url, seconds, hls_config, &[])
}

/// [`play_in_browser`] with more player-check options (e.g. `--trust-spki HASH`).
pub fn play_in_browser_with(url: &str, seconds: u32, hls_config: &str, options: &[&str]) -> PlayerRun {
    let seconds = seconds.to_string();
    let mut args = vec!["--seconds", &seconds, "--hls-config", hls_config];
    args.extend_from_slice(options);
    let out = browser_script("player-check.mjs", url, &args);
    let events = String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    PlayerRun { events, status: out.status }
}

/// Runs `node web/SCRIPT URL ARGS... --chromium PATH` (the headless-Chromium checks) to the end.
/// Panics with an install hint when node, Chromium or the npm packages are missing, or when the
/// script says it could not run (exit status 2).
pub fn browser_script(script: &str, url: &str, args: &[&str]) -> Output {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web");
    assert!(
        web.join("node_modules/playwright-core").exists() && web.join("node_modules/hls.js").exists(),
        "web/node_modules is missing: run `npm ci --prefix web`"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "no Chromium at {chromium}: apt-get install -y chromium");
    let out = Command::new("node")
        .arg(web.join(script))
        .arg(url)
        .args(args)
        .args(["--chromium", &chromium])
        .stdin(Stdio::null())
        .output()
        .expect("run node (is Node.js installed?)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(2), "{script} could not run: {stderr}");
    out
}

/// Runs `relaycast lab lab/FILE --results DIR ARGS...` to the end and returns its results folder.
pub fn run_lab(file: &str, args: &[&str], results: &Path) -> PathBuf {
    let topology = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lab").join(file);
    let out = Command::new(env!("CARGO_BIN_EXE_relaycast"))
        .arg("lab")
        .arg(&topology)
        .arg("--results")
        .arg(results)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("running relaycast lab");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "lab {file} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let dir = stdout.lines().find_map(|l| l.strip_prefix("results: ")).expect("the lab prints its results folder");
    PathBuf::from(dir.trim())
}

/// `curl` a URL over HTTPS trusting `ca` (with `extra` arguments: a method, a client
/// certificate): (HTTP version, status, body), or None if TLS or the request failed.
pub fn curl(url: &str, ca: &str, extra: &[&str]) -> Option<(String, u16, String)> {
    let out = run(Command::new("curl")
        .args(["-sS", "--http2", "--max-time", "10", "--cacert", ca])
        .args(extra)
        .args(["-w", "\n%{http_version} %{http_code}", url]));
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, tail) = text.rsplit_once('\n')?;
    let (version, code) = tail.split_once(' ')?;
    Some((version.to_string(), code.parse().ok()?, body.to_string()))
}
