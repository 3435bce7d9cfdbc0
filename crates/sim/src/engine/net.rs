//! Connections and frames: from a node's outputs to frames on links, and the connection
//! lifecycle (dial, close, reset, redial).

use rand::Rng;
use relaycast_core::{Name, Part, PeerId, Segment};

use super::{Conn, End, Ev, MS, Sim};
use crate::frame::{self, PartFrame, Payload, SegmentFrame};

impl Sim {
    /// The connection, end and link a frame from node `i` to `peer` takes, if it can leave.
    pub(super) fn path(&self, i: usize, peer: PeerId) -> Option<(usize, usize, usize)> {
        let (c, side) = self.conn_of(peer)?;
        let conn = &self.conns[c];
        let (from, to) = (conn.ends[side], conn.ends[1 - side]);
        let ok = from.node == i
            && from.open
            && self.cuts[conn.edge] == 0
            && to.open
            && self.is_live(to.node, to.incarnation);
        ok.then_some((c, side, from.link as usize))
    }

    pub(super) fn send_message(&mut self, i: usize, peer: PeerId, msg: relaycast_core::wire::Message) {
        let (kind, bytes) = (frame::kind(&msg), frame::message_size(&msg));
        self.sent[kind] += 1;
        self.sent_bytes[kind] += bytes as u64;
        let Some((c, side, l)) = self.path(i, peer) else {
            self.dropped += 1;
            return;
        };
        let tx = self.links[l].transmit(&self.medium, self.now, bytes, None, &mut self.rng);
        self.bytes += bytes as u64;
        self.retransmissions += u64::from(tx.retransmissions);
        self.queue.push(tx.arrive, Ev::Frame { conn: c, to: 1 - side, depart: tx.depart, payload: Payload::Msg(msg) });
    }

    pub(super) fn send_segments(
        &mut self,
        i: usize,
        peer: PeerId,
        channel: Name,
        rendition: Name,
        segments: Vec<Segment>,
    ) {
        self.segment_frames += segments.len() as u64;
        let Some((c, side, l)) = self.path(i, peer) else {
            self.dropped += segments.len() as u64;
            return;
        };
        // One stream: its segments arrive in order.
        let mut after = 0;
        for segment in segments {
            let bytes = frame::segment_size(&channel, &rendition, segment.data.len());
            let tx = self.links[l].transmit(&self.medium, self.now, bytes, Some(after), &mut self.rng);
            self.bytes += bytes as u64;
            self.retransmissions += u64::from(tx.retransmissions);
            after = tx.arrive;
            let payload = Payload::Segment(Box::new(SegmentFrame {
                channel: channel.clone(),
                rendition: rendition.clone(),
                segment,
            }));
            self.queue.push(tx.arrive, Ev::Frame { conn: c, to: 1 - side, depart: tx.depart, payload });
        }
    }

    /// One part on its own stream (parts of one segment may overtake each other, as in QUIC).
    pub(super) fn send_part(&mut self, i: usize, peer: PeerId, channel: Name, rendition: Name, part: Part) {
        self.segment_frames += 1;
        let Some((c, side, l)) = self.path(i, peer) else {
            self.dropped += 1;
            return;
        };
        let bytes = frame::part_size(&channel, &rendition, part.data.len());
        let tx = self.links[l].transmit(&self.medium, self.now, bytes, None, &mut self.rng);
        self.bytes += bytes as u64;
        self.retransmissions += u64::from(tx.retransmissions);
        let payload = Payload::Part(Box::new(PartFrame { channel, rendition, part }));
        self.queue.push(tx.arrive, Ev::Frame { conn: c, to: 1 - side, depart: tx.depart, payload });
    }

    /// Node `i` closed its connection to `peer` (its core already forgot the peer).
    pub(super) fn close(&mut self, i: usize, peer: PeerId) {
        let Some((c, side)) = self.conn_of(peer) else { return };
        if self.conns[c].ends[side].node != i || !self.conns[c].ends[side].open {
            return;
        }
        self.conns[c].ends[side].open = false;
        let conn = self.conns[c];
        let to = conn.ends[1 - side];
        if self.cuts[conn.edge] == 0 && to.open && self.is_live(to.node, to.incarnation) {
            let at = self.links[conn.ends[side].link as usize].notice(self.now);
            self.queue.push(at, Ev::Closed { conn: c, to: 1 - side });
        }
        self.maybe_redial(conn.edge);
    }

    pub(super) fn is_live(&self, node: usize, incarnation: u32) -> bool {
        self.live[node] == incarnation
    }

    /// Peer ids name a connection end: `2 × connection + end + 1`.
    pub(super) fn peer_id(conn: usize, side: usize) -> PeerId {
        PeerId(((conn as u64) << 1 | side as u64) + 1)
    }

    pub(super) fn conn_of(&self, peer: PeerId) -> Option<(usize, usize)> {
        let v = peer.0.checked_sub(1)?;
        let c = (v >> 1) as usize;
        (c < self.conns.len()).then_some((c, (v & 1) as usize))
    }

    pub(super) fn link_index(&self, edge: usize, from: usize) -> usize {
        2 * edge + usize::from(self.topo.edges()[edge].a != from)
    }

    /// Open a fresh connection on `edge`, `dialer` dialing.
    pub(super) fn dial(&mut self, e: usize, dialer: usize) {
        let edge = self.topo.edges()[e];
        let acceptor = edge.other(dialer);
        let c = self.conns.len();
        let (pd, pa) = (Self::peer_id(c, 0), Self::peer_id(c, 1));
        let end = |node: usize, peer: PeerId| End {
            node,
            peer,
            incarnation: self.slots[node].incarnation,
            link: self.link_index(e, node) as u32,
            open: true,
            dead_at: None,
        };
        let ends = [end(dialer, pd), end(acceptor, pa)];
        self.conns.push(Conn { edge: e, ends });
        self.edge_conn[e] = Some(c);
        let rtt = edge.latency * 2;
        self.input(acceptor, |n, now| {
            n.peer_accepted(now, pa);
            n.peer_rtt(now, pa, rtt);
        });
        self.input(dialer, |n, now| {
            n.peer_dialed(now, pd);
            n.peer_rtt(now, pd, rtt);
        });
    }

    /// Make sure `edge` carries a working connection if both ends are alive and the link is up:
    /// reset a half-open one, then dial (`dialer`, or the higher-numbered end).
    pub(super) fn reconnect(&mut self, e: usize, dialer: Option<usize>) {
        let edge = self.topo.edges()[e];
        if self.cuts[e] != 0 || !self.is_alive(edge.a) || !self.is_alive(edge.b) {
            return;
        }
        if let Some(c) = self.edge_conn[e] {
            let open = |s: usize| {
                let end = self.conns[c].ends[s];
                end.open && self.is_live(end.node, end.incarnation)
            };
            let (o0, o1) = (open(0), open(1));
            if o0 && o1 {
                return;
            }
            for (s, o) in [(0, o0), (1, o1)] {
                if o {
                    self.conns[c].ends[s].open = false;
                    let end = self.conns[c].ends[s];
                    self.input(end.node, |n, now| n.peer_lost(now, end.peer, "connection reset"));
                }
            }
        }
        self.dial(e, dialer.unwrap_or(edge.a.max(edge.b)));
    }

    /// After a close: if neither end holds the connection any more and both nodes live, redial.
    pub(super) fn maybe_redial(&mut self, e: usize) {
        let edge = self.topo.edges()[e];
        if self.redial_pending[e] || self.cuts[e] != 0 || !self.is_alive(edge.a) || !self.is_alive(edge.b) {
            return;
        }
        if let Some(c) = self.edge_conn[e] {
            let held = self.conns[c].ends.iter().any(|end| end.open && self.is_live(end.node, end.incarnation));
            if held {
                return;
            }
        }
        let base = self.scenario.faults.redial_ms.unwrap_or(1000) * MS;
        let delay = base + self.rng.random_range(0..=base / 2);
        self.redial_pending[e] = true;
        self.queue.push(self.now + delay, Ev::Dial(e));
    }
}
