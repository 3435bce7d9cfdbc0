//! The live status line of `relaycast watch` on a terminal: buffer level, per-server
//! throughput, stalls. Hidden when stderr is not a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use relaycast_core::buffer::PlayState;
use relaycast_core::viewer::Session;

use super::Summary;

pub struct Status {
    bar: Option<ProgressBar>,
}

impl Status {
    pub fn new(hidden: bool) -> Self {
        if hidden {
            return Self { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(30_000), ProgressDrawTarget::stderr());
        // Invariant: the template is a constant that indicatif accepts.
        let style = ProgressStyle::with_template("{spinner} buffer [{bar:20}] {msg}")
            .expect("valid template")
            .progress_chars("=> ");
        bar.set_style(style);
        Self { bar: Some(bar) }
    }

    pub fn update(&self, sched: &Session, summary: &Summary) {
        let Some(bar) = &self.bar else { return };
        let level = sched.buffer().level();
        bar.set_position(level.as_millis().min(30_000) as u64);
        let state = match sched.buffer().state() {
            PlayState::Starting => "starting",
            PlayState::Playing => "playing",
            PlayState::Stalled { .. } => "STALLED",
        };
        let per_source: Vec<String> = sched
            .sources()
            .iter()
            .enumerate()
            .map(|(i, s)| format!("s{i} {:.1} Mb/s ({} seg)", s.throughput_bps.unwrap_or(0.0) / 1e6, s.delivered))
            .collect();
        bar.set_message(format!(
            "{:.1} s {state} | {} | stalls {} ({:.1} s) | seg {}",
            level.as_secs_f64(),
            per_source.join(", "),
            sched.buffer().stalls().len(),
            sched.buffer().stall_time().as_secs_f64(),
            summary.segments
        ));
        bar.tick();
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
