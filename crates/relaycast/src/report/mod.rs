//! `relaycast report`: charts and a summary page from the QoE logs `relaycast watch` writes.
//!
//! Reads each log ([`log`]), sums it up ([`stats`]), draws four SVG charts ([`charts`]) and writes
//! an `index.html` that shows them under a summary table ([`html`]). Synchronous and offline: it
//! only reads the logs and writes the output directory.

mod charts;
mod html;
mod log;
mod ramp;
mod stats;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use self::log::QoeLog;
use self::stats::Summary;

/// Arguments of `relaycast report`.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// QoE logs (JSON lines) written by `relaycast watch`. Each log is named by its `label`
    /// (else its file name) and drawn in its own colour.
    #[arg(required_unless_present = "ramp", value_name = "LOG")]
    pub logs: Vec<PathBuf>,
    /// Instead of logs: draw ramp.svg (stall ratio and mean delivered bitrate against viewers,
    /// per ABR mode) from a results file of `bench/server_abr.py`.
    #[arg(long, value_name = "JSON", conflicts_with = "logs")]
    pub ramp: Option<PathBuf>,
    /// Directory to write the report into; created if missing, files in it overwritten.
    #[arg(short = 'o', long = "out", value_name = "DIR")]
    pub out: PathBuf,
    /// Page title [default: "Relaycast QoE report: LABEL vs LABEL…"].
    #[arg(long, value_name = "TEXT")]
    pub title: Option<String>,
}

/// One log in the report, in command-line order.
pub struct Entry {
    /// Position on the command line; picks the log's colour.
    pub index: usize,
    /// Unique display name: the label, or the file stem, disambiguated if two logs share it.
    pub name: String,
    pub log: QoeLog,
    pub summary: Summary,
}

/// The charts, in page order: file name, alt text, caption (HTML).
const CHARTS: [(&str, &str, &str); 4] = [
    (
        "throughput.svg",
        "Throughput per source over time, one panel per log",
        "Delivery rate of each source over time, one panel per log. The dashed line is the stream's \
         bitrate: a source below it cannot keep up on its own. Shaded bands are stalls.",
    ),
    (
        "buffer.svg",
        "Playback buffer level over time, one line per log",
        "Seconds of media buffered ahead of playback. A line at zero is a stall.",
    ),
    (
        "stalls.svg",
        "Stall timeline, one row per log",
        "Every stall as a bar at its time and length; the grey line is the run.",
    ),
    (
        "delay_cdf.svg",
        "CDF of per-segment origin delay with each log's minimum RTT",
        "Share of segments that arrived within a given time of their origin timestamp. The dashed \
         lines mark each log's lowest RTT to a source: the gap to them is time spent waiting for \
         the segment to exist, queueing and transferring.",
    ),
];

/// Runs `relaycast report`: writes the report and prints the path of its `index.html`.
pub fn run(args: ReportArgs) -> Result<()> {
    if let Some(results) = &args.ramp {
        println!("{}", ramp::write(results, &args.out)?.display());
        return Ok(());
    }
    let index = write(&args)?;
    println!("{}", index.display());
    Ok(())
}

/// Writes the four charts and `index.html` into `args.out`; returns the page's path.
pub fn write(args: &ReportArgs) -> Result<PathBuf> {
    let mut logs = Vec::with_capacity(args.logs.len());
    for path in &args.logs {
        let (log, warnings) = QoeLog::read(path)?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        logs.push(log);
    }
    let names = unique_names(&logs);
    let entries: Vec<Entry> = logs
        .into_iter()
        .zip(names)
        .enumerate()
        .map(|(index, (log, name))| {
            let summary = Summary::of(&log);
            for note in &summary.notes {
                tracing::warn!("{}: {note}", log.file.display());
            }
            Entry { index, name, log, summary }
        })
        .collect();

    let out = &args.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating output directory {}", out.display()))?;
    let svgs = [
        charts::throughput(&entries)?,
        charts::buffer(&entries)?,
        charts::stalls(&entries)?,
        charts::delay_cdf(&entries)?,
    ];
    for ((file, ..), svg) in CHARTS.iter().zip(svgs) {
        write_file(&out.join(file), &svg)?;
    }
    let title = args.title.clone().unwrap_or_else(|| {
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        format!("Relaycast QoE report: {}", names.join(" vs "))
    });
    let index = out.join("index.html");
    write_file(&index, &html::page(&title, &entries))?;
    Ok(index)
}

fn write_file(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// Each log's name, made unique: a name two logs share gets the file stem, then a number.
fn unique_names(logs: &[QoeLog]) -> Vec<String> {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for log in logs {
        *count.entry(log.name()).or_default() += 1;
    }
    let mut taken: BTreeMap<String, usize> = BTreeMap::new();
    logs.iter()
        .map(|log| {
            let name = log.name();
            let mut name = if count[&name] > 1 {
                let stem = log.file.file_stem().map_or_else(String::new, |s| s.to_string_lossy().into_owned());
                if stem == name { name } else { format!("{name} [{stem}]") }
            } else {
                name
            };
            let seen = taken.entry(name.clone()).or_default();
            *seen += 1;
            if *seen > 1 {
                name = format!("{name} #{seen}");
            }
            name
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(file: &str, label: Option<&str>) -> QoeLog {
        let label = label.map_or(String::new(), |l| format!(",\"label\":\"{l}\""));
        let text = format!("{{\"type\":\"start\",\"unix_ms\":0{label}}}");
        QoeLog::parse(Path::new(file), &text).unwrap().0
    }

    #[test]
    fn names_are_unique() {
        let logs = [
            log("a/run1.jsonl", Some("dual")),
            log("b/run2.jsonl", Some("dual")),
            log("single.jsonl", None),
            log("c/run1.jsonl", Some("dual")),
        ];
        assert_eq!(unique_names(&logs), ["dual [run1]", "dual [run2]", "single", "dual [run1] #2"]);
    }
}
