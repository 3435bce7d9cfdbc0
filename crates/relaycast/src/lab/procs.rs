//! The lab's processes: started, killed with SIGKILL and started again on the same ports, and
//! all stopped when the lab ends (also on error or Ctrl-C).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Where a started server listens, read from its first lines of output.
#[derive(Clone, Copy, Debug)]
pub struct Listening {
    pub http: SocketAddr,
    /// None for the tracker.
    pub quic: Option<SocketAddr>,
}

/// Every child process, by host name, with the arguments that start it again.
#[derive(Default)]
pub struct Procs {
    children: Vec<(String, Child)>,
    restart: Vec<(String, Vec<String>)>,
}

impl Procs {
    /// Keep a child that is never restarted (a broadcaster).
    pub fn keep(&mut self, name: &str, child: Child) {
        self.children.push((name.to_string(), child));
    }

    /// Start `relaycast ARGS` as host `name`; its log goes to `DIR/NAME.log` (appended to across
    /// restarts). `with_quic`: wait for its QUIC address too. Once started, it is restarted
    /// with the same arguments on the ports it got now.
    pub fn start_server(
        &mut self,
        exe: &Path,
        name: &str,
        args: &[String],
        dir: &Path,
        with_quic: bool,
    ) -> Result<Listening> {
        let (child, at) = start(exe, name, args, dir, with_quic)?;
        let mut fixed = args.to_vec();
        pin_port(&mut fixed, "--http", at.http);
        if let Some(q) = at.quic {
            pin_port(&mut fixed, "--quic", q);
        }
        self.children.push((name.to_string(), child));
        self.restart.push((name.to_string(), fixed));
        Ok(at)
    }

    /// kill -9 host `name`'s process and reap it.
    pub fn kill(&mut self, name: &str) {
        for (n, c) in self.children.iter_mut().filter(|(n, _)| n == name) {
            if let Err(e) = c.kill() {
                tracing::warn!(host = %n, error = %e, "lab: kill failed");
            }
            let _ = c.wait();
        }
    }

    /// Start host `name` again with its first arguments and ports (a few tries: the old
    /// process's ports may take a moment to free).
    pub fn restart(&mut self, exe: &Path, name: &str, dir: &Path) -> Result<()> {
        let (_, args) = self.restart.iter().find(|(n, _)| n == name).context("not a restartable host")?;
        let with_quic = args.iter().any(|a| a == "--quic");
        let mut last = None;
        for _ in 0..3 {
            match start(exe, name, args, dir, with_quic) {
                Ok((child, _)) => {
                    self.children.retain(|(n, _)| n != name);
                    self.children.push((name.to_string(), child));
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(last.expect("three tries"))
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
        }
        for (_, c) in &mut self.children {
            let _ = c.wait();
        }
    }
}

/// Replace `flag`'s value (`127.0.0.1:0`) with the address the process got.
fn pin_port(args: &mut [String], flag: &str, addr: SocketAddr) {
    if let Some(i) = args.iter().position(|a| a == flag)
        && let Some(v) = args.get_mut(i + 1)
    {
        *v = addr.to_string();
    }
}

pub fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}

/// Start a node or tracker and read its addresses from its first lines.
fn start(exe: &Path, name: &str, args: &[String], dir: &Path, with_quic: bool) -> Result<(Child, Listening)> {
    let log = log_path(dir, name);
    let err = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
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
    while http.is_none() || (with_quic && quic.is_none()) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{name} did not start; see {}", log.display());
        };
        if let Some((_, a)) = line.split_once(" listening: http://") {
            http = Some(a.trim_end_matches('/').parse()?);
        } else if let Some((_, a)) = line.split_once(" accepting relays on udp ") {
            quic = Some(a.trim().parse()?);
        }
    }
    Ok((child, Listening { http: http.expect("loop ends when known"), quic }))
}

/// A port free on 127.0.0.1 now (for a process whose address others need before it starts).
pub fn free_port() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?)
}
