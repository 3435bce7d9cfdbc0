//! `relaycast sim SCENARIO.toml`: run the discrete-event simulator (`relaycast-sim`) on a
//! scenario, print a summary table, and fail when an invariant was violated.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use relaycast_sim::trace::TraceWriter;
use relaycast_sim::{Scenario, Sim};

/// Simulate a scenario: the same core state machines as `origin`/`relay`, over simulated links.
#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// Scenario file (commented examples in scenarios/*.toml).
    pub scenario: PathBuf,
    /// Seed of every random choice (default: the scenario's `seed`, else a fresh one). Printed,
    /// so any run can be replayed exactly.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write segment, parent-change and fault events to this file: CSV if it ends in .csv, JSON
    /// lines otherwise.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Override the scenario's simulated time, seconds.
    #[arg(long)]
    pub duration_s: Option<f64>,
    /// Override the scenario's number of relays (of viewers, in a `[swarm]` scenario).
    #[arg(long)]
    pub relays: Option<usize>,
    /// Override the scenario's fraction of relays with viewers.
    #[arg(long)]
    pub viewer_fraction: Option<f64>,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs outside the tokio runtime (`block_in_place`): the simulator is one busy thread.
pub fn run(args: SimArgs) -> Result<()> {
    if relaycast_sim::flash::FlashScenario::is_flash(&args.scenario) {
        return run_flash(&args);
    }
    // A `[swarm]` scenario simulates viewer-to-viewer sharing (issue 8) instead of the tree.
    let text =
        std::fs::read_to_string(&args.scenario).with_context(|| format!("reading {}", args.scenario.display()))?;
    if text.lines().any(|l| l.trim() == "[swarm]") {
        return run_swarm(&args, &text);
    }
    let mut scenario = Scenario::load(&args.scenario)?;
    if let Some(d) = args.duration_s {
        scenario.duration_s = d;
    }
    if let Some(n) = args.relays {
        scenario.topology.relays = n;
    }
    if let Some(f) = args.viewer_fraction {
        scenario.workload.viewer_fraction = f;
    }
    scenario.validate()?;
    let seed = args.seed.or(scenario.seed).unwrap_or_else(fresh_seed);
    // Output errors (a closed pipe, as with `| head`) must not stop the run or panic.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "relaycast sim {} (seed {seed})", args.scenario.display());
    let mut sim = Sim::from_scenario(&scenario, seed)?;
    if let Some(path) = &args.trace {
        let writer = TraceWriter::create(path).with_context(|| format!("creating {}", path.display()))?;
        sim.trace_to(writer);
    }
    if !args.quiet {
        sim.on_progress(|p| {
            eprint!(
                "\r  t = {:6.1} / {:.0} s   {:7.1} M events   {:5.1} s wall   {} nodes up   ",
                p.simulated.as_secs_f64(),
                p.end.as_secs_f64(),
                p.events as f64 / 1e6,
                p.wall.as_secs_f64(),
                p.live_nodes
            );
            let _ = std::io::stderr().flush();
        });
    }
    let report = sim.run();
    if !args.quiet {
        eprintln!();
    }
    if let (Some(writer), Some(path)) = (sim.take_trace(), &args.trace) {
        let lines = writer.finish().with_context(|| format!("writing {}", path.display()))?;
        let _ = writeln!(out, "trace: {lines} lines in {}", path.display());
    }
    let _ = write!(out, "{report}");
    if let Some(line) = memory_line() {
        let _ = writeln!(out, "{line}");
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        let _ = writeln!(out, "summary: {}", path.display());
    }
    if !report.ok() {
        bail!("{} invariant violation(s); replay with --seed {seed}", report.violation_count);
    }
    Ok(())
}

/// "memory: peak 212 MB, 188 MB of it on huge pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=1)"
/// (Linux; see `common::memory::restart_with_huge_pages`), so a timing can be read with what
/// backed it.
fn memory_line() -> Option<String> {
    let kb = |text: &str, key: &str| {
        text.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
    };
    let peak = kb(&std::fs::read_to_string("/proc/self/status").ok()?, "VmHWM:")?;
    let huge = std::fs::read_to_string("/proc/self/smaps_rollup").ok().and_then(|t| kb(&t, "AnonHugePages:"));
    let tunables = std::env::var("GLIBC_TUNABLES").map_or_else(|_| "unset".to_string(), |t| format!("={t}"));
    let (peak, huge) = (peak / 1024, huge.unwrap_or(0) / 1024);
    Some(format!("memory: peak {peak} MB, {huge} MB of it on huge pages (GLIBC_TUNABLES{tunables})"))
}

/// A seed for runs that did not ask for one (printed, so the run can be replayed).
fn fresh_seed() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    (nanos as u64 ^ u64::from(std::process::id()).rotate_left(32)) % 1_000_000
}

/// A flash-crowd scenario (`[flash]` table): the traffic manager's policy with and without
/// secondaries, compared.
fn run_flash(args: &SimArgs) -> Result<()> {
    let scenario = relaycast_sim::flash::FlashScenario::load(&args.scenario).map_err(anyhow::Error::msg)?;
    let seed = args.seed.or(scenario.seed).unwrap_or_else(fresh_seed);
    let mut out = std::io::stdout();
    let _ = writeln!(out, "relaycast sim {} (seed {seed})", args.scenario.display());
    let report = scenario.run(seed);
    let _ = write!(out, "{report}");
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        let _ = writeln!(out, "summary: {}", path.display());
    }
    Ok(())
}

/// `relaycast sim scenarios/swarm-10k.toml`: sharing vs CDN-only on one seed.
fn run_swarm(args: &SimArgs, text: &str) -> Result<()> {
    let mut s = relaycast_sim::swarm::SwarmScenario::from_toml(text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.scenario.display()))?;
    if let Some(seed) = args.seed {
        s.seed = seed;
    }
    if let Some(d) = args.duration_s {
        s.duration_s = d;
    }
    if let Some(n) = args.relays {
        s.viewers = n;
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "relaycast sim {} (seed {}, {} viewers)", args.scenario.display(), s.seed, s.viewers);
    let (p2p, cdn) = relaycast_sim::swarm::run_swarm(&s);
    let _ = writeln!(out, "{p2p}\n{cdn}");
    if let Some(path) = &args.json {
        let json = serde_json::json!({ "scenario": s, "p2p": p2p, "cdn_only": cdn });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
