//! The numbers of a report: per-log summaries and the small statistics they are made of.

use std::collections::BTreeSet;

use super::log::QoeLog;

/// What the summary table shows for one log.
#[derive(Debug, Clone)]
pub struct Summary {
    pub run_ms: f64,
    pub segments: usize,
    /// Segments won by a hedge request.
    pub hedged: usize,
    /// Segments never delivered: those the watcher logged as skipped, and gaps between the
    /// first and last segment delivered.
    pub skipped: usize,
    pub stalls: usize,
    pub stall_ms: f64,
    /// Stall time over run time, 0..=1.
    pub stall_ratio: f64,
    /// Indexed by source.
    pub sources: Vec<SourceSummary>,
    /// Bytes of delivered segments, all sources (servers and peers).
    pub used_bytes: u64,
    /// Bytes of delivered segments that other viewers shared.
    pub peer_bytes: u64,
    /// Bytes fetched and discarded, all sources.
    pub duplicate_bytes: u64,
    /// Duplicate bytes as a percentage of all bytes fetched; `None` when nothing was fetched.
    pub duplicate_pct: Option<f64>,
    pub delay_p50_ms: Option<f64>,
    pub delay_p99_ms: Option<f64>,
    /// Lowest RTT to any source.
    pub min_rtt_ms: Option<f64>,
    /// Media bitrate of the delivered segments (bits over playback seconds).
    pub stream_bps: Option<f64>,
    /// Places where the `end` line's totals disagree with the records.
    pub notes: Vec<String>,
}

/// One source's share of a log.
#[derive(Debug, Clone, Default)]
pub struct SourceSummary {
    pub url: Option<String>,
    pub segments: usize,
    /// Bytes of delivered segments from this source.
    pub bytes: u64,
    pub duplicate_bytes: u64,
    /// Mean of the throughput samples; without samples, bytes over download time.
    pub mean_bps: Option<f64>,
    pub min_rtt_ms: Option<f64>,
}

impl Summary {
    pub fn of(log: &QoeLog) -> Self {
        let run_ms = log.run_ms();
        let mut sources: Vec<SourceSummary> = (0..log.source_count())
            .map(|i| SourceSummary { url: log.sources.get(i).cloned(), ..Default::default() })
            .collect();
        // Per source: (sum of throughput samples, sample count, download seconds).
        let mut rate = vec![(0.0, 0usize, 0.0); sources.len()];
        let mut peer_bytes = 0;
        for s in &log.segments {
            let Some(source) = s.source else {
                peer_bytes += s.bytes;
                continue;
            };
            let src = &mut sources[source];
            src.segments += 1;
            src.bytes += s.bytes;
            rate[source].2 += (s.done_ms - s.request_ms.unwrap_or(s.done_ms)).max(0.0) / 1000.0;
        }
        for d in &log.duplicates {
            sources[d.source].duplicate_bytes += d.bytes;
        }
        for t in &log.throughput {
            rate[t.source].0 += t.bps;
            rate[t.source].1 += 1;
        }
        for r in &log.rtts {
            let (min, Some(rtt)) = (&mut sources[r.source].min_rtt_ms, r.rtt_ms) else { continue };
            *min = Some(min.map_or(rtt, |m: f64| m.min(rtt)));
        }
        for (src, (sum, n, secs)) in sources.iter_mut().zip(rate) {
            src.mean_bps = if n > 0 {
                Some(sum / n as f64)
            } else if secs > 0.0 {
                Some(src.bytes as f64 * 8.0 / secs)
            } else {
                None
            };
        }

        let used_bytes: u64 = sources.iter().map(|s| s.bytes).sum::<u64>() + peer_bytes;
        let duplicate_bytes: u64 = sources.iter().map(|s| s.duplicate_bytes).sum();
        // A fold from +0.0: `sum` of no floats is -0.0, which would print as "-0.00 s".
        let stall_ms = log.stalls.iter().fold(0.0, |total, s| total + s.duration_ms);
        let delays = sorted(log.segments.iter().filter_map(|s| s.origin_delay_ms));
        let media_secs: f64 = log.segments.iter().map(|s| s.duration_ms / 1000.0).sum();
        let stream_bps = (media_secs > 0.0).then(|| used_bytes as f64 * 8.0 / media_secs);

        let mut notes = Vec::new();
        let mut seqs: Vec<u64> = log.segments.iter().map(|s| s.seq).collect();
        seqs.sort_unstable();
        let repeated = seqs.windows(2).filter(|w| w[0] == w[1]).count();
        if repeated > 0 {
            notes.push(format!("{repeated} segments were delivered more than once"));
        }
        seqs.dedup();
        let mut skipped: BTreeSet<u64> = log.skips.iter().map(|k| k.seq).collect();
        for pair in seqs.windows(2) {
            // Bounded so a corrupt seq cannot make this loop for ever.
            skipped.extend((pair[0] + 1..pair[1]).take(100_000));
        }
        for seq in &seqs {
            skipped.remove(seq);
        }
        if let Some(end) = &log.end {
            let mut check = |what: &str, said: Option<f64>, counted: f64, tolerance: f64| {
                if let Some(said) = said.filter(|said| (said - counted).abs() > tolerance) {
                    notes.push(format!("the `end` line says {said} {what}, the records add up to {counted}"));
                }
            };
            check("segments", end.segments.map(|v| v as f64), log.segments.len() as f64, 0.0);
            check("stalls", end.stalls.map(|v| v as f64), log.stalls.len() as f64, 0.0);
            check("stall ms", end.stall_ms, stall_ms, 1.0);
            check("duplicate bytes", end.duplicate_bytes.map(|v| v as f64), duplicate_bytes as f64, 0.0);
        } else {
            notes.push("no `end` line: the run was cut short".to_owned());
        }

        Summary {
            run_ms,
            segments: log.segments.len(),
            hedged: log.segments.iter().filter(|s| s.hedge).count(),
            skipped: skipped.len(),
            stalls: log.stalls.len(),
            stall_ms,
            stall_ratio: stall_ratio(stall_ms, run_ms),
            min_rtt_ms: sources.iter().filter_map(|s| s.min_rtt_ms).reduce(f64::min),
            sources,
            used_bytes,
            peer_bytes,
            duplicate_bytes,
            duplicate_pct: duplicate_pct(duplicate_bytes, used_bytes),
            delay_p50_ms: percentile(&delays, 50.0),
            delay_p99_ms: percentile(&delays, 99.0),
            stream_bps,
            notes,
        }
    }
}

/// The values, finite ones only, in ascending order.
pub fn sorted(values: impl IntoIterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The `p`th percentile (0..=100) of ascending `sorted` values by the nearest-rank method: the
/// smallest value that at least `p` % of the values are less than or equal to. Always one of the
/// values; `None` for no values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p.clamp(0.0, 100.0) / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The empirical CDF of ascending `sorted` values as the corners of a step line: it starts at
/// (first value, 0), rises to i/n at the i-th value and ends at (last value, 1). Equal values
/// make one step.
pub fn cdf_points(sorted: &[f64]) -> Vec<(f64, f64)> {
    let n = sorted.len() as f64;
    let mut points = Vec::with_capacity(sorted.len() * 2);
    let mut below = 0.0;
    for (i, &v) in sorted.iter().enumerate() {
        if sorted.get(i + 1) == Some(&v) {
            continue;
        }
        let reached = (i + 1) as f64 / n;
        points.push((v, below));
        points.push((v, reached));
        below = reached;
    }
    points
}

/// Stall time as a share of run time, 0..=1 (0 for an empty run).
pub fn stall_ratio(stall_ms: f64, run_ms: f64) -> f64 {
    if run_ms > 0.0 { (stall_ms / run_ms).clamp(0.0, 1.0) } else { 0.0 }
}

/// Discarded bytes as a percentage of all bytes fetched (used + discarded).
pub fn duplicate_pct(duplicate_bytes: u64, used_bytes: u64) -> Option<f64> {
    let total = duplicate_bytes + used_bytes;
    (total > 0).then(|| duplicate_bytes as f64 * 100.0 / total as f64)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v = sorted([5.0, 1.0, 4.0, 2.0, 3.0, f64::NAN]);
        assert_eq!(v, [1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 20.0), Some(1.0));
        assert_eq!(percentile(&v, 21.0), Some(2.0));
        assert_eq!(percentile(&v, 50.0), Some(3.0));
        assert_eq!(percentile(&v, 99.0), Some(5.0));
        assert_eq!(percentile(&v, 100.0), Some(5.0));
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&hundred, 50.0), Some(50.0));
        assert_eq!(percentile(&hundred, 99.0), Some(99.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn cdf_is_a_step_line_from_zero_to_one() {
        assert_eq!(cdf_points(&[]), []);
        assert_eq!(cdf_points(&[3.0]), [(3.0, 0.0), (3.0, 1.0)]);
        assert_eq!(
            cdf_points(&[1.0, 2.0, 2.0, 4.0]),
            [(1.0, 0.0), (1.0, 0.25), (2.0, 0.25), (2.0, 0.75), (4.0, 0.75), (4.0, 1.0)]
        );
    }

    #[test]
    fn stall_ratio_and_duplicate_share() {
        assert_eq!(stall_ratio(1800.0, 60000.0), 0.03);
        assert_eq!(stall_ratio(0.0, 60000.0), 0.0);
        assert_eq!(stall_ratio(5.0, 0.0), 0.0);
        assert_eq!(stall_ratio(90.0, 60.0), 1.0);
        assert_eq!(duplicate_pct(250, 750), Some(25.0));
        assert_eq!(duplicate_pct(0, 750), Some(0.0));
        assert_eq!(duplicate_pct(0, 0), None);
    }

    #[test]
    fn summary_adds_up_a_log() {
        let text = r#"{"type":"start","unix_ms":0,"label":"x","sources":["a","b"]}
{"type":"rtt","source":0,"rtt_ms":3.0}
{"type":"rtt","source":1,"rtt_ms":2.0}
{"type":"rtt","source":1,"rtt_ms":2.5}
{"type":"segment","seq":1,"source":0,"request_ms":0,"done_ms":500,"bytes":500000,"duration_ms":2000,"origin_delay_ms":900}
{"type":"segment","seq":4,"source":1,"request_ms":0,"done_ms":1000,"bytes":500000,"duration_ms":2000,"origin_delay_ms":1100,"hedge":true}
{"type":"duplicate","seq":2,"source":0,"bytes":250000}
{"type":"skip","seq":5,"t_ms":3000}
{"type":"skip","seq":4,"t_ms":3000}
{"type":"throughput","t_ms":500,"source":0,"bps":6000000}
{"type":"throughput","t_ms":1000,"source":0,"bps":2000000}
{"type":"stall","start_ms":5000,"duration_ms":1000}
{"type":"stall","start_ms":7000,"duration_ms":500}
{"type":"end","t_ms":10000,"segments":2,"stalls":3,"stall_ms":1500,"duplicate_bytes":250000}
"#;
        let (log, _) = QoeLog::parse(Path::new("x.jsonl"), text).unwrap();
        let s = Summary::of(&log);
        assert_eq!((s.hedged, s.skipped), (1, 3), "seq 2 and 3 missing, 5 skipped");
        assert_eq!((s.segments, s.stalls, s.stall_ms, s.stall_ratio), (2, 2, 1500.0, 0.15));
        assert_eq!((s.used_bytes, s.duplicate_bytes, s.duplicate_pct), (1_000_000, 250_000, Some(20.0)));
        assert_eq!(s.sources[0].mean_bps, Some(4_000_000.0), "mean of the samples");
        assert_eq!(s.sources[1].mean_bps, Some(4_000_000.0), "no samples: bytes over download time");
        assert_eq!((s.sources[0].bytes, s.sources[0].duplicate_bytes), (500_000, 250_000));
        assert_eq!((s.sources[1].min_rtt_ms, s.min_rtt_ms), (Some(2.0), Some(2.0)));
        assert_eq!((s.delay_p50_ms, s.delay_p99_ms), (Some(900.0), Some(1100.0)));
        assert_eq!(s.stream_bps, Some(2_000_000.0));
        assert_eq!(s.notes, ["the `end` line says 3 stalls, the records add up to 2"]);
    }
}
