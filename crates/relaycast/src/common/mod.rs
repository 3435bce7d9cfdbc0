//! Plumbing shared by every role (node, tracker, viewer, lab): clocks, names, HTTP helpers, QUIC
//! endpoints, signatures, pacing. Roles import from here; nothing here imports a role.

pub mod cluster_ca;
pub mod egress;
pub mod encryption;
pub mod http;
pub mod http1;
pub mod memory;
pub mod metrics;
pub mod playback;
pub mod quic;
pub mod signing;
pub mod tls;

use std::time::{SystemTime, UNIX_EPOCH};

use relaycast_core::Name;

/// The cluster token used when none is configured (fine on one machine, not in production).
pub const DEV_TOKEN: &str = "relaycast-dev-token";

/// Unix time in milliseconds (the origin timestamp clock, F8).
pub fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A command for `program` that dies with this process, even when this process is killed
/// outright (`setpriv --pdeathsig KILL`, where util-linux has it; without it only an orderly
/// exit stops the child, through `kill_on_drop`). For children that must not outlive us: a
/// ladder's ffmpeg, a local provisioner's secondary relays.
pub fn command_dying_with_us(program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
    let on_path = |name: &str| {
        std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(name).is_file()))
    };
    let mut cmd = if on_path("setpriv") {
        let mut c = tokio::process::Command::new("setpriv");
        c.args(["--pdeathsig", "KILL", "--"]).arg(program);
        c
    } else {
        tokio::process::Command::new(program)
    };
    cmd.kill_on_drop(true);
    cmd
}

/// Parse a URL path segment as a [`Name`], for use in error messages too.
pub fn parse_name(s: &str) -> Result<Name, String> {
    Name::new(s).map_err(|e| format!("invalid name {s:?}: {e}"))
}

/// The `session` query parameter, if it is a plausible steering id.
pub fn session_param(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "session")
        .map(|(_, v)| v.to_string())
        .filter(|v| valid_session(v))
}

/// Steering session ids: 1–64 characters of `[A-Za-z0-9_-]`.
pub fn valid_session(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
