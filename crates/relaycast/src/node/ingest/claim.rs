//! Who may publish a channel (F4): the stream key declared for it (`--push NAME=KEY` or a config
//! `[[channels]]` entry with `push_key`), compared in constant time, for every ingest (HTTP, RTMP,
//! SRT); and one live publisher at a time — a second is refused, or with `--takeover` replaces
//! the first, which is told to stop.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use clap::Args;
use relaycast_core::Name;
use tokio::sync::Notify;

use crate::common::parse_name;

/// `relaycast origin` flags for live publishers (channels and keys come from `--push`).
#[derive(Args, Debug, Clone)]
pub struct PublishArgs {
    /// Accept RTMP publishers (OBS, ffmpeg -f flv) on ADDR [default with no ADDR: 0.0.0.0:1935]:
    /// rtmp://HOST/live/CHANNEL with the stream key as the key, or rtmp://HOST/live and
    /// CHANNEL?key=KEY as the key. Channels and keys are the --push ones.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "0.0.0.0:1935")]
    pub rtmp: Option<SocketAddr>,
    /// Accept SRT publishers (MPEG-TS) on UDP ADDR [default with no ADDR: 0.0.0.0:9000], stream
    /// id `publish:CHANNEL:KEY` or `#!::r=CHANNEL,m=publish,s=KEY`.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "0.0.0.0:9000")]
    pub srt: Option<SocketAddr>,
    /// SRT encryption passphrase (10-79 characters); publishers must use the same.
    #[arg(long, value_name = "TEXT")]
    pub srt_passphrase: Option<String>,
    /// SRT receive latency in milliseconds: how long SRT may wait to recover lost packets.
    #[arg(long, default_value_t = 120)]
    pub srt_latency_ms: u64,
    /// A new publisher on a channel that already has one takes it over (the old one is cut off)
    /// instead of being refused.
    #[arg(long)]
    pub takeover: bool,
    /// Seconds without new media after which a channel shows as offline in /api/v1/channels.
    #[arg(long, default_value_t = 10)]
    pub publisher_timeout: u64,
}

impl Default for PublishArgs {
    fn default() -> Self {
        Self {
            rtmp: None,
            srt: None,
            srt_passphrase: None,
            srt_latency_ms: 120,
            takeover: false,
            publisher_timeout: 10,
        }
    }
}

/// The publish channels of an origin and who is publishing each.
pub struct Publishing {
    slots: BTreeMap<Name, Mutex<Slot>>,
    takeover: bool,
    next_id: AtomicU64,
}

struct Slot {
    key: String,
    /// The live publisher: its id and how to tell it to stop.
    current: Option<(u64, Arc<Notify>)>,
    /// Publishes so far (the second and later are reconnects).
    publishes: u64,
}

/// Why a publisher was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// This node takes no published channels at all.
    NoChannels,
    BadName(String),
    Unknown(Name),
    WrongKey(Name),
    /// Another publisher is live on the channel (and `--takeover` is off).
    Busy(Name),
}

impl Refusal {
    /// The HTTP status for this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoChannels | Self::Unknown(_) => StatusCode::NOT_FOUND,
            Self::BadName(_) => StatusCode::BAD_REQUEST,
            Self::WrongKey(_) => StatusCode::FORBIDDEN,
            Self::Busy(_) => StatusCode::CONFLICT,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoChannels => {
                write!(f, "this node does not accept published streams (only an origin with --push does)")
            }
            Self::BadName(e) => write!(f, "channel name: {e}"),
            Self::Unknown(c) => write!(f, "no publish channel named {c}; declare it with --push {c}=KEY"),
            Self::WrongKey(c) => write!(f, "wrong stream key for channel {c}"),
            Self::Busy(c) => write!(
                f,
                "channel {c} already has a live publisher (stop it first, or start the origin with --takeover)"
            ),
        }
    }
}

/// A publisher's hold on a channel; released when dropped.
pub struct Claim {
    publishing: Arc<Publishing>,
    pub channel: Name,
    id: u64,
    stop: Arc<Notify>,
}

impl Claim {
    /// Resolves when another publisher took the channel over.
    pub async fn taken_over(&self) {
        self.stop.notified().await;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(slot) = self.publishing.slots.get(&self.channel) {
            let mut slot = slot.lock().expect("slot lock");
            if slot.current.as_ref().is_some_and(|(id, _)| *id == self.id) {
                slot.current = None;
            }
        }
    }
}

impl Publishing {
    /// Channels and their stream keys; `takeover` lets a new publisher replace a live one.
    pub fn new(keys: &BTreeMap<Name, String>, takeover: bool) -> Arc<Self> {
        let slots = keys
            .iter()
            .map(|(name, key)| (name.clone(), Mutex::new(Slot { key: key.clone(), current: None, publishes: 0 })))
            .collect();
        Arc::new(Self { slots, takeover, next_id: AtomicU64::new(1) })
    }

    /// Whether `key` is `channel`'s stream key (for uploads that need no publisher slot). A
    /// wrong key is logged with the channel and `peer`.
    pub fn check_key(&self, channel: &str, key: &str, peer: &str) -> Result<Name, Refusal> {
        if self.slots.is_empty() {
            return Err(Refusal::NoChannels);
        }
        let name = parse_name(channel).map_err(Refusal::BadName)?;
        let Some(slot) = self.slots.get(&name) else { return Err(Refusal::Unknown(name)) };
        let expected = slot.lock().expect("slot lock").key.clone();
        if !relaycast_core::node::constant_time_eq(expected.as_bytes(), key.as_bytes()) {
            tracing::warn!(channel = %name, %peer, "publish refused: wrong stream key");
            metrics::counter!("relaycast_publish_refused_total", "channel" => name.to_string(), "reason" => "key")
                .increment(1);
            return Err(Refusal::WrongKey(name));
        }
        Ok(name)
    }

    /// Check the key and take the channel for a live publisher (`protocol` from `peer`).
    pub fn claim(self: &Arc<Self>, channel: &str, key: &str, peer: &str, protocol: &str) -> Result<Claim, Refusal> {
        let name = self.check_key(channel, key, peer)?;
        let slot = self.slots.get(&name).expect("checked above");
        let mut slot = slot.lock().expect("slot lock");
        if let Some((_, stop)) = &slot.current {
            if !self.takeover {
                tracing::warn!(channel = %name, %peer, protocol, "publish refused: the channel already has a publisher");
                metrics::counter!("relaycast_publish_refused_total", "channel" => name.to_string(), "reason" => "busy")
                    .increment(1);
                return Err(Refusal::Busy(name));
            }
            tracing::warn!(channel = %name, %peer, protocol, "new publisher takes the channel over (--takeover)");
            stop.notify_one();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(Notify::new());
        slot.current = Some((id, stop.clone()));
        slot.publishes += 1;
        let reconnect = slot.publishes > 1;
        // Counted from 0 at the first publish, so dashboards see the series before a reconnect.
        metrics::counter!("relaycast_publisher_reconnects_total", "channel" => name.to_string())
            .increment(u64::from(reconnect));
        tracing::info!(channel = %name, %peer, protocol, reconnect, "publisher live");
        Ok(Claim { publishing: self.clone(), channel: name, id, stop })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publishing(takeover: bool) -> Arc<Publishing> {
        let keys = BTreeMap::from([(Name::new("cam").unwrap(), "k1".to_string())]);
        Publishing::new(&keys, takeover)
    }

    #[test]
    fn keys_are_checked_and_one_publisher_at_a_time() {
        let p = publishing(false);
        assert_eq!(p.claim("cam", "nope", "1.2.3.4", "rtmp").err(), Some(Refusal::WrongKey(Name::new("cam").unwrap())));
        assert!(matches!(p.claim("tv", "k1", "peer", "rtmp"), Err(Refusal::Unknown(_))));
        assert!(matches!(p.claim("../x", "k1", "peer", "rtmp"), Err(Refusal::BadName(_))));
        let first = p.claim("cam", "k1", "peer", "rtmp").unwrap();
        assert!(matches!(p.claim("cam", "k1", "peer", "srt"), Err(Refusal::Busy(_))));
        drop(first);
        assert!(p.claim("cam", "k1", "peer", "rtmp").is_ok(), "free again once the first one left");
        assert!(Publishing::new(&BTreeMap::new(), false).check_key("cam", "k1", "peer") == Err(Refusal::NoChannels));
    }

    #[tokio::test]
    async fn takeover_stops_the_first_publisher() {
        let p = publishing(true);
        let first = p.claim("cam", "k1", "a", "rtmp").unwrap();
        let second = p.claim("cam", "k1", "b", "rtmp").unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(1), first.taken_over()).await.expect("told to stop");
        drop(first);
        // The first one leaving does not free the second one's slot.
        assert!(has_publisher(&p));
        drop(second);
        assert!(!has_publisher(&p));
    }

    fn has_publisher(p: &Arc<Publishing>) -> bool {
        p.slots.get(&Name::new("cam").unwrap()).unwrap().lock().unwrap().current.is_some()
    }
}
