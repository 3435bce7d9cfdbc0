//! The stream and the fault schedule: publishing at the origin, crashes, restarts, partitions
//! and viewers coming and going.

use bytes::Bytes;
use relaycast_core::{Node, SourcePart, SourceSegment};

use super::{DEAD, EPOCH_MS, Ev, MS, Sim, secs};
use crate::faults::Action;
use crate::link::Nanos;

impl Sim {
    pub(super) fn publish(&mut self) {
        if self.scenario.workload.parts_per_segment > 0 {
            return self.publish_part();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.metrics.on_publish(seq, self.now);
        let w = &self.scenario.workload;
        let src = SourceSegment {
            source_seq: Some(seq),
            discontinuity: false,
            duration_us: (w.segment_s * 1e6) as u32,
            data: Bytes::from(vec![(seq % 251) as u8; self.segment_bytes]),
        };
        let next = self.now + secs(w.segment_s);
        let (channel, rendition) = (self.channel.clone(), self.rendition.clone());
        let wall_ms = EPOCH_MS + self.now / MS;
        let mut result = Ok(());
        self.input(0, |n, now| result = n.publish(now, &channel, &rendition, src, wall_ms).map(|_| ()));
        if let Err(e) = result {
            self.metrics.violation(format!("origin refused segment {seq}: {e}"));
        }
        self.global_check(Some(seq));
        self.queue.push(next, Ev::Publish);
    }

    /// One part of the segment being made; the segment counts as published (for delay and
    /// completeness checks) with its last part, as a whole segment would.
    fn publish_part(&mut self) {
        let w = &self.scenario.workload;
        let parts = w.parts_per_segment;
        let (seq, index) = (self.next_seq, self.next_part);
        let last = index + 1 == parts;
        let part_bytes = self.segment_bytes / parts as usize;
        let src = SourcePart {
            source_seq: seq,
            index,
            independent: index == 0,
            last,
            discontinuity: false,
            duration_us: (w.segment_s * 1e6 / f64::from(parts)) as u32,
            data: Bytes::from(vec![(seq % 251) as u8; part_bytes]),
        };
        let next = self.now + secs(w.segment_s / f64::from(parts));
        let (channel, rendition) = (self.channel.clone(), self.rendition.clone());
        let wall_ms = EPOCH_MS + self.now / MS;
        if last {
            self.metrics.on_publish(seq, self.now);
            self.next_seq += 1;
            self.next_part = 0;
        } else {
            self.next_part += 1;
        }
        let mut result = Ok(());
        self.input(0, |n, now| result = n.publish_part(now, &channel, &rendition, src, wall_ms).map(|_| ()));
        if let Err(e) = result {
            self.metrics.violation(format!("origin refused part {seq}.{index}: {e}"));
        }
        if last {
            self.global_check(Some(seq));
        }
        self.queue.push(next, Ev::Publish);
    }

    pub(super) fn act(&mut self, action: Action) {
        match action {
            Action::Crash(i) => self.crash(i),
            Action::Restart(i) => self.restart(i),
            Action::Bounce(i) => {
                self.crash(i);
                self.restart(i);
            }
            Action::Partition { edges, duration } => {
                self.fault_counts.partitions += 1;
                for &e in &edges {
                    self.cuts[e] += 1;
                    self.link_fault(e);
                }
                self.trace_global("Partition", &format!("{} links", edges.len()));
                let at = self.now + duration.as_nanos() as Nanos;
                self.queue.push(at, Ev::Act(Action::Heal(edges)));
                self.global_check(None);
            }
            Action::Heal(edges) => {
                for &e in &edges {
                    self.cuts[e] = self.cuts[e].saturating_sub(1);
                    self.link_fault(e);
                }
                for &e in &edges {
                    self.reconnect(e, None);
                }
                self.trace_global("Heal", &format!("{} links", edges.len()));
                self.global_check(None);
            }
            Action::Viewer { node, on } => {
                self.metrics.set_viewer(node, on);
                match (self.viewers.binary_search(&node), on) {
                    (Err(pos), true) => self.viewers.insert(pos, node),
                    (Ok(pos), false) => {
                        self.viewers.remove(pos);
                    }
                    _ => {}
                }
            }
        }
    }

    pub(super) fn link_fault(&mut self, e: usize) {
        let edge = self.topo.edges()[e];
        self.last_fault[edge.a] = Some(self.now);
        self.last_fault[edge.b] = Some(self.now);
    }

    pub(super) fn crash(&mut self, i: usize) {
        if i == 0 || !self.is_alive(i) {
            return;
        }
        self.fault_counts.crashes += 1;
        let orphans: Vec<usize> =
            self.topo.neighbours(i).iter().map(|&(j, _)| j).filter(|&j| self.parent_of(j) == Some(i)).collect();
        let inc = self.slots[i].incarnation;
        for k in 0..self.topo.neighbours(i).len() {
            let (_, e) = self.topo.neighbours(i)[k];
            if let Some(c) = self.edge_conn[e] {
                for end in &mut self.conns[c].ends {
                    if end.node == i && end.incarnation == inc {
                        end.open = false;
                        end.dead_at = Some(self.now);
                    }
                }
            }
            let l = self.link_index(e, i);
            self.links[l].flush(self.now);
        }
        self.slots[i].node = None;
        self.timers[i].at = None;
        self.live[i] = DEAD;
        self.last_fault[i] = Some(self.now);
        // Orphans the crash cut off from the origin cannot repair: the bound does not apply.
        let connected = self.connected();
        let (orphans, cut_off): (Vec<usize>, Vec<usize>) = orphans.into_iter().partition(|&o| connected[o]);
        self.metrics.on_crash(i, self.now, &orphans, cut_off.len());
        self.trace_line(i, "Crash", None, None, "");
        self.global_check(None);
    }

    pub(super) fn restart(&mut self, i: usize) {
        if self.is_alive(i) {
            return;
        }
        self.fault_counts.restarts += 1;
        let slot = &mut self.slots[i];
        slot.incarnation += 1;
        slot.node = Some(Node::new(slot.config.clone()));
        self.live[i] = slot.incarnation;
        self.metrics.on_restart(i, self.now);
        self.last_fault[i] = Some(self.now);
        self.trace_line(i, "Restart", None, None, "");
        for k in 0..self.topo.neighbours(i).len() {
            let (_, e) = self.topo.neighbours(i)[k];
            self.reconnect(e, Some(i));
        }
        self.global_check(None);
    }
}
