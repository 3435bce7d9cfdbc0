//! Reading a QoE log: the JSON lines `relaycast watch` writes, one record per line.
//!
//! The reader is forgiving where a viewer's log can legitimately differ (unknown record types and
//! unknown fields from newer writers are ignored, a missing `end` line means the run was cut
//! short) and strict where the numbers would be nonsense (a malformed line, a record naming a
//! source the `start` line does not list, a negative duration): such lines are skipped, each
//! with a warning naming `file:line`. A log without a valid `start` line is an error.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// Most sources a log may name when its `start` line lists none; bounds per-source tables.
const MAX_UNLISTED_SOURCES: usize = 16;

/// One QoE log, parsed: every valid record, grouped by kind, in file order.
#[derive(Debug, Clone)]
pub struct QoeLog {
    /// The log file this came from.
    pub file: PathBuf,
    pub start: Start,
    /// Each source's URL, by source id: the `start` line's, then those `switch` lines add.
    pub sources: Vec<String>,
    /// Minimum RTT measured to each source.
    pub rtts: Vec<Rtt>,
    pub segments: Vec<Segment>,
    pub duplicates: Vec<Duplicate>,
    pub buffer: Vec<Buffer>,
    pub stalls: Vec<Stall>,
    pub throughput: Vec<Throughput>,
    /// Sources added mid-stream.
    pub switches: Vec<Switch>,
    /// Segments the watcher gave up on.
    pub skips: Vec<Skip>,
    /// The closing totals; `None` when the run was cut short.
    pub end: Option<End>,
}

/// The first line of a log: what was watched, and how.
#[derive(Debug, Clone, Deserialize)]
pub struct Start {
    /// Wall-clock time of the start line; every other `*_ms` time is relative to it.
    pub unix_ms: u64,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Rtt {
    pub source: usize,
    /// `null` when the RTT could not be measured; such lines are dropped.
    pub rtt_ms: Option<f64>,
}

/// One segment delivered to the player. (`rendition` and `first_byte_ms` are not used yet.)
#[derive(Debug, Clone, Deserialize)]
pub struct Segment {
    pub seq: u64,
    /// The server it came from; `None` for a segment another viewer shared (`"from": "peer"`).
    pub source: Option<usize>,
    /// `edge` (a server) or `peer`; absent in logs of viewers that do not share.
    #[serde(default)]
    pub from: Option<String>,
    /// When it was asked for; `None` when a peer's copy was at hand without asking.
    pub request_ms: Option<f64>,
    pub done_ms: f64,
    pub bytes: u64,
    pub duration_ms: f64,
    /// Time from the segment's origin timestamp to its arrival; absent when the source gave none.
    #[serde(default)]
    pub origin_delay_ms: Option<f64>,
    #[serde(default)]
    pub hedge: bool,
}

/// Bytes fetched and thrown away: a hedge that lost, or a cancelled request.
#[derive(Debug, Clone, Deserialize)]
pub struct Duplicate {
    pub source: usize,
    pub bytes: u64,
}

/// A playback-buffer level sample.
#[derive(Debug, Clone, Deserialize)]
pub struct Buffer {
    pub t_ms: f64,
    pub level_ms: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Stall {
    pub start_ms: f64,
    pub duration_ms: f64,
}

/// A per-source delivery-rate sample.
#[derive(Debug, Clone, Deserialize)]
pub struct Throughput {
    pub t_ms: f64,
    pub source: usize,
    pub bps: f64,
}

/// A source added mid-stream (the old ones may have been dropped): from now on `source` is `url`.
#[derive(Debug, Clone, Deserialize)]
pub struct Switch {
    pub t_ms: f64,
    pub source: usize,
    pub url: String,
}

/// A segment that expired before it could be fetched.
#[derive(Debug, Clone, Deserialize)]
pub struct Skip {
    pub seq: u64,
}

/// The totals the watcher wrote when it finished; checked against the records.
#[derive(Debug, Clone, Deserialize)]
pub struct End {
    pub t_ms: f64,
    #[serde(default)]
    pub segments: Option<u64>,
    #[serde(default)]
    pub stalls: Option<u64>,
    #[serde(default)]
    pub stall_ms: Option<f64>,
    #[serde(default)]
    pub duplicate_bytes: Option<u64>,
}

/// One line of a log. Types this reader does not know are `Unknown` and ignored.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Record {
    Start(Start),
    Rtt(Rtt),
    Segment(Segment),
    Duplicate(Duplicate),
    Buffer(Buffer),
    Stall(Stall),
    Throughput(Throughput),
    Switch(Switch),
    Skip(Skip),
    End(End),
    #[serde(other)]
    Unknown,
}

/// A line that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    pub reason: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: skipped: {}", self.file.display(), self.line, self.reason)
    }
}

impl QoeLog {
    /// Reads and parses the log at `path`; see [`QoeLog::parse`].
    pub fn read(path: &Path) -> Result<(Self, Vec<Warning>)> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading QoE log {}", path.display()))?;
        Self::parse(path, &text)
    }

    /// Parses the text of a log. Skipped lines come back as warnings; the only error is a log
    /// without a valid `start` line.
    pub fn parse(path: &Path, text: &str) -> Result<(Self, Vec<Warning>)> {
        let mut warnings = Vec::new();
        let mut records = Vec::new();
        let mut start: Option<Start> = None;
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let warn = |reason: String| Warning { file: path.to_path_buf(), line: line_no, reason };
            match serde_json::from_str::<Record>(line) {
                Ok(Record::Start(s)) if start.is_none() => start = Some(s),
                Ok(Record::Start(_)) => warnings.push(warn("a second `start` line (only the first counts)".into())),
                Ok(Record::Unknown) => {}
                Ok(record) => records.push((line_no, record)),
                Err(e) => warnings.push(warn(format!("not a valid QoE record ({e})"))),
            }
        }
        let Some(start) = start else {
            bail!(
                "{}: no valid `start` line, so this is not a QoE log written by `relaycast watch` \
                 (expected a first line like {{\"type\":\"start\",\"unix_ms\":…,\"label\":…,\"sources\":[…]}})",
                path.display()
            );
        };

        let mut log = QoeLog {
            file: path.to_path_buf(),
            sources: start.sources.clone(),
            start,
            rtts: Vec::new(),
            segments: Vec::new(),
            duplicates: Vec::new(),
            buffer: Vec::new(),
            stalls: Vec::new(),
            throughput: Vec::new(),
            switches: Vec::new(),
            skips: Vec::new(),
            end: None,
        };
        // Switches first: a watcher may log a new source's RTT just before the switch itself.
        let (switches, others): (Vec<_>, Vec<_>) =
            records.into_iter().partition(|(_, r)| matches!(r, Record::Switch(_)));
        for (line_no, record) in switches.into_iter().chain(others) {
            if let Err(reason) = log.add(record) {
                warnings.push(Warning { file: path.to_path_buf(), line: line_no, reason });
            }
        }
        warnings.sort_by_key(|w| w.line);
        Ok((log, warnings))
    }

    /// The name the report shows: the log's `label`, else its file stem.
    pub fn name(&self) -> String {
        match &self.start.label {
            Some(label) if !label.trim().is_empty() => label.trim().to_owned(),
            _ => self.file.file_stem().map_or_else(|| "log".to_owned(), |s| s.to_string_lossy().into_owned()),
        }
    }

    /// How many sources the log speaks of: those the `start` line lists, or if it lists none,
    /// one more than the highest source index used.
    pub fn source_count(&self) -> usize {
        let used = self
            .rtts
            .iter()
            .map(|r| r.source)
            .chain(self.segments.iter().filter_map(|s| s.source))
            .chain(self.duplicates.iter().map(|d| d.source))
            .chain(self.throughput.iter().map(|t| t.source))
            .map(|s| s + 1)
            .max()
            .unwrap_or(0);
        self.sources.len().max(used).max(1)
    }

    /// Run length in ms: the `end` line's time, else the latest time any record mentions.
    pub fn run_ms(&self) -> f64 {
        if let Some(end) = &self.end {
            return end.t_ms;
        }
        self.segments
            .iter()
            .map(|s| s.done_ms)
            .chain(self.buffer.iter().map(|b| b.t_ms))
            .chain(self.stalls.iter().map(|s| s.start_ms + s.duration_ms))
            .chain(self.throughput.iter().map(|t| t.t_ms))
            .fold(0.0, f64::max)
    }

    /// Files one record, or says why it makes no sense.
    fn add(&mut self, record: Record) -> Result<(), String> {
        let source_limit = if self.sources.is_empty() { MAX_UNLISTED_SOURCES } else { self.sources.len() };
        let check_source = |source: usize| {
            if source < source_limit {
                Ok(())
            } else {
                Err(format!("source {source} is not one of the {source_limit} sources named so far"))
            }
        };
        let check_time = |what: &str, v: f64| {
            if v.is_finite() && v >= 0.0 { Ok(()) } else { Err(format!("`{what}` is {v}, expected ≥ 0")) }
        };
        match record {
            Record::Rtt(r) => {
                check_source(r.source)?;
                if let Some(rtt) = r.rtt_ms {
                    check_time("rtt_ms", rtt)?;
                    self.rtts.push(r);
                }
            }
            Record::Segment(s) => {
                match (s.source, s.from.as_deref()) {
                    (Some(source), _) => check_source(source)?,
                    (None, Some("peer")) => {}
                    (None, _) => return Err("a segment from a server must name its `source`".into()),
                }
                check_time("done_ms", s.done_ms)?;
                check_time("duration_ms", s.duration_ms)?;
                self.segments.push(s);
            }
            Record::Duplicate(d) => {
                check_source(d.source)?;
                self.duplicates.push(d);
            }
            Record::Buffer(b) => {
                check_time("t_ms", b.t_ms)?;
                check_time("level_ms", b.level_ms)?;
                self.buffer.push(b);
            }
            Record::Stall(s) => {
                check_time("start_ms", s.start_ms)?;
                check_time("duration_ms", s.duration_ms)?;
                self.stalls.push(s);
            }
            Record::Throughput(t) => {
                check_source(t.source)?;
                check_time("t_ms", t.t_ms)?;
                check_time("bps", t.bps)?;
                self.throughput.push(t);
            }
            Record::Switch(w) => {
                check_time("t_ms", w.t_ms)?;
                match w.source.cmp(&self.sources.len()) {
                    std::cmp::Ordering::Less => self.sources[w.source].clone_from(&w.url),
                    std::cmp::Ordering::Equal => self.sources.push(w.url.clone()),
                    std::cmp::Ordering::Greater => {
                        return Err(format!("switch to source {} skips source {}", w.source, self.sources.len()));
                    }
                }
                self.switches.push(w);
            }
            Record::Skip(k) => self.skips.push(k),
            Record::End(e) => {
                check_time("t_ms", e.t_ms)?;
                if self.end.is_some() {
                    return Err("a second `end` line (only the first counts)".into());
                }
                self.end = Some(e);
            }
            // Filed by `parse` before it gets here.
            Record::Start(_) | Record::Unknown => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(QoeLog, Vec<Warning>)> {
        QoeLog::parse(Path::new("t.jsonl"), text)
    }

    #[test]
    fn parses_every_record_kind_and_ignores_unknown_ones() {
        let text = r#"{"type":"start","unix_ms":1795315000000,"label":"dual","mode":"alternate","sources":["a","b"]}
{"type":"rtt","source":0,"rtt_ms":0.4}
{"type":"segment","seq":7,"rendition":"src","source":1,"request_ms":2010.5,"first_byte_ms":2011.2,"done_ms":2050.9,"bytes":512000,"duration_ms":2000,"origin_delay_ms":812,"hedge":false,"future_field":1}
{"type":"duplicate","seq":8,"source":0,"bytes":210000}
{"type":"buffer","t_ms":2100.0,"level_ms":3950}
{"type":"stall","start_ms":15000.0,"duration_ms":1800}
{"type":"throughput","t_ms":3000.0,"source":0,"bps":2500000.0}
{"type":"rtt","source":2,"rtt_ms":0.2}
{"type":"switch","t_ms":4000.0,"source":2,"url":"c"}
{"type":"segment","seq":8,"source":2,"request_ms":4010.5,"done_ms":4050.9,"bytes":512000,"duration_ms":2000,"origin_delay_ms":null}
{"type":"rtt","source":1,"rtt_ms":null}
{"type":"skip","seq":9,"t_ms":5000.0}
{"type":"from_the_future","t_ms":5000.0}

{"type":"end","t_ms":60000.0,"segments":30,"stalls":1,"stall_ms":1800,"bytes":15000000,"duplicate_bytes":210000}
"#;
        let (log, warnings) = parse(text).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(log.name(), "dual");
        assert_eq!(log.start.mode.as_deref(), Some("alternate"));
        // The RTT of source 2 comes before the switch that adds it, as `relaycast watch` writes it.
        assert_eq!((log.rtts.len(), log.segments.len(), log.duplicates.len()), (2, 2, 1));
        assert_eq!((log.switches.len(), log.skips.len()), (1, 1));
        assert_eq!(log.sources, ["a", "b", "c"]);
        assert_eq!(log.segments[1].origin_delay_ms, None);
        assert_eq!((log.buffer.len(), log.stalls.len(), log.throughput.len()), (1, 1, 1));
        assert_eq!(log.segments[0].origin_delay_ms, Some(812.0));
        assert_eq!(log.run_ms(), 60000.0);
        assert_eq!(log.source_count(), 3);
    }

    #[test]
    fn bad_lines_are_skipped_with_their_line_number() {
        let text = "{\"type\":\"start\",\"unix_ms\":0,\"sources\":[\"a\"]}\n\
                    not json\n\
                    {\"type\":\"segment\",\"seq\":1}\n\
                    {\"type\":\"throughput\",\"t_ms\":1.0,\"source\":3,\"bps\":1.0}\n\
                    {\"type\":\"stall\",\"start_ms\":1.0,\"duration_ms\":-5}\n\
                    {\"type\":\"stall\",\"start_ms\":1.0,\"duration_ms\":5}\n";
        let (log, warnings) = parse(text).unwrap();
        let lines: Vec<usize> = warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, [2, 3, 4, 5]);
        assert!(warnings[0].to_string().starts_with("t.jsonl:2: skipped"), "{}", warnings[0]);
        assert!(warnings[2].reason.contains("source 3"), "{}", warnings[2]);
        assert_eq!(log.stalls.len(), 1);
        // Without a label the file stem names the log; without an end line the records bound the run.
        assert_eq!(log.name(), "t");
        assert_eq!(log.run_ms(), 6.0);
    }

    #[test]
    fn a_sharing_viewer_s_peer_segments_count_without_a_source() {
        let text = r#"{"type":"start","unix_ms":0,"label":"p2p","mode":"p2p","sources":["a"]}
{"type":"segment","seq":1,"source":0,"from":"edge","request_ms":10.0,"done_ms":50.0,"bytes":1000,"duration_ms":2000,"origin_delay_ms":90}
{"type":"segment","seq":2,"source":null,"from":"peer","peer":7,"request_ms":null,"done_ms":2050.0,"bytes":3000,"duration_ms":2000,"origin_delay_ms":110}
{"type":"segment","seq":3,"source":null,"request_ms":4000.0,"done_ms":4050.0,"bytes":1000,"duration_ms":2000}
"#;
        let (log, warnings) = parse(text).unwrap();
        assert_eq!(log.segments.len(), 2);
        assert_eq!(warnings.len(), 1, "a server segment without a source is refused: {warnings:?}");
        assert_eq!(log.source_count(), 1);
        let s = super::super::stats::Summary::of(&log);
        assert_eq!((s.segments, s.sources[0].segments, s.sources[0].bytes), (2, 1, 1000));
        assert_eq!((s.used_bytes, s.peer_bytes), (4000, 3000));
        assert_eq!(s.delay_p99_ms, Some(110.0));
    }

    #[test]
    fn no_start_line_is_an_error() {
        let err = parse("{\"type\":\"stall\",\"start_ms\":1.0,\"duration_ms\":5}\n").unwrap_err();
        assert!(err.to_string().contains("no valid `start` line"), "{err}");
        assert!(parse("").is_err());
        assert!(parse("{\"type\":\"start\",\"label\":\"no unix_ms\"}").is_err());
    }
}
