//! The node's egress cap: one pacer shared by every viewer response, so an edge never sends
//! faster than its configured capacity (what a real uplink or a provider's cap does). Set with
//! `--egress-kbps` or at run time with `PUT /api/v1/egress` (cluster token required), which
//! the lab and the tests use to throttle an edge mid-stream.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::time::Instant;

/// Pacing granularity: chunks of about this much link time, between 1 and 16 KiB, so an
/// aborted response wastes little of a slow link.
const CHUNK_TIME: Duration = Duration::from_millis(25);
const MAX_CHUNK: usize = 16 * 1024;
const MIN_CHUNK: usize = 1024;
/// Credit an idle link may accumulate (a short burst, as a token bucket allows).
const BURST: Duration = Duration::from_millis(50);

pub struct Egress {
    /// Bytes per second; 0 = unlimited.
    rate: AtomicU64,
    /// When the link is free again (the virtual finish time of everything reserved so far).
    next_free: Mutex<Instant>,
}

impl Egress {
    pub fn new(kbps: u64) -> Self {
        Self { rate: AtomicU64::new(kbps * 1000 / 8), next_free: Mutex::new(Instant::now()) }
    }

    /// The cap in kbit/s, 0 for none.
    pub fn kbps(&self) -> u64 {
        self.rate.load(Ordering::Relaxed) * 8 / 1000
    }

    pub fn set_kbps(&self, kbps: u64) {
        self.rate.store(kbps * 1000 / 8, Ordering::Relaxed);
        *self.next_free.lock().expect("egress lock") = Instant::now();
    }

    /// Reserve `n` bytes of link time; returns when they may be sent (first come, first served).
    fn reserve(&self, n: usize) -> Option<Instant> {
        let rate = self.rate.load(Ordering::Relaxed);
        if rate == 0 {
            return None;
        }
        let now = Instant::now();
        let mut next = self.next_free.lock().expect("egress lock");
        let start = (*next).max(now.checked_sub(BURST).unwrap_or(now));
        *next = start + Duration::from_secs_f64(n as f64 / rate as f64);
        Some(start)
    }

    /// `data` as a body stream paced by this cap (unpaced, in one piece, when uncapped).
    pub fn pace(self: std::sync::Arc<Self>, data: Bytes) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
        futures_util::stream::unfold((self, data), |(egress, mut rest)| async move {
            if rest.is_empty() {
                return None;
            }
            let rate = egress.rate.load(Ordering::Relaxed);
            let chunk = if rate == 0 {
                rest.len()
            } else {
                ((rate as f64 * CHUNK_TIME.as_secs_f64()) as usize).clamp(MIN_CHUNK, MAX_CHUNK).min(rest.len())
            };
            let piece = rest.split_to(chunk);
            if let Some(at) = egress.reserve(piece.len()) {
                tokio::time::sleep_until(at).await;
            }
            Some((Ok(piece), (egress, rest)))
        })
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_capped_link_sends_at_its_rate() {
        let egress = std::sync::Arc::new(Egress::new(800)); // 100 kB/s
        let start = Instant::now();
        let body = Bytes::from(vec![7u8; 200_000]);
        let chunks: Vec<Bytes> = egress.clone().pace(body.clone()).map(|c| c.unwrap()).collect().await;
        let took = start.elapsed();
        assert_eq!(chunks.concat(), body.to_vec(), "pacing never changes the bytes");
        assert!(took >= Duration::from_millis(1800) && took <= Duration::from_millis(2100), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn uncapped_is_one_piece_and_immediate() {
        let egress = std::sync::Arc::new(Egress::new(0));
        let start = Instant::now();
        let chunks: Vec<_> = egress.pace(Bytes::from(vec![1u8; 100_000])).collect().await;
        assert_eq!(chunks.len(), 1);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
