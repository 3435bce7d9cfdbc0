//! Where a viewer's played segments go: nowhere, a file or stdout (MPEG-TS), or a player
//! reading stdin (ffplay, mpv).

use std::process::Stdio;

use anyhow::{Context, Result};
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use super::{Player, WatchArgs};

/// Where delivered segments go.
pub enum Output {
    None,
    Writer(Box<dyn tokio::io::AsyncWrite + Unpin + Send>),
    Player(tokio::process::Child),
}

impl Output {
    pub async fn open(args: &WatchArgs) -> Result<Self> {
        if let Some(player) = args.play {
            let (cmd, player_args): (&str, &[&str]) = match player {
                Player::Ffplay => ("ffplay", &["-hide_banner", "-loglevel", "error", "-i", "pipe:0"]),
                Player::Mpv => ("mpv", &["--really-quiet", "-"]),
            };
            let child = tokio::process::Command::new(cmd)
                .args(player_args)
                .stdin(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {cmd} (is it installed?)"))?;
            return Ok(Self::Player(child));
        }
        match &args.out {
            None => Ok(Self::None),
            Some(p) if p.as_os_str() == "-" => Ok(Self::Writer(Box::new(tokio::io::stdout()))),
            Some(p) => {
                let f = tokio::fs::File::create(p).await.with_context(|| format!("creating {}", p.display()))?;
                Ok(Self::Writer(Box::new(tokio::io::BufWriter::new(f))))
            }
        }
    }

    pub async fn write(&mut self, data: Bytes) -> Result<()> {
        match self {
            Self::None => Ok(()),
            Self::Writer(w) => w.write_all(&data).await.context("writing the stream"),
            Self::Player(child) => match child.stdin.as_mut() {
                // A closed player (window shut) ends the output, not the session.
                Some(stdin) => {
                    if stdin.write_all(&data).await.is_err() {
                        child.stdin = None;
                    }
                    Ok(())
                }
                None => Ok(()),
            },
        }
    }

    pub async fn close(self) -> Result<()> {
        match self {
            Self::None => Ok(()),
            Self::Writer(mut w) => w.shutdown().await.context("closing the output"),
            Self::Player(mut child) => {
                drop(child.stdin.take());
                let _ = child.wait().await;
                Ok(())
            }
        }
    }
}
