//! The QoE log (F42): one JSON object per line — the session start, each segment (server,
//! request / first byte / done times, bytes, origin delay), stalls, buffer samples, per-server
//! throughput, duplicates, the end summary. `relaycast report` turns logs into pictures.

use std::path::Path;

use anyhow::{Context, Result};
use tokio::io::AsyncWriteExt;

/// A JSON-lines writer; a no-op when no path was given.
pub struct QoeLog {
    out: Option<tokio::io::BufWriter<tokio::fs::File>>,
}

impl QoeLog {
    pub async fn create(path: Option<&Path>) -> Result<Self> {
        let out = match path {
            Some(p) => {
                let f =
                    tokio::fs::File::create(p).await.with_context(|| format!("creating QoE log {}", p.display()))?;
                Some(tokio::io::BufWriter::new(f))
            }
            None => None,
        };
        Ok(Self { out })
    }

    pub async fn write(&mut self, record: serde_json::Value) -> Result<()> {
        if let Some(out) = &mut self.out {
            let mut line = serde_json::to_vec(&record)?;
            line.push(b'\n');
            out.write_all(&line).await.context("writing the QoE log")?;
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<()> {
        if let Some(out) = &mut self.out {
            out.flush().await?;
        }
        Ok(())
    }
}
