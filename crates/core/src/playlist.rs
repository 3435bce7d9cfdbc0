//! Pure HLS playlist rendering (RFC 8216): live media playlists and master playlists.
//!
//! Playlists are written by hand rather than with a crate because later features (LL-HLS parts,
//! content steering) need tags no Rust crate writes. Rendering is a pure function of a snapshot of
//! the segment window, so every node renders byte-identical playlists for the same window.

use std::fmt::Write;

use crate::media::{RenditionInfo, SegmentMeta};

/// How to render a live media playlist.
#[derive(Clone, Debug)]
pub struct MediaPlaylist<'a> {
    /// EXT-X-TARGETDURATION in whole seconds; must not change over the life of the stream.
    pub target_duration_s: u32,
    /// Prepended to `{seq}.ts` in every segment URI (e.g. `"src/"` or `""`).
    pub uri_prefix: &'a str,
    /// Query string appended to segment URIs (without `?`), e.g. a signed token; empty for none.
    pub uri_query: &'a str,
    /// AES-128 keys of an encrypted channel (F7); `None`: segments are in the clear.
    pub keys: Option<KeyUris<'a>>,
}

/// Where an encrypted channel's keys are, and how often they change.
#[derive(Clone, Copy, Debug)]
pub struct KeyUris<'a> {
    pub segments_per_key: u32,
    /// Prepended to `{index}.key` (e.g. `"../keys/"`).
    pub uri_prefix: &'a str,
}

impl MediaPlaylist<'_> {
    /// Render a live playlist from a gap-free, oldest-first run of segments
    /// (see [`crate::window::SegmentWindow::live_run`]).
    pub fn render(&self, run: &[SegmentMeta]) -> String {
        let mut out = String::with_capacity(128 + run.len() * 96);
        out.push_str("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", self.target_duration_s.max(1));
        let (first_seq, first_disc) = run.first().map_or((0, 0), |m| (m.seq, m.disc_seq));
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first_seq}");
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{first_disc}");
        let mut key_listed = None;
        for (i, m) in run.iter().enumerate() {
            // The first segment's discontinuity is already counted by DISCONTINUITY-SEQUENCE.
            if i > 0 && (m.discontinuity || m.disc_seq != run[i - 1].disc_seq) {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if let Some(k) = self.keys {
                // A key applies until the next EXT-X-KEY; with no IV attribute each segment's
                // IV is its media sequence number (RFC 8216 §5.2).
                let index = crate::encryption::key_index(m.seq, k.segments_per_key);
                if key_listed != Some(index) {
                    let _ = writeln!(out, "#EXT-X-KEY:METHOD=AES-128,URI=\"{}{index}.key\"", k.uri_prefix);
                    key_listed = Some(index);
                }
            }
            let start_ms = m.origin_ms.saturating_sub(u64::from(m.duration_us) / 1000);
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601_utc(start_ms));
            let _ = writeln!(out, "#EXTINF:{:.3},", f64::from(m.duration_us) / 1e6);
            let _ = write!(out, "{}{}.ts", self.uri_prefix, m.seq);
            if !self.uri_query.is_empty() {
                let _ = write!(out, "?{}", self.uri_query);
            }
            out.push('\n');
        }
        out
    }
}

/// The smallest valid EXT-X-TARGETDURATION for these segments: the longest, rounded to the
/// nearest second (RFC 8216 §4.3.3.1), at least 1.
pub fn target_duration_s(metas: impl IntoIterator<Item = SegmentMeta>) -> u32 {
    let longest_us = metas.into_iter().map(|m| m.duration_us).max().unwrap_or(0);
    (longest_us.saturating_add(500_000) / 1_000_000).max(1)
}

/// Append `query` (without `?`) to every URI a playlist lists: URI lines and `URI="..."`
/// attributes (maps, parts, preload hints, rendition reports, keys, media). What an edge does to
/// carry a viewer's playback token into everything the viewer fetches next.
pub fn with_query(playlist: &str, query: &str) -> String {
    if query.is_empty() {
        return playlist.to_string();
    }
    let mut out = String::with_capacity(playlist.len() + 64 * query.len().min(256));
    for line in playlist.lines() {
        if line.is_empty() {
        } else if !line.starts_with('#') {
            push_with_query(&mut out, line, query);
        } else {
            append_to_uri_attributes(&mut out, line, query);
        }
        out.push('\n');
    }
    out
}

fn push_with_query(out: &mut String, uri: &str, query: &str) {
    out.push_str(uri);
    out.push(if uri.contains('?') { '&' } else { '?' });
    out.push_str(query);
}

/// A tag line with the query added inside each `URI="..."` attribute (not `SERVER-URI`, which
/// names the steering server, not a file of this stream).
fn append_to_uri_attributes(out: &mut String, line: &str, query: &str) {
    let mut rest = line;
    while let Some(at) = rest.find("URI=\"") {
        let is_attribute = at > 0 && matches!(rest.as_bytes()[at - 1], b':' | b',');
        let value_start = at + "URI=\"".len();
        let Some(len) = rest[value_start..].find('"') else { break };
        out.push_str(&rest[..value_start]);
        let value = &rest[value_start..value_start + len];
        if is_attribute {
            push_with_query(out, value, query);
        } else {
            out.push_str(value);
        }
        rest = &rest[value_start + len..];
    }
    out.push_str(rest);
}

/// Render a master playlist listing `renditions`, each at `{name}/index.m3u8`.
/// Renditions without a known bandwidth are listed with `fallback_bandwidth`.
pub fn render_master(renditions: &[RenditionInfo], fallback_bandwidth: u32) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    for r in renditions {
        let _ = write!(out, "#EXT-X-STREAM-INF:BANDWIDTH={}", r.bandwidth.unwrap_or(fallback_bandwidth));
        if let Some((w, h)) = r.resolution {
            let _ = write!(out, ",RESOLUTION={w}x{h}");
        }
        if let Some(codecs) = &r.codecs {
            let _ = write!(out, ",CODECS=\"{codecs}\"");
        }
        let _ = writeln!(out, "\n{}/index.m3u8", r.name);
    }
    out
}

/// Format Unix milliseconds as an ISO 8601 UTC timestamp with milliseconds,
/// e.g. `2026-11-22T02:13:16.123Z` (what EXT-X-PROGRAM-DATE-TIME expects).
pub fn iso8601_utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem / 60 % 60, rem % 60, unix_ms % 1000)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days` algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Name;

    fn meta(seq: u64, disc_seq: u32, discontinuity: bool) -> SegmentMeta {
        SegmentMeta { seq, disc_seq, discontinuity, duration_us: 2_002_000, origin_ms: 1_700_000_000_000 + seq * 2000 }
    }

    #[test]
    fn dates() {
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso8601_utc(1_795_313_600_000), "2026-11-22T02:13:20.000Z");
    }

    #[test]
    fn media_playlist_slides_with_the_window() {
        let p = MediaPlaylist { target_duration_s: 2, uri_prefix: "src/", uri_query: "", keys: None };
        let a = p.render(&[meta(7, 0, false), meta(8, 0, false), meta(9, 0, false)]);
        assert!(a.contains("#EXT-X-MEDIA-SEQUENCE:7\n"));
        assert!(a.contains("#EXTINF:2.002,\nsrc/7.ts\n"));
        assert!(a.ends_with("src/9.ts\n"));
        assert!(!a.contains("#EXT-X-ENDLIST"), "a live playlist never ends");
        let b = p.render(&[meta(8, 0, false), meta(9, 0, false), meta(10, 0, false)]);
        assert!(b.contains("#EXT-X-MEDIA-SEQUENCE:8\n"));
        assert!(!b.contains("src/7.ts"));
        assert_eq!(a.matches("#EXTINF").count(), 3);
        assert_eq!(a.matches("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:").count(), 3);
    }

    #[test]
    fn discontinuities_are_marked_and_counted() {
        let p = MediaPlaylist { target_duration_s: 2, uri_prefix: "", uri_query: "t=abc", keys: None };
        let run = [meta(4, 1, true), meta(5, 1, false), meta(6, 2, true), meta(7, 2, false)];
        let s = p.render(&run);
        assert!(s.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n"));
        // Only the loop point inside the window gets a tag; the first one is in the sequence.
        assert_eq!(s.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
        let tag = s.find("#EXT-X-DISCONTINUITY\n").unwrap();
        assert!(s[tag..].contains("6.ts?t=abc"));
        assert!(!s[tag..].contains("5.ts"));
    }

    #[test]
    fn target_duration_rounds_to_nearest() {
        assert_eq!(target_duration_s([meta(1, 0, false)]), 2);
        let long = SegmentMeta { duration_us: 4_600_000, ..meta(1, 0, false) };
        assert_eq!(target_duration_s([meta(1, 0, false), long]), 5);
        assert_eq!(target_duration_s([]), 1);
    }

    #[test]
    fn master_lists_every_rendition() {
        let r = vec![
            RenditionInfo {
                name: Name::new("720p").unwrap(),
                bandwidth: Some(3_000_000),
                resolution: Some((1280, 720)),
                codecs: Some("avc1.64001f,mp4a.40.2".into()),
                init: None,
            },
            RenditionInfo::named(Name::new("240p").unwrap()),
        ];
        let s = render_master(&r, 500_000);
        assert!(s.contains(
            "#EXT-X-STREAM-INF:BANDWIDTH=3000000,RESOLUTION=1280x720,CODECS=\"avc1.64001f,mp4a.40.2\"\n720p/index.m3u8\n"
        ));
        assert!(s.contains("#EXT-X-STREAM-INF:BANDWIDTH=500000\n240p/index.m3u8\n"));
    }

    #[test]
    fn an_encrypted_playlist_names_each_key_where_it_starts() {
        let keys = Some(KeyUris { segments_per_key: 3, uri_prefix: "../keys/" });
        let p = MediaPlaylist { target_duration_s: 2, uri_prefix: "", uri_query: "", keys };
        let s = p.render(&(4..=9).map(|seq| meta(seq, 0, false)).collect::<Vec<_>>());
        let tags: Vec<&str> = s.lines().filter(|l| l.starts_with("#EXT-X-KEY")).collect();
        assert_eq!(
            tags,
            [
                "#EXT-X-KEY:METHOD=AES-128,URI=\"../keys/1.key\"",
                "#EXT-X-KEY:METHOD=AES-128,URI=\"../keys/2.key\"",
                "#EXT-X-KEY:METHOD=AES-128,URI=\"../keys/3.key\""
            ]
        );
        // The key tag comes right before the first segment it covers.
        assert!(s.contains("URI=\"../keys/2.key\"\n#EXT-X-PROGRAM-DATE-TIME"));
        let at = s.find("keys/2.key").unwrap();
        assert!(s[at..].find("\n6.ts").unwrap() < s[at..].find("\n7.ts").unwrap());
        assert!(!s[..at].contains("\n6.ts"), "segment 6 is listed after its key");
    }

    #[test]
    fn a_query_reaches_every_listed_uri_and_nothing_else() {
        let playlist = "#EXTM3U\n#EXT-X-CONTENT-STEERING:SERVER-URI=\"/steer?x=1\",PATHWAY-ID=\"a\"\n\
            #EXT-X-MAP:URI=\"init.mp4\"\n#EXT-X-PART:DURATION=0.2,URI=\"7.0.m4s\",INDEPENDENT=YES\n\
            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"7.1.m4s\"\n\
            #EXT-X-RENDITION-REPORT:URI=\"../lo/index.m3u8\",LAST-MSN=7\n#EXTINF:1.000,\n6.m4s\n\n\
            auto/index.m3u8?s=ab\n";
        let out = with_query(playlist, "token=T");
        assert!(out.contains("SERVER-URI=\"/steer?x=1\""), "the steering server is left alone: {out}");
        for uri in ["init.mp4?token=T", "7.0.m4s?token=T", "7.1.m4s?token=T", "../lo/index.m3u8?token=T"] {
            assert!(out.contains(&format!("URI=\"{uri}\"")), "{uri} in {out}");
        }
        assert!(out.contains("\n6.m4s?token=T\n"));
        assert!(out.contains("\nauto/index.m3u8?s=ab&token=T\n"));
        assert!(out.contains("#EXTINF:1.000,\n"), "tags without URIs are unchanged");
        assert_eq!(with_query(playlist, ""), playlist);
    }
}
