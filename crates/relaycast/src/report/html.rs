//! The report's `index.html`: a summary table (one column per log) above the four charts.
//! Self-contained: inline CSS, no scripts, images by relative path.

use std::fmt::Write as _;

use super::charts::{hex, log_colour, ms, short_url, source_colour};
use super::{CHARTS, Entry};

/// Renders the page. `title` is plain text; everything from the logs is escaped.
pub fn page(title: &str, entries: &[Entry]) -> String {
    let mut h = String::new();
    let title = escape(title);
    // Writing to a String cannot fail, so the `write!` results below are ignored.
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n<h1>{title}</h1>\n"
    );
    let _ = writeln!(
        h,
        "<p class=\"meta\">{} QoE log{} from <code>relaycast watch</code>:",
        entries.len(),
        plural(entries.len())
    );
    for e in entries {
        let _ = write!(
            h,
            " {} <code>{}</code> (started {}, {:.1} s);",
            swatch_name(e),
            escape(&e.log.file.display().to_string()),
            utc(e.log.start.unix_ms),
            e.summary.run_ms / 1000.0
        );
    }
    h.pop();
    h.push_str(".</p>\n");

    h.push_str("<h2>Summary</h2>\n");
    summary_table(&mut h, entries);
    let notes: Vec<String> = entries
        .iter()
        .flat_map(|e| e.summary.notes.iter().map(move |n| format!("{}: {}", escape(&e.name), escape(n))))
        .collect();
    if !notes.is_empty() {
        h.push_str("<ul class=\"notes\">\n");
        for n in notes {
            let _ = writeln!(h, "<li>{n}</li>");
        }
        h.push_str("</ul>\n");
    }

    h.push_str("<h2>Charts</h2>\n");
    for (file, alt, caption) in CHARTS {
        let _ = writeln!(h, "<figure><img src=\"{file}\" alt=\"{alt}\"><figcaption>{caption}</figcaption></figure>");
    }
    h.push_str(DEFINITIONS);
    h.push_str("</main>\n</body>\n</html>\n");
    h
}

fn summary_table(h: &mut String, entries: &[Entry]) {
    h.push_str("<table class=\"summary\">\n<thead><tr><th></th>");
    for e in entries {
        let _ = write!(h, "<th>{}</th>", swatch_name(e));
    }
    h.push_str("</tr></thead>\n<tbody>\n");

    let mut row = |name: &str, cell: &dyn Fn(&Entry) -> String| {
        let _ = write!(h, "<tr><th scope=\"row\">{name}</th>");
        for e in entries {
            let _ = write!(h, "<td>{}</td>", cell(e));
        }
        h.push_str("</tr>\n");
    };
    row("Mode", &|e| escape(e.log.start.mode.as_deref().unwrap_or("—")));
    row("Sources", &|e| per_source(e, |i, _| e.summary.sources[i].url.as_deref().map_or("—".into(), escape)));
    row("Run time", &|e| format!("{:.1} s", e.summary.run_ms / 1000.0));
    row("Segments", &|e| {
        let mut cell = e.summary.segments.to_string();
        if e.summary.hedged > 0 {
            cell += &format!(" <span class=\"dim\">({} won by a hedge)</span>", e.summary.hedged);
        }
        if e.summary.skipped > 0 {
            cell += &format!(" <span class=\"dim\">({} skipped)</span>", e.summary.skipped);
        }
        if e.summary.peer_bytes > 0 {
            let share = e.summary.peer_bytes as f64 * 100.0 / e.summary.used_bytes.max(1) as f64;
            cell += &format!(" <span class=\"dim\">({share:.0} % of bytes from peers)</span>");
        }
        cell
    });
    row("Stalls", &|e| format!("<span class=\"stalls\">{}</span>", e.summary.stalls));
    row("Total stall time", &|e| {
        format!("<span title=\"{:.0} ms\">{:.2} s</span>", e.summary.stall_ms, e.summary.stall_ms / 1000.0)
    });
    row("Stall ratio", &|e| format!("{:.2} %", e.summary.stall_ratio * 100.0));
    if let Some(first) = entries.first().filter(|_| entries.len() > 1) {
        let name = format!("Stall time vs {}", escape(&first.name));
        row(&name, &|e| {
            if e.index == first.index {
                "<span class=\"dim\">baseline</span>".into()
            } else if first.summary.stall_ms > 0.0 {
                format!("{:+.0} %", (e.summary.stall_ms / first.summary.stall_ms - 1.0) * 100.0)
            } else {
                "—".into()
            }
        });
    }
    row("Mean throughput", &|e| {
        per_source(e, |_, s| s.mean_bps.map_or("—".into(), |b| format!("{:.2} Mbit/s", b / 1e6)))
    });
    row("Bytes", &|e| {
        per_source(e, |_, s| {
            if s.duplicate_bytes > 0 {
                format!("{} <span class=\"dim\">+ {} discarded</span>", mb(s.bytes), mb(s.duplicate_bytes))
            } else {
                mb(s.bytes)
            }
        })
    });
    row("Duplicate bytes", &|e| match e.summary.duplicate_pct {
        Some(pct) => format!("{pct:.2} % <span class=\"dim\">({} of {})</span>", mb(e.summary.duplicate_bytes), {
            mb(e.summary.duplicate_bytes + e.summary.used_bytes)
        }),
        None => "—".into(),
    });
    row("Origin delay p50 / p99", &|e| match (e.summary.delay_p50_ms, e.summary.delay_p99_ms) {
        (Some(p50), Some(p99)) => format!("{} / {}", ms(p50), ms(p99)),
        _ => "—".into(),
    });
    row("Min RTT", &|e| per_source(e, |_, s| s.min_rtt_ms.map_or("—".into(), ms)));
    h.push_str("</tbody>\n</table>\n");
}

/// One line per source, each led by the source's colour and number.
fn per_source(e: &Entry, cell: impl Fn(usize, &super::stats::SourceSummary) -> String) -> String {
    let lines: Vec<String> = e
        .summary
        .sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let tip = s.url.as_deref().map_or_else(|| format!("source {i}"), |u| escape(short_url(u)));
            format!(
                "<span class=\"src\" title=\"{tip}\"><i style=\"background:{}\"></i>{i}</span> {}",
                hex(source_colour(i)),
                cell(i, s)
            )
        })
        .collect();
    lines.join("<br>")
}

fn swatch_name(e: &Entry) -> String {
    format!("<span class=\"log\"><i style=\"background:{}\"></i>{}</span>", hex(log_colour(e.index)), escape(&e.name))
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `YYYY-MM-DD hh:mm:ss UTC` for a Unix time in ms (the core's ISO 8601 formatter, reshaped).
pub fn utc(unix_ms: u64) -> String {
    let iso = relaycast_core::playlist::iso8601_utc(unix_ms); // 2026-11-22T02:13:16.123Z
    format!("{} {} UTC", &iso[..10], &iso[11..19])
}

const STYLE: &str = "
body { margin: 0; background: #f6f7f9; color: #1d232b; font: 15px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 19px; margin: 28px 0 10px; }
.meta { color: #505a66; margin: 0 0 8px; }
code { font-size: 13px; }
table.summary { border-collapse: collapse; background: #fff; box-shadow: 0 1px 3px rgba(0,0,0,.12); font-variant-numeric: tabular-nums; }
table.summary th, table.summary td { padding: 7px 14px; border-bottom: 1px solid #e4e7eb; text-align: left; vertical-align: top; }
table.summary thead th { background: #eef1f4; font-size: 16px; }
table.summary tbody th { font-weight: 600; color: #3a4450; white-space: nowrap; }
table.summary td { min-width: 180px; }
.log i, .src i { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 6px; vertical-align: -1px; }
.src { color: #505a66; font-size: 13px; }
.dim { color: #6b7580; font-size: 13px; }
.notes { color: #8a4b00; }
figure { margin: 0 0 22px; background: #fff; box-shadow: 0 1px 3px rgba(0,0,0,.12); padding: 8px; display: table; max-width: calc(100% - 16px); }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { display: table-caption; caption-side: bottom; color: #505a66; font-size: 14px; padding: 8px 2px 0; }
dl { color: #3a4450; font-size: 14px; }
dt { font-weight: 600; margin-top: 6px; }
dd { margin-left: 18px; }
";

const DEFINITIONS: &str = "<h2>How the numbers are made</h2>
<dl>
<dt>Stall ratio</dt><dd>Total stall time over run time (the <code>end</code> line's time, or the last record's).</dd>
<dt>Mean throughput</dt><dd>Mean of the source's throughput samples; without samples, the source's segment bytes over its download time.</dd>
<dt>Bytes</dt><dd>Bytes of segments delivered to the player, plus bytes fetched and discarded (hedges that lost, cancelled requests).</dd>
<dt>Duplicate bytes</dt><dd>Discarded bytes as a share of all bytes fetched.</dd>
<dt>Origin delay</dt><dd>Time from a segment's origin timestamp to its arrival; p50 and p99 by the nearest-rank method.</dd>
<dt>Min RTT</dt><dd>Lowest round-trip time measured to each source; the dashed lines in the delay chart.</dd>
</dl>
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_escaping() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_315_000_000), "2026-11-22 02:36:40 UTC");
        assert_eq!(escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }
}
