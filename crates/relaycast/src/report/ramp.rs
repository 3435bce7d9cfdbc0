//! `relaycast report --ramp RESULTS.json -o DIR`: the server-side ABR figure — stall ratio and
//! mean delivered bitrate against the number of viewers, one line per adaptation mode (server-side
//! ABR, fixed top rendition, client-side ABR), from `bench/server_abr.py`'s results:
//!
//! ```json
//! {"modes": {"server ABR": [{"viewers": 1, "stall_ratio": 0.0, "mean_kbps": 1350}, ...], ...}}
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use plotters::prelude::*;
use serde::Deserialize;

use super::charts::{WIDTH, log_colour, nice_ceiling};

#[derive(Deserialize)]
struct Ramp {
    modes: std::collections::BTreeMap<String, Vec<Point>>,
}

#[derive(Deserialize)]
struct Point {
    viewers: f64,
    stall_ratio: f64,
    mean_kbps: f64,
}

const HEIGHT: u32 = 380;

/// Draw `ramp.svg` into `out` from the results file; returns the SVG's path.
pub fn write(results: &Path, out: &Path) -> Result<PathBuf> {
    let text = std::fs::read_to_string(results).with_context(|| format!("reading {}", results.display()))?;
    let ramp: Ramp = serde_json::from_str(&text).with_context(|| {
        format!("{} is not a ramp results file (expected {{\"modes\": {{...}}}})", results.display())
    })?;
    if ramp.modes.values().all(|p| p.is_empty()) {
        bail!("{} has no data points", results.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join("ramp.svg");
    std::fs::write(&path, svg(&ramp)?).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn svg(ramp: &Ramp) -> Result<String> {
    let points = || ramp.modes.values().flatten();
    let x_max = nice_ceiling(points().map(|p| p.viewers).fold(1.0, f64::max));
    let stall_max = nice_ceiling(points().map(|p| p.stall_ratio).fold(0.05, f64::max) * 1.1).min(1.0);
    let kbps_max = nice_ceiling(points().map(|p| p.mean_kbps).fold(100.0, f64::max) * 1.1);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH * 2 / 2 + 300, HEIGHT + 40)).into_drawing_area();
        root.fill(&WHITE)?;
        let (panels, legend) = root.split_vertically(HEIGHT);
        let (left, right) = panels.split_horizontally((WIDTH + 300) / 2);
        let panels = [
            (left, "Stall ratio", "stall time / watch time", stall_max, 0usize),
            (right, "Mean delivered bitrate", "kbit/s", kbps_max, 1usize),
        ];
        for (area, title, y_desc, y_max, which) in panels {
            let mut chart = ChartBuilder::on(&area)
                .caption(title, ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
            chart
                .configure_mesh()
                .light_line_style(RGBColor(0xEE, 0xEE, 0xEE))
                .x_desc("viewers on the edge")
                .y_desc(y_desc)
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&|v| if which == 0 { format!("{v:.2}") } else { format!("{v:.0}") })
                .draw()?;
            for (i, (_, pts)) in ramp.modes.iter().enumerate() {
                let colour = log_colour(i);
                let xy: Vec<(f64, f64)> =
                    pts.iter().map(|p| (p.viewers, if which == 0 { p.stall_ratio } else { p.mean_kbps })).collect();
                chart.draw_series(LineSeries::new(xy.clone(), colour.stroke_width(2)))?;
                chart.draw_series(xy.into_iter().map(|(x, y)| Circle::new((x, y), 4, colour.filled())))?;
            }
        }
        for (i, name) in ramp.modes.keys().enumerate() {
            let x = 80 + i as i32 * 260;
            legend.draw(&Rectangle::new([(x, 14), (x + 28, 18)], log_colour(i).filled()))?;
            legend.draw(&Text::new(name.clone(), (x + 36, 8), ("sans-serif", 16)))?;
        }
        root.present()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_one_line_per_mode_and_refuses_junk() {
        let dir = std::env::temp_dir().join(format!("relaycast-ramp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let results = dir.join("r.json");
        std::fs::write(
            &results,
            r#"{"modes": {"server ABR": [{"viewers": 1, "stall_ratio": 0, "mean_kbps": 1300},
                                          {"viewers": 30, "stall_ratio": 0, "mean_kbps": 500}],
                          "fixed top": [{"viewers": 1, "stall_ratio": 0, "mean_kbps": 1300},
                                        {"viewers": 30, "stall_ratio": 0.5, "mean_kbps": 1300}]}}"#,
        )
        .unwrap();
        let svg = std::fs::read_to_string(write(&results, &dir).unwrap()).unwrap();
        assert!(svg.contains("server ABR") && svg.contains("fixed top") && svg.contains("Stall ratio"));
        assert_eq!(svg.matches("<circle").count(), 8, "two points × two modes × two panels");
        std::fs::write(&results, "{}").unwrap();
        assert!(write(&results, &dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
