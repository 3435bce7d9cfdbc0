//! A node's pending outputs, first in first out. The host drains them after every input, so
//! the queue is empty between inputs; unlike a ring buffer, which would wander through its
//! whole capacity, this one starts again at the front of its buffer whenever it empties. The
//! memory the next outputs go to is then always the same, and a host can prefetch it
//! ([`super::Node::output_queue_address`]).

use super::Output;

#[derive(Debug, Default)]
pub(super) struct OutputQueue {
    items: Vec<Option<Output>>,
    /// Index of the next output to hand out.
    next: usize,
}

impl OutputQueue {
    pub(super) fn push_back(&mut self, output: Output) {
        self.items.push(Some(output));
    }

    pub(super) fn pop_front(&mut self) -> Option<Output> {
        let output = self.items.get_mut(self.next)?.take();
        self.next += 1;
        if self.next == self.items.len() {
            self.items.clear();
            self.next = 0;
        }
        output
    }

    /// Where the next output will be written (the buffer's start when empty).
    pub(super) fn address(&self) -> *const u8 {
        self.items.as_ptr().wrapping_add(self.items.len()).cast()
    }
}

impl Extend<Output> for OutputQueue {
    fn extend<I: IntoIterator<Item = Output>>(&mut self, outputs: I) {
        self.items.extend(outputs.into_iter().map(Some));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::PeerId;

    fn close(n: u64) -> Output {
        Output::Close { peer: PeerId(n), reason: String::new() }
    }

    fn peer(o: Option<Output>) -> Option<u64> {
        match o {
            Some(Output::Close { peer, .. }) => Some(peer.0),
            _ => None,
        }
    }

    #[test]
    fn first_in_first_out_and_starts_again_at_the_front_when_drained() {
        let mut q = OutputQueue::default();
        q.push_back(close(1));
        q.extend([close(2), close(3)]);
        let start = q.items.as_ptr();
        assert_eq!(peer(q.pop_front()), Some(1));
        q.push_back(close(4));
        let drained: Vec<_> = std::iter::from_fn(|| peer(q.pop_front())).collect();
        assert_eq!(drained, vec![2, 3, 4]);
        assert_eq!(peer(q.pop_front()), None);
        assert_eq!(q.address(), start.cast(), "empty again: the next output goes to the front");
    }
}
