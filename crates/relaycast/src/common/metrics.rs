//! The process's Prometheus recorder (every role serves it at `/metrics`; the names are
//! documented in docs/METRICS.md).
//!
//! Delays are true Prometheus histograms (buckets), so dashboards can aggregate them across
//! nodes with `histogram_quantile`. Gauges that nobody has set for a minute are dropped, so a
//! neighbour that left does not keep reporting its last RTT; every gauge that describes a
//! lasting state is therefore refreshed periodically by its role.

use std::time::Duration;

use anyhow::Result;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

/// Bucket bounds (seconds) of delay histograms: from a part on loopback to a badly late segment.
const DELAY_BUCKETS: &[f64] = &[0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0];

/// A gauge not set for this long is dropped from `/metrics`.
const GAUGE_IDLE: Duration = Duration::from_secs(60);

/// Install the recorder and fold histogram samples in every 5 s (without it they grow for as
/// long as nobody scrapes).
pub fn install() -> Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("delay_seconds".into()), DELAY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full("relaycast_repair_seconds".into()), DELAY_BUCKETS)?
        .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
        .install_recorder()?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// `GET /metrics` of any role: the recorder's series in Prometheus text format.
pub fn response(handle: &PrometheusHandle) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
}
