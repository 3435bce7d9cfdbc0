//! Gauges that describe a node's lasting state — viewers, parent, children, neighbours and each
//! QUIC link's RTT and loss — sampled every [`EVERY`] rather than counted on events, so they
//! never drift and a neighbour that left drops out (docs/METRICS.md).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use relaycast_core::PeerId;

use crate::node::host::Host;
use crate::node::viewers::Viewers;

const EVERY: Duration = Duration::from_secs(2);

/// Packets sent and lost on a connection at the last sample (QUIC's counts are per connection).
#[derive(Default, Clone, Copy)]
struct Seen {
    sent: u64,
    lost: u64,
}

/// Sample this node's gauges until the process ends.
pub async fn run(host: Arc<Host>, viewers: Arc<Viewers>) {
    // Event counters start at 0, so `rate()` and `increase()` work before the first event.
    for name in ["relaycast_parent_changes_total", "relaycast_repairs_total", "relaycast_segments_lost_total"] {
        metrics::counter!(name, "node" => host.name.clone()).increment(0);
    }
    let mut seen: BTreeMap<PeerId, Seen> = BTreeMap::new();
    loop {
        sample(&host, &viewers, &mut seen);
        tokio::time::sleep(EVERY).await;
    }
}

fn sample(host: &Host, viewers: &Viewers, seen: &mut BTreeMap<PeerId, Seen>) {
    let node = host.name.clone();
    let (parent, children, neighbours) = host.read(|n| {
        let view = n.route_view(Instant::now());
        (view.parent.is_some(), view.children.len(), n.neighbours().count())
    });
    metrics::gauge!("relaycast_viewers", "node" => node.clone()).set(viewers.active(Instant::now()) as f64);
    metrics::gauge!("relaycast_parent_up", "node" => node.clone()).set(if parent { 1.0 } else { 0.0 });
    metrics::gauge!("relaycast_children", "node" => node.clone()).set(children as f64);
    metrics::gauge!("relaycast_neighbours", "node" => node.clone()).set(neighbours as f64);
    let links = host.links();
    seen.retain(|peer, _| links.iter().any(|l| l.peer == *peer));
    for link in links {
        let labels = [("node", node.clone()), ("peer", link.name.clone())];
        metrics::gauge!("relaycast_quic_rtt_seconds", &labels).set(link.rtt.as_secs_f64());
        let now = Seen { sent: link.stats.path.sent_packets, lost: link.stats.path.lost_packets };
        let before = seen.insert(link.peer, now).unwrap_or_default();
        metrics::counter!("relaycast_quic_packets_sent_total", &labels).increment(now.sent.saturating_sub(before.sent));
        metrics::counter!("relaycast_quic_packets_lost_total", &labels).increment(now.lost.saturating_sub(before.lost));
    }
}
