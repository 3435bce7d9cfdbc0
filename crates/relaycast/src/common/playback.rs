//! Signed playback URLs (F71): who may watch a `signed` channel.
//!
//! A token is `{channel}~{expiry}~{ip}~{mac}`: the channel it opens, its Unix expiry in seconds,
//! the client address it is bound to (empty for any) and an HMAC-SHA256 over those three with
//! the cluster's playback key, in hex. Every field but the MAC is readable so an edge can say
//! *why* a token is refused; the MAC is checked first (in constant time), so what the reason
//! says is what was signed. `~` appears in neither channel names nor addresses, and like every
//! other character of a token needs no escaping in a URL.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result, bail};
use relaycast_core::Name;
use ring::hmac;

use crate::common::signing::{hex, write_private};

/// The query parameter that carries a token.
pub const PARAM: &str = "token";
const DOMAIN: &str = "relaycast-playback-v1";

/// The key the cluster shares to issue and check playback tokens.
pub struct PlaybackKey {
    key: hmac::Key,
}

impl std::fmt::Debug for PlaybackKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlaybackKey(..)")
    }
}

/// Why a request for a signed channel is refused (the one-line reason of the 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("channel {0} needs a signed link (?token=...); ask the site that sent you here for one")]
    Missing(Name),
    #[error("the playback token is malformed (expected channel~expiry~ip~signature)")]
    Malformed,
    #[error("the playback token's signature does not match (altered, or signed with another key)")]
    Tampered,
    #[error("the playback token opens channel {token}, not {asked}")]
    WrongChannel { token: String, asked: Name },
    #[error("the playback token expired {0} s ago; get a new link")]
    Expired(u64),
    #[error("the playback token is bound to another client address")]
    WrongAddress,
    #[error("channel {0} is signed but this node has no playback key (--playback-key)")]
    NoKey(Name),
}

impl PlaybackKey {
    /// The key in `path` (64 hex digits), created with 32 random bytes if the file is missing
    /// (what an origin does on its first start).
    pub fn load_or_create(path: &Path) -> Result<Self> {
        if !path.exists() {
            let mut secret = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret)
                .map_err(|_| anyhow::anyhow!("no system randomness for a playback key"))?;
            write_private(path, format!("{}\n", hex(&secret)).as_bytes())?;
            tracing::info!(key = %path.display(), "created a playback key; copy it to every edge and the tracker");
        }
        Self::load(path)
    }

    /// The key in `path`; an error says what is wrong with the file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading playback key {}", path.display()))?;
        let text = text.trim();
        if text.len() < 32 || !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("playback key {} must hold at least 32 hex digits (16 bytes)", path.display());
        }
        let secret: Vec<u8> = (0..text.len() / 2)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex checked"))
            .collect();
        Ok(Self { key: hmac::Key::new(hmac::HMAC_SHA256, &secret) })
    }

    /// A token opening `channel` until `expires_s` (Unix seconds), for `ip` only when given.
    pub fn token(&self, channel: &Name, expires_s: u64, ip: Option<IpAddr>) -> String {
        let ip = ip.map(|a| a.to_string()).unwrap_or_default();
        let tag = hmac::sign(&self.key, signed_text(channel.as_str(), expires_s, &ip).as_bytes());
        format!("{channel}~{expires_s}~{ip}~{}", hex(tag.as_ref()))
    }

    /// AES-128 key `index` of `channel` (F7), derived so every edge holding the playback key
    /// can serve it without keys travelling through the tree.
    pub fn content_key(&self, channel: &Name, index: u64) -> [u8; 16] {
        let tag = hmac::sign(&self.key, format!("relaycast-aes128-v1\n{channel}\n{index}").as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&tag.as_ref()[..16]);
        key
    }

    /// Whether `token` lets `client` watch `channel` at `now_s`.
    pub fn check(&self, token: &str, channel: &Name, now_s: u64, client: IpAddr) -> Result<(), Refusal> {
        let mut fields = token.split('~');
        let (Some(for_channel), Some(expires), Some(ip), Some(mac), None) =
            (fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(Refusal::Malformed);
        };
        let expires_s: u64 = expires.parse().map_err(|_| Refusal::Malformed)?;
        let mac = unhex(mac).ok_or(Refusal::Malformed)?;
        hmac::verify(&self.key, signed_text(for_channel, expires_s, ip).as_bytes(), &mac)
            .map_err(|_| Refusal::Tampered)?;
        if for_channel != channel.as_str() {
            return Err(Refusal::WrongChannel { token: for_channel.to_string(), asked: channel.clone() });
        }
        if now_s > expires_s {
            return Err(Refusal::Expired(now_s - expires_s));
        }
        // Compare as addresses: a v4 client may reach a dual-stack listener as ::ffff:a.b.c.d.
        if !ip.is_empty() && ip.parse::<IpAddr>().ok().map(canonical) != Some(canonical(client)) {
            return Err(Refusal::WrongAddress);
        }
        Ok(())
    }
}

fn signed_text(channel: &str, expires_s: u64, ip: &str) -> String {
    format!("{DOMAIN}\n{channel}\n{expires_s}\n{ip}")
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len() / 2).map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()).collect()
}

/// The token in a query string, percent-decoded (players may escape `~` and `:`).
pub fn token_in(query: Option<&str>) -> Option<String> {
    let raw = query?.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == PARAM)?.1;
    percent_decode(raw)
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = (bytes.next()? as char).to_digit(16)?;
            let lo = (bytes.next()? as char).to_digit(16)?;
            out.push((hi * 16 + lo) as u8);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// A duration like `7200`, `90s`, `30m`, `2h` or `1d`, in seconds.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a duration (e.g. 7200, 90s, 30m, 2h, 1d)"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => return Err(format!("unknown unit {other:?} in {s:?} (use s, m, h or d)")),
    };
    match n.checked_mul(unit) {
        Some(0) | None => Err(format!("{s:?} must be a positive duration")),
        Some(secs) => Ok(secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> PlaybackKey {
        PlaybackKey { key: hmac::Key::new(hmac::HMAC_SHA256, &[byte; 32]) }
    }

    #[test]
    fn a_token_opens_its_channel_until_it_expires_and_every_forgery_is_named() {
        let (k, cam) = (key(1), Name::new("cam").unwrap());
        let here: IpAddr = "127.0.0.1".parse().unwrap();
        let t = k.token(&cam, 1_000, None);
        assert_eq!(k.check(&t, &cam, 999, here), Ok(()));
        assert_eq!(k.check(&t, &cam, 1_060, here), Err(Refusal::Expired(60)));
        let other = Name::new("other").unwrap();
        assert!(matches!(k.check(&t, &other, 999, here), Err(Refusal::WrongChannel { .. })));
        assert_eq!(key(2).check(&t, &cam, 999, here), Err(Refusal::Tampered));
        let later = t.replacen("~1000~", "~9000~", 1);
        assert_eq!(k.check(&later, &cam, 999, here), Err(Refusal::Tampered));
        let renamed = t.replacen("cam~", "other~", 1);
        assert_eq!(k.check(&renamed, &other, 999, here), Err(Refusal::Tampered));
        for junk in ["", "cam", "cam~1~~zz", "cam~x~~00", "a~b~c~d~e"] {
            assert!(k.check(junk, &cam, 0, here).is_err(), "{junk:?}");
        }
        let bound = k.token(&cam, 1_000, Some(here));
        assert_eq!(k.check(&bound, &cam, 0, "::ffff:127.0.0.1".parse().unwrap()), Ok(()));
        assert_eq!(k.check(&bound, &cam, 0, "127.0.0.2".parse().unwrap()), Err(Refusal::WrongAddress));
    }

    #[test]
    fn a_created_key_file_is_private_and_loads_as_the_same_key() {
        let dir = std::env::temp_dir().join(format!("relaycast-playback-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("playback.key");
        let _ = std::fs::remove_file(&path);
        let created = PlaybackKey::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let cam = Name::new("cam").unwrap();
        let token = created.token(&cam, 10, None);
        assert_eq!(PlaybackKey::load(&path).unwrap().check(&token, &cam, 1, IpAddr::from([127, 0, 0, 1])), Ok(()));
        std::fs::write(&path, "not hex").unwrap();
        assert!(PlaybackKey::load(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tokens_are_found_in_escaped_queries_and_ttls_read_like_people_write_them() {
        assert_eq!(token_in(Some("_HLS_msn=3&token=cam%7E9~~ab")).as_deref(), Some("cam~9~~ab"));
        assert_eq!(token_in(Some("s=1")), None);
        assert_eq!(parse_ttl("7200"), Ok(7200));
        assert_eq!(parse_ttl("2h"), Ok(7200));
        assert_eq!(parse_ttl("1d"), Ok(86_400));
        assert!(parse_ttl("0").is_err() && parse_ttl("2w").is_err() && parse_ttl("h").is_err());
    }
}
