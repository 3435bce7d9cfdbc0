//! A node's neighbours by `PeerId`, in one sorted `Vec`: a node has a handful of them, so a
//! binary search over contiguous entries beats a `BTreeMap` (whose leaf reserves room for 11 and
//! is one more pointer to chase), and a host can prefetch the whole table (see
//! [`super::Node::peer_table_memory`]). Iteration is in id order, as the `BTreeMap`'s was.

use super::PeerId;

#[derive(Debug, Clone)]
pub(super) struct PeerTable<V> {
    entries: Vec<(PeerId, V)>,
}

impl<V> Default for PeerTable<V> {
    fn default() -> Self {
        Self { entries: Vec::new() }
    }
}

impl<V> PeerTable<V> {
    fn find(&self, id: PeerId) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&id, |(k, _)| *k)
    }

    pub(super) fn get(&self, id: &PeerId) -> Option<&V> {
        self.find(*id).ok().map(|i| &self.entries[i].1)
    }

    pub(super) fn get_mut(&mut self, id: &PeerId) -> Option<&mut V> {
        self.find(*id).ok().map(|i| &mut self.entries[i].1)
    }

    pub(super) fn contains_key(&self, id: &PeerId) -> bool {
        self.find(*id).is_ok()
    }

    /// Insert or replace; returns the replaced value.
    pub(super) fn insert(&mut self, id: PeerId, value: V) -> Option<V> {
        match self.find(id) {
            Ok(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            Err(i) => {
                self.entries.insert(i, (id, value));
                None
            }
        }
    }

    pub(super) fn remove(&mut self, id: &PeerId) -> Option<V> {
        self.find(*id).ok().map(|i| self.entries.remove(i).1)
    }

    /// In id order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&PeerId, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }

    /// The entries as stored, for cache hints.
    pub(super) fn memory(&self) -> &[(PeerId, V)] {
        &self.entries
    }
}

impl<'a, V> IntoIterator for &'a PeerTable<V> {
    type Item = (&'a PeerId, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (PeerId, V)>, fn(&'a (PeerId, V)) -> (&'a PeerId, &'a V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_id_order_through_inserts_and_removes() {
        let mut t = PeerTable::default();
        for id in [5, 1, 9, 3] {
            assert_eq!(t.insert(PeerId(id), id * 10), None);
        }
        assert_eq!(t.insert(PeerId(3), 31), Some(30));
        assert_eq!(t.remove(&PeerId(9)), Some(90));
        assert_eq!(t.remove(&PeerId(9)), None);
        assert!(t.contains_key(&PeerId(5)) && !t.contains_key(&PeerId(2)));
        *t.get_mut(&PeerId(1)).unwrap() += 1;
        let all: Vec<_> = t.iter().map(|(k, v)| (k.0, *v)).collect();
        assert_eq!(all, vec![(1, 11), (3, 31), (5, 50)]);
        assert_eq!(t.get(&PeerId(5)), Some(&50));
    }
}
