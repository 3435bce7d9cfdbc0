//! The latency budget of a viewer's path: where a segment's time goes, stage by stage, from the
//! origin having it to the viewer's last byte.
//!
//! Every node remembers when it had each recent segment (`/api/v1/arrivals`); the viewer's QoE
//! log has, per segment, when its playlist first listed it, when it asked, its first and last
//! byte, and its delay from the origin's timestamp. Each stage is the median over segments of
//! the time that stage added (zero when a later event came first, e.g. a low-latency viewer
//! asking before the segment was whole).

use std::collections::BTreeMap;
use std::fmt::Write;

/// When one node had each segment: seq → (origin timestamp, when the node had it), Unix ms.
pub type Arrivals = BTreeMap<u64, (u64, u64)>;

/// One stage's median contribution, ms.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stage {
    pub stage: String,
    pub ms: f64,
}

/// `path`: each node from the origin to the watched server, with its arrivals. `log`: the
/// viewer's QoE log records.
pub fn budget(path: &[(String, Arrivals)], log: &[serde_json::Value]) -> Vec<Stage> {
    let mut names: Vec<String> = path.windows(2).map(|w| format!("{} → {}", w[0].0, w[1].0)).collect();
    names.extend(["playlist lists it", "viewer asks", "first byte", "last byte"].map(String::from));
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
    for r in log.iter().filter(|r| r["type"] == "segment" && r["from"] == "edge") {
        let Some(times) = segment_times(path, r) else { continue };
        let mut reached = times[0];
        for (i, t) in times[1..].iter().enumerate() {
            samples[i].push((t - reached).max(0.0));
            reached = reached.max(*t);
        }
    }
    names
        .into_iter()
        .zip(samples)
        .map(|(stage, mut v)| {
            v.sort_by(f64::total_cmp);
            Stage { stage, ms: v.get(v.len() / 2).copied().unwrap_or(0.0) }
        })
        .collect()
}

/// Times of one segment's events, ms after the origin had it: each node on the path, then the
/// viewer's listed, request, first byte and last byte.
fn segment_times(path: &[(String, Arrivals)], r: &serde_json::Value) -> Option<Vec<f64>> {
    let seq = r["seq"].as_u64()?;
    let (origin_ms, _) = *path.last()?.1.get(&seq)?;
    let mut times = Vec::with_capacity(path.len() + 4);
    for (_, arrivals) in path {
        let (_, stored) = arrivals.get(&seq)?;
        times.push(stored.saturating_sub(origin_ms) as f64);
    }
    // The viewer's clock is relative to its start: anchor it on the delay it logged at `done_ms`.
    let delay = r["origin_delay_ms"].as_f64()?;
    let done = r["done_ms"].as_f64()?;
    for key in ["listed_ms", "request_ms", "first_byte_ms"] {
        times.push(delay - (done - r[key].as_f64()?));
    }
    times.push(delay);
    Some(times)
}

/// A horizontal stacked bar per path, one colour per stage kind, with the stage values written
/// in a legend under each bar.
pub fn svg(rows: &[(String, Vec<Stage>)]) -> String {
    // Hops in blues and greens (one per depth), the viewer's stages in fixed colours.
    const HOPS: [&str; 4] = ["#4e79a7", "#59a14f", "#76b7b2", "#8cd17d"];
    let colour = |k: usize, stage: &str| match stage {
        "playlist lists it" => "#9c755f",
        "viewer asks" => "#bab0ac",
        "first byte" => "#edc948",
        "last byte" => "#f28e2b",
        _ => HOPS[k % HOPS.len()],
    };
    let widest = rows.iter().map(|(_, s)| s.iter().map(|x| x.ms).sum::<f64>()).fold(1.0, f64::max);
    let (left, width, row_h) = (150.0, 620.0, 70.0);
    let height = 40.0 + row_h * rows.len() as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="800" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<text x="10" y="20" font-size="14">Latency budget: median ms per stage, origin to viewer (total {widest:.0} ms max)</text>"#
    );
    for (i, (label, stages)) in rows.iter().enumerate() {
        let y = 35.0 + row_h * i as f64;
        let _ = writeln!(out, r#"<text x="10" y="{}">{}</text>"#, y + 16.0, escape(label));
        let mut x = left;
        let mut legend = Vec::new();
        for (k, s) in stages.iter().enumerate() {
            let w = s.ms / widest * width;
            let colour = colour(k, &s.stage);
            let _ = writeln!(
                out,
                r#"<rect x="{x:.1}" y="{y}" width="{w:.1}" height="22" fill="{colour}"><title>{}: {:.0} ms</title></rect>"#,
                escape(&s.stage),
                s.ms
            );
            x += w;
            legend.push(format!("{} {:.0}", s.stage, s.ms));
        }
        let _ =
            writeln!(out, r#"<text x="{left}" y="{}" font-size="10">{}</text>"#, y + 38.0, escape(&legend.join(" · ")));
    }
    out.push_str("</svg>\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn stages_add_up_to_the_delay_and_never_go_negative() {
        let node = |stored: u64| BTreeMap::from([(7u64, (1_000u64, stored))]);
        let path = vec![("origin".to_string(), node(1_000)), ("edge".to_string(), node(1_300))];
        let seg = json!({"type": "segment", "from": "edge", "seq": 7, "origin_delay_ms": 900.0, "done_ms": 10_000.0,
                         "listed_ms": 9_500.0, "request_ms": 9_450.0, "first_byte_ms": 9_700.0});
        let b = budget(&path, &[seg]);
        let ms: Vec<f64> = b.iter().map(|s| s.ms).collect();
        // origin→edge 300; listed at 400; asked at 350 (before: 0); first byte 600; last 900.
        assert_eq!(ms, [300.0, 100.0, 0.0, 200.0, 300.0]);
        assert_eq!(ms.iter().sum::<f64>(), 900.0);
        assert!(svg(&[("CDN".into(), b)]).contains("<rect"));
    }
}
