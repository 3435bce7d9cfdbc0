//! `relaycast report` end to end, on two recorded QoE logs (`tests/fixtures/single.jsonl`: one
//! source throttled below the bitrate for 10 s of a 60 s run, 3 stalls, 2860 ms stalled;
//! `dual.jsonl`: two sources with hedging, 2 stalls, 730 ms stalled, 5.30 % duplicate bytes; both
//! written by `tests/fixtures/gen_qoe.py`).
//!
//! Proves that the built binary writes four SVG charts that parse as XML with an `<svg>` root,
//! name both logs and carry real line data (one stall bar per recorded stall in the timeline);
//! that `index.html` shows every chart and the summary numbers of the fixtures; that a log with
//! garbage lines still gives a report while each skipped line is named as `file:line`; and that a
//! file without a `start` line fails with a non-zero exit and says why.
//!
//! XML is checked with `roxmltree` (a dev-dependency): a small, dependency-free, read-only parser
//! that rejects malformed documents, which a hand-written tag counter would not.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::TempDir;

const CHARTS: [&str; 4] = ["throughput.svg", "buffer.svg", "stalls.svg", "delay_cdf.svg"];
/// Colours the report gives the first and second log.
const FIRST_LOG_COLOUR: &str = "#0072B2";
const SECOND_LOG_COLOUR: &str = "#D55E00";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn report(logs: &[&Path], out: &Path) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_relaycast"))
        .arg("report")
        .args(logs)
        .arg("-o")
        .arg(out)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .expect("run relaycast report");
    eprintln!("stderr:\n{}", String::from_utf8_lossy(&output.stderr));
    output
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Parses an SVG, checks its root, and returns its text content and its `<rect>` fills.
fn check_svg(path: &Path, labels: &[&str]) -> Vec<String> {
    let text = read(path);
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{} is not XML: {e}", path.display()));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg", "{}", path.display());

    let words: String = doc.descendants().filter(|n| n.is_text()).filter_map(|n| n.text()).collect();
    for label in labels {
        assert!(words.contains(label), "{} does not name {label}", path.display());
    }
    // Lines are polylines (or paths); at least one must have several points.
    let longest_line = doc
        .descendants()
        .filter_map(|n| match n.tag_name().name() {
            "polyline" => n.attribute("points"),
            "path" => n.attribute("d"),
            _ => None,
        })
        .map(|points| points.split_whitespace().count())
        .max()
        .unwrap_or(0);
    assert!(longest_line >= 2, "{} has no line data", path.display());

    doc.descendants().filter(|n| n.has_tag_name("rect")).filter_map(|n| n.attribute("fill")).map(String::from).collect()
}

#[test]
fn report_from_two_logs_has_charts_and_summary() {
    let dir = TempDir::new("report");
    let out = dir.path().join("nested/report");
    let output = report(&[&fixture("single.jsonl"), &fixture("dual.jsonl")], &out);
    assert!(output.status.success(), "report failed");
    let index = out.join("index.html");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), index.display().to_string(), "prints the page");

    for chart in CHARTS {
        let fills = check_svg(&out.join(chart), &["single", "dual"]);
        if chart == "stalls.svg" {
            let bars = |colour: &str| fills.iter().filter(|f| f.eq_ignore_ascii_case(colour)).count();
            assert_eq!(bars(FIRST_LOG_COLOUR), 3, "one bar per stall of single");
            assert_eq!(bars(SECOND_LOG_COLOUR), 2, "one bar per stall of dual");
        }
    }
    let throughput = read(&out.join("throughput.svg"));
    for source in ["127.0.0.1:8080", "127.0.0.1:8090", "stream bitrate"] {
        assert!(throughput.contains(source), "throughput legend lacks {source}");
    }
    assert!(read(&out.join("delay_cdf.svg")).contains("min RTT 20.4 ms"));

    let html = read(&index);
    for chart in CHARTS {
        assert!(html.contains(&format!("<img src=\"{chart}\"")), "index.html does not show {chart}");
    }
    for expected in [
        // Labels and modes.
        "single",
        "dual",
        ">hedge<",
        // Stall counts, total stall time (shown in s, exact ms in the tooltip), stall ratio.
        "<span class=\"stalls\">3</span>",
        "<span class=\"stalls\">2</span>",
        "title=\"2860 ms\">2.86 s",
        "title=\"730 ms\">0.73 s",
        "4.77 %",
        "1.22 %",
        "-74 %",
        // Duplicate share, delay percentiles, RTTs, bytes.
        "0.00 %",
        "5.30 %",
        "920 ms / 6430 ms",
        "930 ms / 3880 ms",
        "20.4 ms",
        "34.8 ms",
        "0.86 MB discarded",
        "(2 won by a hedge)",
    ] {
        assert!(html.contains(expected), "index.html lacks {expected:?}");
    }
}

#[test]
fn garbage_lines_are_skipped_and_named() {
    let dir = TempDir::new("report-garbage");
    let mut lines: Vec<String> = read(&fixture("dual.jsonl")).lines().map(String::from).collect();
    lines.insert(4, "this is not json".into()); // line 5
    lines.insert(8, r#"{"type":"segment","seq":"nine"}"#.into()); // line 9
    lines.insert(11, r#"{"type":"from_the_future","x":1}"#.into()); // line 12: ignored silently
    let log = dir.path().join("garbled.jsonl");
    std::fs::write(&log, lines.join("\n")).unwrap();

    let out = dir.path().join("out");
    let output = report(&[&log], &out);
    assert!(output.status.success(), "a few bad lines must not stop the report");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("garbled.jsonl:5: skipped"), "warning names line 5");
    assert!(stderr.contains("garbled.jsonl:9: skipped"), "warning names line 9");
    assert!(!stderr.contains("garbled.jsonl:12"), "unknown record types are not warned about");
    let html = read(&out.join("index.html"));
    assert!(html.contains("<span class=\"stalls\">2</span>"), "the good lines still count");
    for chart in CHARTS {
        check_svg(&out.join(chart), &["dual"]);
    }
}

#[test]
fn a_file_without_start_line_fails_clearly() {
    let dir = TempDir::new("report-nostart");
    let text = read(&fixture("single.jsonl"));
    let log = dir.path().join("headless.jsonl");
    std::fs::write(&log, text.lines().skip(1).collect::<Vec<_>>().join("\n")).unwrap();

    let out = dir.path().join("out");
    let output = report(&[&fixture("dual.jsonl"), &log], &out);
    assert!(!output.status.success(), "must fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("headless.jsonl: no valid `start` line"), "names the file and the problem");
    assert!(!out.join("index.html").exists(), "no half report");
}

#[test]
fn help_explains_the_command() {
    let output = Command::new(env!("CARGO_BIN_EXE_relaycast")).args(["report", "--help"]).output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for word in ["QoE logs", "--out <DIR>", "--title <TEXT>", "throughput.svg", "index.html"] {
        assert!(help.contains(word), "--help lacks {word:?}:\n{help}");
    }
}
