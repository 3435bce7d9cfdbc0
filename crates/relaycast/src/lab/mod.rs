//! `relaycast lab TOPOLOGY.toml` (F60, F61): an emulated network of real processes on one
//! machine. Every host of the topology — origin, relays, a broadcaster (ffmpeg), viewers
//! (`relaycast watch`) — is a real process on 127.0.0.1; every connection between two hosts runs
//! through a user-space proxy that applies both hosts' links (delay, rate, loss; see `link.rs`
//! and docs/LAB.md). Each run writes raw logs, a summary JSON and a report with pictures into
//! `results/<name>-<time>/`.

mod budget;
mod chaos;
mod experiment;
pub mod link;
mod procs;
mod topology;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;

use self::experiment::run_once;
use self::topology::Topology;

const TOKEN: &str = "relaycast-lab";
const CHANNEL: &str = "cam";
const PUSH_KEY: &str = "lab-key";

#[derive(Args, Debug, Clone)]
pub struct LabArgs {
    /// Topology file (see lab/*.toml).
    pub topology: PathBuf,
    /// Parent folder of the results folder.
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Override the topology's duration_s (seconds viewers watch).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Override the sweep's viewer counts, e.g. `--counts 1,20`.
    #[arg(long, value_delimiter = ',')]
    pub counts: Vec<usize>,
}

pub async fn run(args: LabArgs) -> Result<()> {
    let mut topo = Topology::load(&args.topology)?;
    if let Some(d) = args.duration {
        topo.duration_s = d;
    }
    if let Some(sweep) = topo.sweep.as_mut()
        && !args.counts.is_empty()
    {
        sweep.counts = args.counts.iter().copied().filter(|c| *c > 0).collect();
    }
    let stamp =
        relaycast_core::playlist::iso8601_utc(crate::common::wall_ms()).replace([':', '.'], "").replace('T', "-");
    let dir = args.results.join(format!("{}-{}", topo.name, &stamp[..17]));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!("lab {}: results in {}", topo.name, dir.display());
    let Some(sweep) = topo.sweep.clone() else {
        let summary = run_once(&topo, &dir).await?;
        println!("{}", serde_json::to_string_pretty(&summary["viewers"])?);
        println!("results: {}", dir.display());
        return Ok(());
    };
    let mut rows = Vec::new();
    for &count in &sweep.counts {
        let mut t = topo.clone();
        for h in t.hosts.iter_mut().filter(|h| sweep.hosts.contains(&h.name)) {
            h.count = count;
        }
        let sub = dir.join(format!("viewers-{count}"));
        std::fs::create_dir_all(&sub)?;
        eprintln!("--- {count} viewer(s) per host ---");
        let summary = run_once(&t, &sub).await?;
        rows.push(json!({"viewers": count, "origin": summary["origin"], "qoe": summary["viewers"]}));
    }
    std::fs::write(dir.join("sweep.json"), serde_json::to_vec_pretty(&rows)?)?;
    sweep_chart(&rows, &dir.join("origin-load.svg"))?;
    println!("{}", serde_json::to_string_pretty(&rows)?);
    println!("results: {}", dir.display());
    Ok(())
}

/// Origin egress against audience size: to viewers directly (HTTP) and to relays (QUIC).
fn sweep_chart(rows: &[serde_json::Value], out: &Path) -> Result<()> {
    use plotters::prelude::*;
    let pts = |key: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .map(|r| (r["viewers"].as_f64().unwrap_or(0.0), r["origin"][key].as_f64().unwrap_or(0.0) / 1e6))
            .collect()
    };
    let (direct, tier) = (pts("http_egress_bytes"), pts("peer_egress_bytes"));
    let max_x = direct.iter().map(|p| p.0).fold(1.0, f64::max);
    let max_y = direct.iter().chain(&tier).map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(out, (800, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Origin egress vs audience size", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_x * 1.05, 0.0..max_y)?;
    chart.configure_mesh().x_desc("viewers per group").y_desc("origin egress (MB)").draw()?;
    chart
        .draw_series(LineSeries::new(direct.clone(), RED.stroke_width(2)))?
        .label("viewers on the origin directly (HTTP)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart.draw_series(direct.iter().map(|p| Circle::new(*p, 4, RED.filled())))?;
    chart
        .draw_series(LineSeries::new(tier.clone(), BLUE.stroke_width(2)))?
        .label("viewers behind a relay tier (QUIC to relays)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart.draw_series(tier.iter().map(|p| Circle::new(*p, 4, BLUE.filled())))?;
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.9)).draw()?;
    root.present()?;
    Ok(())
}
