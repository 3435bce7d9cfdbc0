//! One direction of a link: propagation latency, FIFO serialisation at a fixed bandwidth, and
//! loss modelled as QUIC retransmission.
//!
//! A frame starts serialising when the link is free (FIFO: the link is busy until its last frame
//! is serialised), takes `bytes / bandwidth`, then propagates for the latency. QUIC is reliable,
//! so a lost frame is not dropped: it is re-serialised and arrives one retransmission timeout
//! later (possibly more than once). Frames of one ordered stream never overtake each other: the
//! caller passes the arrival of the stream's previous frame.

use rand::Rng;

/// Nanoseconds of simulated time.
pub type Nanos = u64;

/// What every link shares: bandwidth, loss, the retransmission rule.
#[derive(Clone, Copy, Debug)]
pub struct Medium {
    /// Serialisation time per byte, in picoseconds (0: unlimited bandwidth).
    pub ps_per_byte: u64,
    /// Probability a frame is lost (each transmission independently).
    pub loss: f64,
    /// Retransmission timeout = max(latency × `rto_factor`, `rto_min`).
    pub rto_factor: f64,
    pub rto_min: Nanos,
}

impl Medium {
    /// From a bandwidth in bit/s (0: unlimited), a loss ratio and the RTO rule.
    pub fn new(bandwidth_bps: f64, loss: f64, rto_factor: f64, rto_min: Nanos) -> Self {
        let ps_per_byte = if bandwidth_bps > 0.0 { (8e12 / bandwidth_bps).round() as u64 } else { 0 };
        Self { ps_per_byte, loss, rto_factor, rto_min }
    }

    /// Time to put `bytes` on the wire.
    pub fn serialisation(&self, bytes: usize) -> Nanos {
        (bytes as u64).saturating_mul(self.ps_per_byte) / 1000
    }
}

/// One link direction: its latency and its queue (24 bytes: 60 000 of them stay cache-friendly).
#[derive(Clone, Debug)]
pub struct Link {
    pub latency: Nanos,
    /// The link is serialising until then.
    busy_until: Nanos,
    /// Arrival of the last frame on the control stream (frames there arrive in order).
    control_tail: Nanos,
}

/// When a frame leaves and arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmission {
    /// Its last byte left the sender (after any retransmissions).
    pub depart: Nanos,
    pub arrive: Nanos,
    /// Times it was lost and sent again.
    pub retransmissions: u32,
}

impl Link {
    pub fn new(latency: Nanos) -> Self {
        Self { latency, busy_until: 0, control_tail: 0 }
    }

    /// Send `bytes` at `now`. `after`: the frame may not arrive before this (the previous frame
    /// of the same ordered stream). Control frames pass `None` and use the link's control stream.
    pub fn transmit(
        &mut self,
        m: &Medium,
        now: Nanos,
        bytes: usize,
        after: Option<Nanos>,
        rng: &mut impl Rng,
    ) -> Transmission {
        let ser = m.serialisation(bytes);
        let start = now.max(self.busy_until);
        let mut depart = start + ser;
        self.busy_until = depart;
        let mut extra = 0;
        let mut retransmissions = 0;
        if m.loss > 0.0 {
            let rto = ((self.latency as f64 * m.rto_factor) as Nanos).max(m.rto_min);
            while rng.random::<f64>() < m.loss {
                // Lost: the sender notices after an RTO and sends it again.
                retransmissions += 1;
                extra += rto;
                depart += ser;
                self.busy_until += ser;
            }
        }
        let floor = after.unwrap_or(self.control_tail);
        let arrive = (depart + extra + self.latency).max(floor);
        if after.is_none() {
            self.control_tail = arrive;
        }
        Transmission { depart: depart + extra, arrive, retransmissions }
    }

    /// Arrival time of a frame that bypasses the queue (a connection close), in order after the
    /// control stream.
    pub fn notice(&mut self, now: Nanos) -> Nanos {
        let arrive = (now + self.latency).max(self.control_tail);
        self.control_tail = arrive;
        arrive
    }

    /// The sender crashed: whatever it had queued is gone.
    pub fn flush(&mut self, now: Nanos) {
        self.busy_until = self.busy_until.min(now);
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    const MS: Nanos = 1_000_000;

    #[test]
    fn frames_queue_fifo_behind_each_other() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        // 100 Mbit/s: 250 kB takes 20 ms.
        let m = Medium::new(100e6, 0.0, 3.0, 20 * MS);
        let mut l = Link::new(5 * MS);
        let a = l.transmit(&m, 0, 250_000, Some(0), &mut rng);
        assert_eq!(a, Transmission { depart: 20 * MS, arrive: 25 * MS, retransmissions: 0 });
        let b = l.transmit(&m, MS, 250_000, Some(0), &mut rng);
        assert_eq!(b.arrive, 45 * MS, "waits for the first to leave");
        let c = l.transmit(&m, 50 * MS, 125, None, &mut rng);
        assert_eq!(c.arrive, 50 * MS + 10_000 + 5 * MS, "an idle link only adds serialisation");
    }

    #[test]
    fn losses_cost_an_rto_and_keep_the_control_stream_in_order() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let m = Medium::new(0.0, 0.5, 3.0, 20 * MS);
        let mut l = Link::new(10 * MS);
        let (mut last, mut lost) = (0, 0);
        for i in 0..200 {
            let t = l.transmit(&m, i * MS, 100, None, &mut rng);
            lost += t.retransmissions;
            assert!(t.arrive >= last, "control frames never overtake");
            assert!(t.arrive >= i * MS + 10 * MS);
            assert!(t.arrive == last || (t.arrive - i * MS - 10 * MS).is_multiple_of(30 * MS), "whole RTOs only");
            last = t.arrive;
        }
        assert!(lost > 50, "{lost}");
    }
}
