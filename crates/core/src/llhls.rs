//! Low-latency HLS (RFC 8216bis): the media playlist of a CMAF rendition with its parts, and the
//! delivery directives of a blocking playlist reload (`_HLS_msn`, `_HLS_part`).
//!
//! Pure: the shell hands in a snapshot of the window and the part log, and asks whether a held
//! request can be answered yet. URIs are relative: `init.mp4`, `{seq}.m4s`, `{seq}.{part}.m4s`,
//! each in a folder of its segment's rendition when server-side ABR composes the playlist.
//!
//! Delta updates (`_HLS_skip=YES`): a player reloading every part asks for the end of the
//! playlist only; segments more than [`SKIP_TARGETS`] target durations from the end are replaced
//! by one `EXT-X-SKIP` line.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::media::SegmentMeta;
use crate::parts::PartLog;
use crate::playlist::iso8601_utc;

/// How far past the newest segment a blocking request may ask (RFC 8216bis §6.2.5.2: "plus two").
const MSN_AHEAD_LIMIT: u64 = 2;
/// How many parts past the newest a request may ask for (the spec's "Advance Part Limit" is 3).
pub const PART_AHEAD_LIMIT: u32 = 3;
/// CAN-SKIP-UNTIL in target durations (the spec's minimum is six).
pub const SKIP_TARGETS: u32 = 6;

/// No per-segment folders: every file is beside the playlist.
static SAME_FOLDER: BTreeMap<u64, String> = BTreeMap::new();

/// Where another rendition of the channel stands (EXT-X-RENDITION-REPORT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionReport {
    /// Relative URI of its media playlist, e.g. `../low/index.m3u8`.
    pub uri: String,
    pub last_msn: u64,
    pub last_part: Option<u32>,
}

/// A low-latency media playlist.
#[derive(Debug, Clone)]
pub struct LlPlaylist<'a> {
    pub target_duration_s: u32,
    /// The longest part seen (PART-TARGET).
    pub part_target_us: u32,
    /// Complete segments, oldest first, gap-free (the window's live run).
    pub segments: &'a [SegmentMeta],
    pub parts: &'a PartLog,
    pub reports: &'a [RenditionReport],
    /// The folder (relative to the playlist) of each segment's files; segments not named here
    /// are beside the playlist. A change of folder repeats `EXT-X-MAP` with that folder's init.
    pub folders: &'a BTreeMap<u64, String>,
    /// Query appended to every file URI (e.g. a session id), without the `?`; may be empty.
    pub uri_query: &'a str,
    /// A delta update was asked for (`_HLS_skip=YES`).
    pub skip: bool,
}

impl<'a> LlPlaylist<'a> {
    /// The playlist of one rendition's files, beside it, listed in full.
    pub fn new(target_duration_s: u32, part_target_us: u32, segments: &'a [SegmentMeta], parts: &'a PartLog) -> Self {
        Self {
            target_duration_s,
            part_target_us,
            segments,
            parts,
            reports: &[],
            folders: &SAME_FOLDER,
            uri_query: "",
            skip: false,
        }
    }

    pub fn render(&self) -> String {
        let part_target = f64::from(self.part_target_us.max(1000)) / 1e6;
        let target = self.target_duration_s.max(1);
        let mut out = String::with_capacity(1024 + self.segments.len() * 400);
        out.push_str("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
        // Players start three part targets behind the live edge (the spec's SHOULD).
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={:.1},PART-HOLD-BACK={:.3}",
            f64::from(SKIP_TARGETS * target),
            3.0 * part_target
        );
        let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={part_target:.3}");
        let open = self.open_run_seq();
        let (first_seq, first_disc) = match (self.segments.first(), open) {
            (Some(m), _) => (m.seq, m.disc_seq),
            (None, Some(seq)) => (seq, self.parts.run(seq).and_then(|r| r.get(0)).map_or(0, |p| p.meta.disc_seq)),
            (None, None) => (0, 0),
        };
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first_seq}");
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{first_disc}");
        let skipped = if self.skip { self.skippable(open) } else { 0 };
        if skipped > 0 {
            let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
        }
        let mut folder = None;
        let mut prev_disc = self.segments.get(skipped.saturating_sub(1)).map_or(first_disc, |m| m.disc_seq);
        for (i, m) in self.segments.iter().enumerate().skip(skipped) {
            if i > 0 && (m.discontinuity || m.disc_seq != prev_disc) {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            prev_disc = m.disc_seq;
            self.write_map(&mut out, &mut folder, m.seq);
            let start_ms = m.origin_ms.saturating_sub(u64::from(m.duration_us) / 1000);
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601_utc(start_ms));
            self.write_parts(&mut out, m.seq);
            let _ = writeln!(out, "#EXTINF:{:.5},\n{}", f64::from(m.duration_us) / 1e6, self.uri(m.seq, "m4s"));
        }
        if let Some(seq) = open {
            if let Some(first) = self.parts.run(seq).and_then(|r| r.get(0)) {
                if !self.segments.is_empty() && (first.meta.discontinuity || first.meta.disc_seq != prev_disc) {
                    out.push_str("#EXT-X-DISCONTINUITY\n");
                }
                self.write_map(&mut out, &mut folder, seq);
                let start_ms = first.meta.origin_ms.saturating_sub(u64::from(first.meta.duration_us) / 1000);
                let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601_utc(start_ms));
            }
            self.write_parts(&mut out, seq);
        }
        if let Some((seq, index)) = self.next_part() {
            let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"", self.uri(seq, &format!("{index}.m4s")));
        }
        for r in self.reports {
            let _ = write!(out, "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={}", r.uri, r.last_msn);
            if let Some(p) = r.last_part {
                let _ = write!(out, ",LAST-PART={p}");
            }
            out.push('\n');
        }
        out
    }

    /// How many of the oldest segments a delta update leaves out: those that end more than
    /// CAN-SKIP-UNTIL before the end of the playlist.
    fn skippable(&self, open: Option<u64>) -> usize {
        let until = u64::from(SKIP_TARGETS * self.target_duration_s.max(1)) * 1_000_000;
        let open_us: u64 = open
            .and_then(|seq| self.parts.run(seq))
            .map_or(0, |r| r.available().map(|p| u64::from(p.meta.duration_us)).sum());
        let mut after = open_us;
        let mut keep = 0;
        for m in self.segments.iter().rev() {
            if after >= until {
                break;
            }
            after += u64::from(m.duration_us);
            keep += 1;
        }
        self.segments.len() - keep
    }

    /// `EXT-X-MAP` before the first segment listed and wherever the folder changes.
    fn write_map(&self, out: &mut String, current: &mut Option<&'a str>, seq: u64) {
        let folder = self.folders.get(&seq).map_or("", String::as_str);
        if *current != Some(folder) {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", self.file_uri(folder, "init.mp4"));
            *current = Some(folder);
        }
    }

    /// The URI of segment `seq`'s file `{seq}.{rest}`.
    fn uri(&self, seq: u64, rest: &str) -> String {
        let folder = self.folders.get(&seq).map_or("", String::as_str);
        self.file_uri(folder, &format!("{seq}.{rest}"))
    }

    fn file_uri(&self, folder: &str, file: &str) -> String {
        let mut uri = String::with_capacity(folder.len() + file.len() + self.uri_query.len() + 2);
        if !folder.is_empty() {
            uri.push_str(folder);
            uri.push('/');
        }
        uri.push_str(file);
        if !self.uri_query.is_empty() {
            uri.push('?');
            uri.push_str(self.uri_query);
        }
        uri
    }

    /// The segment being made, if its parts continue the listed segments without a gap.
    fn open_run_seq(&self) -> Option<u64> {
        let run = self.parts.runs().next_back().filter(|r| !r.is_complete())?;
        let continues = self.segments.last().is_none_or(|l| l.seq + 1 == run.seq);
        (continues && run.available().next().is_some()).then_some(run.seq)
    }

    /// The part after the last one listed (the preload hint).
    fn next_part(&self) -> Option<(u64, u32)> {
        match self.open_run_seq() {
            Some(seq) => Some((seq, self.parts.run(seq)?.available().count() as u32)),
            None => self.segments.last().map(|l| (l.seq + 1, 0)),
        }
    }

    fn write_parts(&self, out: &mut String, seq: u64) {
        let Some(run) = self.parts.run(seq) else { return };
        for p in run.available() {
            let _ = write!(
                out,
                "#EXT-X-PART:DURATION={:.5},URI=\"{}\"",
                f64::from(p.meta.duration_us) / 1e6,
                self.uri(seq, &format!("{}.m4s", p.meta.index))
            );
            if p.meta.independent {
                out.push_str(",INDEPENDENT=YES");
            }
            out.push('\n');
        }
    }
}

/// The delivery directives of a playlist request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    pub msn: Option<u64>,
    pub part: Option<u32>,
    /// `_HLS_skip=YES` (or `v2`): a delta update.
    pub skip: bool,
}

/// Read `_HLS_msn`, `_HLS_part` and `_HLS_skip` from a query string (other parameters are ignored).
///
/// # Errors
/// A value that is not a number, or `_HLS_part` without `_HLS_msn` (the spec requires both).
pub fn parse_directives(query: &str) -> Result<Directives, String> {
    let mut d = Directives::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "_HLS_msn" => {
                d.msn = Some(value.parse().map_err(|_| format!("_HLS_msn={value:?} is not a media sequence number"))?)
            }
            "_HLS_part" => {
                d.part = Some(value.parse().map_err(|_| format!("_HLS_part={value:?} is not a part index"))?)
            }
            "_HLS_skip" => {
                d.skip = match value {
                    "YES" | "v2" => true,
                    _ => return Err(format!("_HLS_skip={value:?} is neither YES nor v2")),
                }
            }
            _ => {}
        }
    }
    if d.part.is_some() && d.msn.is_none() {
        return Err("_HLS_part needs _HLS_msn".into());
    }
    Ok(d)
}

/// Whether a blocking request can be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// The playlist already holds what was asked for.
    Ready,
    /// Hold the request until the node stores more.
    Wait,
    /// Asked for something too far ahead to wait for (answer 400 with this reason).
    TooFar(String),
}

/// Decide a blocking request against the newest complete segment and the part log.
pub fn blocking_state(newest: Option<u64>, parts: &PartLog, d: Directives) -> Block {
    let Some(msn) = d.msn else { return Block::Ready };
    let newest_seq = parts.runs().next_back().map(|r| r.seq).max(newest);
    let Some(newest_seq) = newest_seq else { return Block::Wait };
    if msn > newest_seq + MSN_AHEAD_LIMIT {
        return Block::TooFar(format!(
            "_HLS_msn={msn} is more than {MSN_AHEAD_LIMIT} segments past the newest ({newest_seq})"
        ));
    }
    if newest.is_some_and(|n| n >= msn) {
        return Block::Ready;
    }
    let Some(part) = d.part else {
        // A later segment already in the making also means segment `msn` is over.
        return if parts.runs().any(|r| r.seq > msn && r.available().next().is_some()) {
            Block::Ready
        } else {
            Block::Wait
        };
    };
    if parts.runs().any(|r| r.seq > msn && r.available().next().is_some()) {
        return Block::Ready;
    }
    let have = parts.run(msn).map_or(0, |r| r.available().count() as u32);
    if part < have {
        return Block::Ready;
    }
    if part > have + PART_AHEAD_LIMIT {
        return Block::TooFar(format!(
            "_HLS_part={part} of segment {msn} is more than {PART_AHEAD_LIMIT} parts past the newest ({have} held)"
        ));
    }
    Block::Wait
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::media::{Part, PartMeta};

    fn log_with(parts: &[(u64, u32, bool)]) -> PartLog {
        let mut log = PartLog::new(4);
        for &(seq, index, last) in parts {
            let meta = PartMeta {
                seq,
                index,
                disc_seq: 0,
                discontinuity: false,
                duration_us: 333_000,
                independent: index == 0,
                last,
                origin_ms: 1_764_800_000_000 + seq * 1000 + u64::from(index) * 333,
            };
            log.push(Part { meta, data: Bytes::from_static(b"x"), signature: None }).unwrap();
        }
        log
    }

    fn seg(seq: u64) -> SegmentMeta {
        SegmentMeta {
            seq,
            disc_seq: 0,
            discontinuity: false,
            duration_us: 999_000,
            origin_ms: 1_764_800_000_999 + seq * 1000,
        }
    }

    #[test]
    fn playlist_lists_parts_of_recent_segments_the_open_one_and_a_preload_hint() {
        let log = log_with(&[(4, 0, false), (4, 1, false), (4, 2, true), (5, 0, false), (5, 1, false)]);
        let segments = [seg(3), seg(4)];
        let reports = [RenditionReport { uri: "../low/index.m3u8".into(), last_msn: 5, last_part: Some(1) }];
        let p = LlPlaylist { reports: &reports, ..LlPlaylist::new(1, 333_000, &segments, &log) };
        let text = p.render();
        assert!(
            text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=6.0,PART-HOLD-BACK=0.999\n"),
            "{text}"
        );
        assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.333\n"));
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:3\n"));
        assert!(text.contains("#EXT-X-MAP:URI=\"init.mp4\"\n"));
        assert!(!text.contains("\"3.0.m4s\""), "segment 3's parts are gone from the log");
        assert!(text.contains("#EXT-X-PART:DURATION=0.33300,URI=\"4.0.m4s\",INDEPENDENT=YES\n"));
        assert!(text.contains("#EXT-X-PART:DURATION=0.33300,URI=\"4.2.m4s\"\n#EXTINF:0.99900,\n4.m4s\n"));
        assert!(text.contains("URI=\"5.1.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"5.2.m4s\"\n"), "{text}");
        assert!(text.ends_with("#EXT-X-RENDITION-REPORT:URI=\"../low/index.m3u8\",LAST-MSN=5,LAST-PART=1\n"));
        // Parsed by an independent reader.
        let parsed = m3u8_parse_segments(&text);
        assert_eq!(parsed, ["3.m4s", "4.m4s"]);
    }

    #[test]
    fn delta_updates_skip_old_segments_and_folders_repeat_the_map() {
        let log = log_with(&[(9, 0, false), (9, 1, false)]);
        let segments: Vec<SegmentMeta> = (1..=8).map(seg).collect();
        let full = LlPlaylist::new(1, 333_000, &segments, &log);
        assert!(!full.render().contains("#EXT-X-SKIP"));
        let delta = LlPlaylist { skip: true, ..full.clone() }.render();
        // 0.666 s of open parts plus six 0.999 s segments reach CAN-SKIP-UNTIL = 6 s: 2 skipped.
        assert!(delta.contains("#EXT-X-MEDIA-SEQUENCE:1\n"), "{delta}");
        assert!(delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=2\n#EXT-X-MAP:URI=\"init.mp4\"\n"), "{delta}");
        assert_eq!(m3u8_parse_segments(&delta), ["3.m4s", "4.m4s", "5.m4s", "6.m4s", "7.m4s", "8.m4s"]);

        let folders: BTreeMap<u64, String> =
            (1..=9).map(|s| (s, if s < 8 { "low" } else { "high" }.to_string())).collect();
        let abr = LlPlaylist { folders: &folders, uri_query: "s=ab", ..full }.render();
        assert!(abr.contains("#EXT-X-MAP:URI=\"low/init.mp4?s=ab\"\n"), "{abr}");
        assert!(abr.contains("#EXTINF:0.99900,\nlow/7.m4s?s=ab\n#EXT-X-MAP:URI=\"high/init.mp4?s=ab\"\n"), "{abr}");
        assert!(
            abr.contains("URI=\"high/9.1.m4s?s=ab\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"high/9.2.m4s?s=ab\""),
            "{abr}"
        );
        assert_eq!(abr.matches("#EXT-X-MAP").count(), 2, "{abr}");
    }

    /// The URIs after EXTINF lines (what a player that ignores parts downloads).
    fn m3u8_parse_segments(text: &str) -> Vec<&str> {
        let lines: Vec<&str> = text.lines().collect();
        lines.windows(2).filter(|w| w[0].starts_with("#EXTINF")).map(|w| w[1]).collect()
    }

    #[test]
    fn blocking_requests_wait_for_the_part_and_refuse_the_far_future() {
        let log = log_with(&[(4, 0, false), (4, 1, false), (4, 2, true), (5, 0, false)]);
        let d = |msn, part| Directives { msn: Some(msn), part, skip: false };
        assert_eq!(blocking_state(Some(4), &log, Directives::default()), Block::Ready);
        assert_eq!(blocking_state(Some(4), &log, d(4, None)), Block::Ready);
        assert_eq!(blocking_state(Some(4), &log, d(5, Some(0))), Block::Ready);
        assert_eq!(blocking_state(Some(4), &log, d(5, Some(1))), Block::Wait);
        assert_eq!(blocking_state(Some(4), &log, d(5, None)), Block::Wait);
        assert_eq!(blocking_state(Some(4), &log, d(6, Some(0))), Block::Wait);
        assert!(matches!(blocking_state(Some(4), &log, d(8, None)), Block::TooFar(_)));
        assert!(matches!(blocking_state(Some(4), &log, d(5, Some(9))), Block::TooFar(_)));
        assert_eq!(blocking_state(Some(4), &log, d(1, Some(0))), Block::Ready, "the past is answered at once");
    }

    #[test]
    fn directives_are_validated() {
        assert_eq!(
            parse_directives("_HLS_msn=12&_HLS_part=3"),
            Ok(Directives { msn: Some(12), part: Some(3), skip: false })
        );
        assert!(parse_directives("_HLS_skip=YES").unwrap().skip);
        assert!(parse_directives("_HLS_skip=maybe").is_err());
        assert_eq!(parse_directives("token=abc"), Ok(Directives::default()));
        assert!(parse_directives("_HLS_msn=-1").is_err());
        assert!(parse_directives("_HLS_msn=1&_HLS_part=x").is_err());
        assert!(parse_directives("_HLS_part=2").is_err());
        assert!(parse_directives("_HLS_msn=99999999999999999999999").is_err());
    }
}
