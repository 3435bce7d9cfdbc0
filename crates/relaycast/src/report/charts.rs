//! The four charts of a report, each drawn to an SVG string with plotters' SVG backend. Text stays
//! plain `<text>` (no font files needed); the browser lays it out.
//!
//! Every chart of a report shares one time axis (0 to the longest run) so logs line up, colours
//! one log the same everywhere ([`log_colour`]) and one source the same in every panel
//! ([`source_colour`]).

use anyhow::Result;
use plotters::chart::MeshStyle;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, KeyPointHint, KeyPointWeight, NoDefaultFormatting, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::Entry;
use super::stats::{cdf_points, sorted};

const FONT: &str = "sans-serif";
/// plotters' SVG backend writes `font-size` as size / 1.24; these are the sizes we ask for.
const TITLE_SIZE: u32 = 26;
const CAPTION_SIZE: u32 = 20;
const DESC_SIZE: u32 = 17;
const LABEL_SIZE: u32 = 15;

/// Wide charts (buffer, delay CDF, stall timeline) are this wide; a throughput panel is
/// [`PANEL_WIDTH`] wide, or the full width when there is one log.
pub const WIDTH: u32 = 900;
const PANEL_WIDTH: u32 = 600;
const PANEL_HEIGHT: u32 = 360;
const TITLE_HEIGHT: u32 = 44;

/// Colours for logs (Okabe–Ito, safe for colour-blind readers, then two of Paul Tol's); a ninth
/// log reuses the first colour.
const LOG_COLOURS: [RGBColor; 8] = [
    RGBColor(0x00, 0x72, 0xB2),
    RGBColor(0xD5, 0x5E, 0x00),
    RGBColor(0x00, 0x9E, 0x73),
    RGBColor(0xCC, 0x79, 0xA7),
    RGBColor(0x56, 0xB4, 0xE9),
    RGBColor(0xE6, 0x9F, 0x00),
    RGBColor(0x33, 0x22, 0x88),
    RGBColor(0x88, 0x22, 0x55),
];
/// Colours for the sources within a log (ColorBrewer Dark2), distinct from the log colours.
const SOURCE_COLOURS: [RGBColor; 6] = [
    RGBColor(0x1B, 0x9E, 0x77),
    RGBColor(0x75, 0x70, 0xB3),
    RGBColor(0xE7, 0x29, 0x8A),
    RGBColor(0x66, 0xA6, 0x1E),
    RGBColor(0xA6, 0x76, 0x1D),
    RGBColor(0xE6, 0xAB, 0x02),
];
const STALL_RED: RGBColor = RGBColor(0xC0, 0x1C, 0x28);
const GREY: RGBColor = RGBColor(0x60, 0x60, 0x60);
const STALL_ALPHA: f64 = 0.16;

pub fn log_colour(i: usize) -> RGBColor {
    LOG_COLOURS[i % LOG_COLOURS.len()]
}

pub fn source_colour(i: usize) -> RGBColor {
    SOURCE_COLOURS[i % SOURCE_COLOURS.len()]
}

/// `#rrggbb`, for the HTML page.
pub fn hex(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

/// Throughput per source over time: one panel per log, side by side (three to a row), all on
/// the same axes, with the stream's bitrate as a dashed reference and stalls shaded.
pub fn throughput(entries: &[Entry]) -> Result<String> {
    let cols = entries.len().clamp(1, 3);
    let rows = entries.len().div_ceil(cols).max(1);
    let panel_width = if entries.len() == 1 { WIDTH } else { PANEL_WIDTH };
    let legends: Vec<Vec<(Mark, String)>> = entries.iter().map(throughput_legend).collect();
    let legend_height = legends.iter().map(|l| legend_height(l, panel_width)).max().unwrap_or(0);
    let panel_height = PANEL_HEIGHT + legend_height;
    let size = (panel_width * cols as u32, TITLE_HEIGHT + panel_height * rows as u32);
    let x_max = time_axis_end(entries);
    let y_max = nice_ceiling(
        entries
            .iter()
            .flat_map(|e| e.log.throughput.iter().map(|t| t.bps).chain(e.summary.stream_bps))
            .fold(0.0, f64::max)
            / 1e6
            * 1.1,
    );

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE)?;
        let body = root.titled("Throughput per source", (FONT, TITLE_SIZE))?;
        for ((entry, legend), panel) in entries.iter().zip(&legends).zip(body.split_evenly((rows, cols))) {
            let (chart_area, legend_area) = panel.split_vertically(PANEL_HEIGHT);
            throughput_panel(&chart_area, entry, x_max, y_max)?;
            draw_legend(&legend_area, legend)?;
        }
        root.present()?;
    }
    Ok(svg)
}

fn throughput_legend(entry: &Entry) -> Vec<(Mark, String)> {
    let mut items = Vec::new();
    for (source, summary) in entry.summary.sources.iter().enumerate() {
        if entry.log.throughput.iter().any(|t| t.source == source) {
            let name = match &summary.url {
                Some(url) => format!("source {source} · {}", short_url(url)),
                None => format!("source {source}"),
            };
            items.push((Mark::Line(source_colour(source)), name));
        }
    }
    if let Some(bps) = entry.summary.stream_bps {
        items.push((Mark::Dashed(GREY), format!("stream bitrate ({:.2} Mbit/s)", bps / 1e6)));
    }
    if !entry.log.stalls.is_empty() {
        items.push((Mark::Band(STALL_RED.mix(STALL_ALPHA)), "stall".to_owned()));
    }
    if !entry.log.switches.is_empty() {
        items.push((Mark::Dotted(BLACK), "source switch".to_owned()));
    }
    items
}

fn throughput_panel(area: &DrawingArea<SVGBackend, Shift>, entry: &Entry, x_max: f64, y_max: f64) -> Result<()> {
    let caption = match &entry.log.start.mode {
        Some(mode) => format!("{} ({mode})", entry.name),
        None => entry.name.clone(),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, CAPTION_SIZE).into_font().color(&log_colour(entry.index)))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    house_style(&mut chart.configure_mesh())
        .x_desc("time since start (s)")
        .y_desc("throughput (Mbit/s)")
        .x_label_formatter(&|v| number(*v))
        .y_label_formatter(&|v| number(*v))
        .draw()?;

    let band = STALL_RED.mix(STALL_ALPHA).filled();
    chart.draw_series(entry.log.stalls.iter().map(|s| {
        let start = s.start_ms / 1000.0;
        Rectangle::new([(start, 0.0), (start + s.duration_ms / 1000.0, y_max)], band)
    }))?;
    if let Some(bps) = entry.summary.stream_bps {
        let style = GREY.stroke_width(2);
        chart.draw_series(DashedLineSeries::new([(0.0, bps / 1e6), (x_max, bps / 1e6)], 8, 6, style))?;
    }
    for switch in &entry.log.switches {
        let t = switch.t_ms / 1000.0;
        chart.draw_series(DashedLineSeries::new([(t, 0.0), (t, y_max)], 2, 4, BLACK.stroke_width(2)))?;
    }
    for source in 0..entry.summary.sources.len() {
        let mut points: Vec<(f64, f64)> = entry
            .log
            .throughput
            .iter()
            .filter(|t| t.source == source)
            .map(|t| (t.t_ms / 1000.0, t.bps / 1e6))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart.draw_series(LineSeries::new(points, source_colour(source).stroke_width(2)))?;
    }
    if entry.log.throughput.is_empty() {
        no_data(&chart, "no throughput samples", (x_max / 2.0, y_max / 2.0))?;
    }
    Ok(())
}

/// Playback-buffer level over time, one line per log.
pub fn buffer(entries: &[Entry]) -> Result<String> {
    let legend: Vec<(Mark, String)> = entries
        .iter()
        .map(|e| (Mark::Line(log_colour(e.index)), format!("{} ({})", e.name, stall_count(e.summary.stalls))))
        .collect();
    let legend_height = legend_height(&legend, WIDTH);
    let x_max = time_axis_end(entries);
    let y_max = nice_ceiling(
        entries.iter().flat_map(|e| e.log.buffer.iter().map(|b| b.level_ms)).fold(0.0, f64::max) / 1000.0 * 1.05,
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, PANEL_HEIGHT + legend_height)).into_drawing_area();
        root.fill(&WHITE)?;
        let (chart_area, legend_area) = root.split_vertically(PANEL_HEIGHT);
        let mut chart = ChartBuilder::on(&chart_area)
            .caption("Playback buffer level", (FONT, TITLE_SIZE))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
        house_style(&mut chart.configure_mesh())
            .x_desc("time since start (s)")
            .y_desc("buffered media (s)")
            .x_label_formatter(&|v| number(*v))
            .y_label_formatter(&|v| number(*v))
            .draw()?;
        for entry in entries {
            let mut points: Vec<(f64, f64)> =
                entry.log.buffer.iter().map(|b| (b.t_ms / 1000.0, b.level_ms / 1000.0)).collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart.draw_series(LineSeries::new(points, log_colour(entry.index).stroke_width(2)))?;
        }
        if entries.iter().all(|e| e.log.buffer.is_empty()) {
            no_data(&chart, "no buffer samples", (x_max / 2.0, y_max / 2.0))?;
        }
        draw_legend(&legend_area, &legend)?;
        root.present()?;
    }
    Ok(svg)
}

/// Stall timeline: one row per log (first log on top), a bar per stall, a thin line for the run.
pub fn stalls(entries: &[Entry]) -> Result<String> {
    let n = entries.len().max(1);
    let x_max = time_axis_end(entries);
    let row_label = |i: usize| {
        let e = &entries[i];
        format!("{}: {}, {:.2} s", e.name, stall_count(e.summary.stalls), e.summary.stall_ms / 1000.0)
    };
    let label_width = (0..entries.len()).map(|i| row_label(i).chars().count()).max().unwrap_or(0) as u32 * 8 + 16;
    let height = (110 + 56 * n as u32).max(200);
    // Row i sits at y = n - 1 - i, so the first log is on top.
    let row_y = |i: usize| (n - 1 - i) as f64;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Stall timeline", (FONT, TITLE_SIZE))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(label_width.clamp(60, 360))
            .build_cartesian_2d(0.0..x_max, -0.5..(n as f64 - 0.5))?;
        let y_label = |y: &f64| {
            let row = y.round();
            if (y - row).abs() > 0.01 || row < 0.0 || row as usize >= entries.len() {
                return String::new();
            }
            row_label(n - 1 - row as usize)
        };
        house_style(&mut chart.configure_mesh())
            .disable_y_mesh()
            .y_labels(n)
            .x_desc("time since start (s)")
            .x_label_formatter(&|v| number(*v))
            .y_label_formatter(&y_label)
            .draw()?;
        for (i, entry) in entries.iter().enumerate() {
            let y = row_y(i);
            let run_end = entry.summary.run_ms / 1000.0;
            chart.draw_series(std::iter::once(PathElement::new([(0.0, y), (run_end, y)], GREY.mix(0.5))))?;
            let fill = log_colour(entry.index).filled();
            chart.draw_series(entry.log.stalls.iter().map(|s| {
                let start = s.start_ms / 1000.0;
                // At least ~1 px wide, so a very short stall still shows.
                let end = start + (s.duration_ms / 1000.0).max(x_max / 800.0);
                Rectangle::new([(start, y - 0.3), (end, y + 0.3)], fill)
            }))?;
        }
        root.present()?;
    }
    Ok(svg)
}

/// CDF of per-segment origin delay for each log, with a dashed vertical line at each log's
/// minimum RTT. The delay axis turns logarithmic when delays and RTTs span more than 20×.
pub fn delay_cdf(entries: &[Entry]) -> Result<String> {
    let series: Vec<(&Entry, Vec<f64>)> =
        entries.iter().map(|e| (e, sorted(e.log.segments.iter().filter_map(|s| s.origin_delay_ms)))).collect();
    let mut legend = Vec::new();
    for (entry, delays) in &series {
        let colour = log_colour(entry.index);
        if !delays.is_empty() {
            legend.push((Mark::Line(colour), format!("{}: origin delay", entry.name)));
        }
        if let Some(rtt) = entry.summary.min_rtt_ms {
            legend.push((Mark::Dashed(colour), format!("{}: min RTT {}", entry.name, ms(rtt))));
        }
    }
    let legend_height = legend_height(&legend, WIDTH);
    let values = series
        .iter()
        .flat_map(|(_, delays)| delays.iter().copied())
        .chain(entries.iter().filter_map(|e| e.summary.min_rtt_ms));
    let (lo, hi) =
        values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (if v > 0.0 { lo.min(v) } else { lo }, hi.max(v)));

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, PANEL_HEIGHT + legend_height)).into_drawing_area();
        root.fill(&WHITE)?;
        let (chart_area, legend_area) = root.split_vertically(PANEL_HEIGHT);
        if lo.is_finite() && hi / lo > 20.0 {
            let x_range = LogAxis { lo: lo / 1.5, hi: hi * 1.5 };
            cdf_chart(&chart_area, x_range, "origin delay (ms, log scale)", &series)?;
        } else {
            cdf_chart(&chart_area, 0.0..nice_ceiling(hi * 1.05), "origin delay (ms)", &series)?;
        }
        draw_legend(&legend_area, &legend)?;
        root.present()?;
    }
    Ok(svg)
}

fn cdf_chart<X>(
    area: &DrawingArea<SVGBackend, Shift>,
    x_range: X,
    x_desc: &str,
    series: &[(&Entry, Vec<f64>)],
) -> Result<()>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption("Per-segment origin delay (CDF) against minimum RTT", (FONT, TITLE_SIZE))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(x_range, 0.0..1.0)?;
    house_style(&mut chart.configure_mesh())
        .x_desc(x_desc)
        .y_desc("share of segments")
        .x_label_formatter(&|v| number(*v))
        .y_label_formatter(&|v| format!("{:.0} %", v * 100.0))
        .draw()?;
    for (entry, delays) in series {
        let style = log_colour(entry.index).stroke_width(2);
        chart.draw_series(LineSeries::new(cdf_points(delays), style))?;
        if let Some(rtt) = entry.summary.min_rtt_ms {
            chart.draw_series(DashedLineSeries::new([(rtt, 0.0), (rtt, 1.0)], 7, 5, style))?;
        }
    }
    if series.iter().all(|(_, delays)| delays.is_empty()) {
        let area = chart.plotting_area();
        let (w, h) = area.dim_in_pixel();
        area.strip_coord_spec().draw(&Text::new(
            "no origin delays in these logs",
            (w as i32 / 2, h as i32 / 2),
            (FONT, CAPTION_SIZE).into_font().color(&GREY).pos(text_centre()),
        ))?;
    }
    Ok(())
}

/// A base-10 logarithmic axis from `lo` to `hi` (both > 0) whose labelled gridlines fall on 1, 2
/// and 5 of each decade and light ones on 1 to 9 (plotters' own log axis labels only powers of
/// ten and its denser grid repeats a label).
#[derive(Clone)]
struct LogAxis {
    lo: f64,
    hi: f64,
}

impl LogAxis {
    /// The points `m × 10^k` inside the axis, for each mantissa `m`, ascending.
    fn decade_points(&self, mantissas: &[f64]) -> Vec<f64> {
        let (first, last) = (self.lo.log10().floor() as i32, self.hi.log10().ceil() as i32);
        (first..=last)
            .flat_map(|e| mantissas.iter().map(move |m| m * 10f64.powi(e)))
            .filter(|v| (self.lo..=self.hi).contains(v))
            .collect()
    }
}

impl Ranged for LogAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let (lo, hi) = (self.lo.log10(), self.hi.log10());
        // Values at or below zero go just left of the axis instead of to -∞.
        let v = value.max(f64::MIN_POSITIVE).log10().clamp(lo - 1.0, hi + 1.0);
        let share = (v - lo) / (hi - lo);
        limit.0 + (share * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        const ALL: [f64; 9] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
        let choices: &[&[f64]] = match hint.weight() {
            KeyPointWeight::Bold => &[&[1.0, 2.0, 5.0], &[1.0]],
            KeyPointWeight::Any => &[&ALL, &[1.0, 2.0, 5.0], &[1.0]],
        };
        choices
            .iter()
            .map(|mantissas| self.decade_points(mantissas))
            .find(|points| points.len() <= hint.max_num_points())
            .unwrap_or_default()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for LogAxis {
    fn format(value: &f64) -> String {
        number(*value)
    }
}

/// What a legend entry shows before its text.
#[derive(Clone, Copy)]
enum Mark {
    Line(RGBColor),
    Dashed(RGBColor),
    Dotted(RGBColor),
    Band(RGBAColor),
}

const LEGEND_ROW: u32 = 24;
const LEGEND_MARK: i32 = 24;
/// Width of one character of legend text, erring wide: the SVG backend cannot measure text.
const LEGEND_CHAR: f64 = 6.6;

fn legend_item_width(label: &str) -> u32 {
    LEGEND_MARK as u32 + 8 + (label.chars().count() as f64 * LEGEND_CHAR).ceil() as u32 + 20
}

/// The legend's entries laid out in centred rows that fit `width`.
fn legend_rows(items: &[(Mark, String)], width: u32) -> Vec<&[(Mark, String)]> {
    let mut rows = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, (_, label)) in items.iter().enumerate() {
        let w = legend_item_width(label);
        if i > start && used + w > width.saturating_sub(20) {
            rows.push(&items[start..i]);
            start = i;
            used = 0;
        }
        used += w;
    }
    if start < items.len() {
        rows.push(&items[start..]);
    }
    rows
}

fn legend_height(items: &[(Mark, String)], width: u32) -> u32 {
    match legend_rows(items, width).len() {
        0 => 0,
        n => n as u32 * LEGEND_ROW + 12,
    }
}

/// Draws a legend below a chart: entries left to right in centred rows, never over the data.
fn draw_legend(area: &DrawingArea<SVGBackend, Shift>, items: &[(Mark, String)]) -> Result<()> {
    let (width, _) = area.dim_in_pixel();
    let text = (FONT, LABEL_SIZE).into_font().color(&BLACK.mix(0.85)).pos({
        use plotters::style::text_anchor::{HPos, Pos, VPos};
        Pos::new(HPos::Left, VPos::Center)
    });
    for (row, entries) in legend_rows(items, width).into_iter().enumerate() {
        let total: u32 = entries.iter().map(|(_, label)| legend_item_width(label)).sum();
        let mut x = (width.saturating_sub(total) / 2) as i32;
        let y = (row as u32 * LEGEND_ROW + LEGEND_ROW / 2) as i32;
        for (mark, label) in entries {
            match *mark {
                Mark::Line(c) => area.draw(&PathElement::new([(x, y), (x + LEGEND_MARK, y)], c.stroke_width(3)))?,
                Mark::Dashed(c) => {
                    let style = c.stroke_width(2);
                    area.draw(&PathElement::new([(x, y), (x + 9, y)], style))?;
                    area.draw(&PathElement::new([(x + 15, y), (x + LEGEND_MARK, y)], style))?;
                }
                Mark::Dotted(c) => {
                    for dot in (0..LEGEND_MARK).step_by(6) {
                        area.draw(&PathElement::new([(x + dot, y), (x + dot + 2, y)], c.stroke_width(2)))?;
                    }
                }
                Mark::Band(c) => area.draw(&Rectangle::new([(x, y - 7), (x + LEGEND_MARK, y + 7)], c.filled()))?,
            }
            area.draw(&Text::new(label.clone(), (x + LEGEND_MARK + 8, y), text.clone()))?;
            x += legend_item_width(label) as i32;
        }
    }
    Ok(())
}

/// A grey note in the middle of an empty chart.
fn no_data<'a>(
    chart: &ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    text: &str,
    at: (f64, f64),
) -> Result<()> {
    chart.plotting_area().draw(&Text::new(
        text.to_owned(),
        at,
        (FONT, CAPTION_SIZE).into_font().color(&GREY).pos(text_centre()),
    ))?;
    Ok(())
}

fn text_centre() -> plotters::style::text_anchor::Pos {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    Pos::new(HPos::Center, VPos::Center)
}

/// End of the shared time axis in seconds: the longest run.
fn time_axis_end(entries: &[Entry]) -> f64 {
    nice_ceiling(entries.iter().map(|e| e.summary.run_ms / 1000.0).fold(0.0, f64::max))
}

/// A round number ≥ `v` (1, 2, 2.5 or 5 times a power of ten) so an axis ends on a label; 1 for
/// nothing.
pub fn nice_ceiling(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let power = 10f64.powf(v.log10().floor());
    [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|&c| c >= v * 0.9999)
        .unwrap_or(10.0 * power)
}

/// An axis label: no trailing zeros, two decimals from 1 to 100, three below.
fn number(v: f64) -> String {
    let s = if v.abs() >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_owned() } else { s }
}

/// Milliseconds, with a decimal only where it matters.
pub fn ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else if v < 100.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

/// "1 stall", "3 stalls".
fn stall_count(n: usize) -> String {
    if n == 1 { "1 stall".to_owned() } else { format!("{n} stalls") }
}

/// `host:port` of a URL (or the whole thing when it has no scheme).
pub fn short_url(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split('/').next().filter(|host| !host.is_empty()).unwrap_or(url)
}

/// The grid and text style every chart shares.
fn house_style<'m, 'a, 'b, X, Y, DB>(mesh: &'m mut MeshStyle<'a, 'b, X, Y, DB>) -> &'m mut MeshStyle<'a, 'b, X, Y, DB>
where
    X: Ranged,
    Y: Ranged,
    DB: DrawingBackend,
{
    mesh.light_line_style(BLACK.mix(0.04))
        .bold_line_style(BLACK.mix(0.12))
        .label_style((FONT, LABEL_SIZE))
        .axis_desc_style((FONT, DESC_SIZE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_ends_and_labels_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(60.0), 60.0);
        assert_eq!(nice_ceiling(61.0), 80.0);
        assert_eq!(nice_ceiling(7.3), 8.0);
        assert_eq!(nice_ceiling(0.042), 0.05);
        assert_eq!(number(20.0), "20");
        assert_eq!(number(2.5), "2.5");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(1500.0), "1500");
        assert_eq!(short_url("http://127.0.0.1:8080/live/demo/index.m3u8"), "127.0.0.1:8080");
        assert_eq!(short_url("edge-a"), "edge-a");
    }
}
