//! Provisioners: how the traffic manager starts and stops a temporary secondary server (F22).
//!
//! - `local` (default): spawns `relaycast relay` as a child process of the tracker, on loopback
//!   ports chosen by the OS, re-streaming from the primary edge it relieves;
//! - `exec`: runs operator-supplied shell commands, so a secondary can be a Kubernetes pod, a
//!   systemd unit or a cloud VM (examples in docs/TRAFFIC.md). Placeholders: `{name}`,
//!   `{region}`, `{tracker}`, `{port}` (a free local TCP port, for a host-level service),
//!   `{parent}` (the primary's QUIC address, empty if unknown); each value is shell-quoted.
//!   The cluster token is passed as `RELAYCAST_TOKEN` in the environment, never on a command line;
//! - `none`: no secondaries (steering only).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};

/// What a secondary needs to know to start.
#[derive(Clone, Debug)]
pub struct StartSpec {
    pub name: String,
    pub region: String,
    pub tracker: String,
    /// QUIC address of the primary edge it re-streams from.
    pub parent: Option<String>,
    pub token: String,
}

pub enum Provisioner {
    Local { exe: PathBuf, children: Mutex<BTreeMap<String, tokio::process::Child>> },
    Exec { start: String, stop: Option<String> },
    None,
}

impl Provisioner {
    pub fn local() -> Result<Self> {
        let exe = std::env::current_exe().context("finding the relaycast binary to spawn secondaries")?;
        Ok(Self::Local { exe, children: Mutex::new(BTreeMap::new()) })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Local { .. } => "local",
            Self::Exec { .. } => "exec",
            Self::None => "none",
        }
    }

    /// Process id of a local secondary (for the API and the tests).
    pub fn pid(&self, name: &str) -> Option<u32> {
        match self {
            Self::Local { children, .. } => children.lock().expect("children lock").get(name)?.id(),
            _ => None,
        }
    }

    pub async fn start(&self, spec: &StartSpec) -> Result<()> {
        match self {
            Self::None => bail!("the provisioner is `none`"),
            Self::Local { exe, children } => {
                // A local secondary dies with the tracker that started it, even a killed one.
                let mut cmd = crate::common::command_dying_with_us(exe);
                cmd.args(["relay", "--name", &spec.name, "--region", &spec.region, "--tracker", &spec.tracker])
                    .args(["--http", "127.0.0.1:0"])
                    .env("RELAYCAST_TOKEN", &spec.token)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null());
                if let Some(parent) = &spec.parent {
                    cmd.args(["--parent", parent]);
                }
                let child = cmd.spawn().with_context(|| format!("spawning {}", exe.display()))?;
                tracing::info!(secondary = %spec.name, region = %spec.region, pid = ?child.id(), parent = ?spec.parent, "secondary process started");
                children.lock().expect("children lock").insert(spec.name.clone(), child);
                Ok(())
            }
            Self::Exec { start, .. } => {
                let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port().to_string();
                let cmd = fill(
                    start,
                    &[
                        ("name", &spec.name),
                        ("region", &spec.region),
                        ("tracker", &spec.tracker),
                        ("port", &port),
                        ("parent", spec.parent.as_deref().unwrap_or("")),
                    ],
                );
                run_shell(&cmd, &spec.token).await
            }
        }
    }

    pub async fn stop(&self, name: &str, token: &str) -> Result<()> {
        match self {
            Self::None => Ok(()),
            Self::Local { children, .. } => {
                let child = children.lock().expect("children lock").remove(name);
                let Some(mut child) = child else { return Ok(()) };
                let pid = child.id();
                child.start_kill().context("stopping the secondary")?;
                let status = child.wait().await?;
                tracing::info!(secondary = %name, ?pid, %status, "secondary process stopped");
                Ok(())
            }
            Self::Exec { stop: Some(stop), .. } => run_shell(&fill(stop, &[("name", name)]), token).await,
            Self::Exec { stop: None, .. } => {
                tracing::warn!(secondary = %name, "no --stop-cmd configured: the secondary is left running");
                Ok(())
            }
        }
    }
}

/// Replace `{key}` by the shell-quoted value.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (k, v) in values {
        out = out.replace(&format!("{{{k}}}"), &sh_quote(v));
    }
    out
}

/// Single-quote for POSIX sh.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

async fn run_shell(cmd: &str, token: &str) -> Result<()> {
    tracing::info!(command = %cmd, "provisioner command");
    let out = tokio::process::Command::new("sh")
        .args(["-c", cmd])
        .env("RELAYCAST_TOKEN", token)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running sh")?;
    if !out.status.success() {
        bail!("`{cmd}` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_filled_with_quoted_values() {
        let cmd = fill("kubectl run {name} --env=REGION={region}", &[("name", "secondary-eu-1"), ("region", "e'u")]);
        assert_eq!(cmd, r"kubectl run 'secondary-eu-1' --env=REGION='e'\''u'");
    }

    #[tokio::test]
    async fn exec_runs_the_start_and_stop_commands() {
        let dir = std::env::temp_dir().join(format!("relaycast-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("calls");
        let p = Provisioner::Exec {
            start: format!("echo start {{name}} {{region}} $RELAYCAST_TOKEN >> '{}'", file.display()),
            stop: Some(format!("echo stop {{name}} >> '{}'", file.display())),
        };
        let spec = StartSpec {
            name: "s1".into(),
            region: "eu".into(),
            tracker: "http://127.0.0.1:1".into(),
            parent: None,
            token: "tok".into(),
        };
        p.start(&spec).await.unwrap();
        p.stop("s1", "tok").await.unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "start s1 eu tok\nstop s1\n");
        let bad = Provisioner::Exec { start: "exit 3".into(), stop: None };
        assert!(format!("{:#}", bad.start(&spec).await.unwrap_err()).contains("failed"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
