//! The node graph: who is linked to whom, and each link's one-way latency.
//!
//! Node 0 is always the origin. A graph comes from a random geometric model (nodes scattered
//! over a continent, each linked to its nearest neighbours), from a topology file, or from an
//! explicit link list (tests).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::path::Path;
use std::time::Duration;

use rand::Rng;
use serde::Deserialize;

use crate::scenario::{OriginPlacement, ScenarioError, TopologySpec};

/// An undirected link between two nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edge {
    pub a: usize,
    pub b: usize,
    /// One-way propagation latency (each direction).
    pub latency: Duration,
}

impl Edge {
    /// The node at the other end from `n`.
    pub fn other(&self, n: usize) -> usize {
        if self.a == n { self.b } else { self.a }
    }
}

/// A node graph; node 0 is the origin.
#[derive(Clone, Debug)]
pub struct Topology {
    names: Vec<String>,
    edges: Vec<Edge>,
    /// Per node: (neighbour, edge index), in edge order.
    adj: Vec<Vec<(usize, usize)>>,
}

/// The best path from the origin to a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathCost {
    /// Sum of link latencies.
    pub latency: Duration,
    pub hops: u32,
}

impl Topology {
    /// Build from names (index 0 = origin) and links `(a, b, latency)`; duplicate links keep the
    /// lower latency, self-links are ignored.
    pub fn new(names: Vec<String>, links: impl IntoIterator<Item = (usize, usize, Duration)>) -> Self {
        let mut seen: BTreeMap<(usize, usize), usize> = BTreeMap::new();
        let mut edges: Vec<Edge> = Vec::new();
        for (a, b, latency) in links {
            if a == b {
                continue;
            }
            let key = (a.min(b), a.max(b));
            match seen.get(&key) {
                Some(&i) => edges[i].latency = edges[i].latency.min(latency),
                None => {
                    seen.insert(key, edges.len());
                    edges.push(Edge { a, b, latency });
                }
            }
        }
        let mut adj = vec![Vec::new(); names.len()];
        for (i, e) in edges.iter().enumerate() {
            adj[e.a].push((e.b, i));
            adj[e.b].push((e.a, i));
        }
        Self { names, edges, adj }
    }

    /// Hand-built graphs: `origin` is node 0, other names are numbered in order of appearance,
    /// links keep their order (which decides peer numbering, hence tie-breaks).
    pub fn from_links(origin: &str, links: &[(&str, &str, f64)]) -> Self {
        let mut names = vec![origin.to_string()];
        let index = |n: &str, names: &mut Vec<String>| match names.iter().position(|x| x == n) {
            Some(i) => i,
            None => {
                names.push(n.to_string());
                names.len() - 1
            }
        };
        let mut list = Vec::new();
        for (a, b, ms) in links {
            let (ia, ib) = (index(a, &mut names), index(b, &mut names));
            list.push((ia, ib, Duration::from_secs_f64(ms / 1000.0)));
        }
        Self::new(names, list)
    }

    /// A random geometric graph: `relays` nodes uniform in a square of `area_km`, each linked to
    /// its `k` nearest relays, the origin to its `origin_k` nearest; links made symmetric and
    /// components joined by their closest pair so the graph is connected.
    pub fn geometric(spec: &TopologySpec, rng: &mut impl Rng) -> Self {
        let n = spec.relays + 1;
        let side = spec.area_km;
        let mut pos: Vec<(f64, f64)> = Vec::with_capacity(n);
        pos.push(match spec.origin_at {
            OriginPlacement::Center => (side / 2.0, side / 2.0),
            OriginPlacement::Random => (rng.random::<f64>() * side, rng.random::<f64>() * side),
        });
        for _ in 0..spec.relays {
            pos.push((rng.random::<f64>() * side, rng.random::<f64>() * side));
        }
        let grid = Grid::new(&pos, side);
        let mut pairs: BTreeSet<(usize, usize)> = BTreeSet::new();
        for i in 0..n {
            let k = if i == 0 { spec.origin_k } else { spec.k };
            // Relays do not pick the origin: only the origin decides its own links.
            for j in grid.nearest(&pos, i, k, |j| j != 0) {
                pairs.insert((i.min(j), i.max(j)));
            }
        }
        connect_components(&pos, &mut pairs);
        let latency = |a: usize, b: usize| {
            let d = dist(pos[a], pos[b]);
            Duration::from_secs_f64((d / spec.km_per_ms + spec.hop_ms) / 1000.0)
        };
        let names = (0..n).map(|i| if i == 0 { "origin".to_string() } else { format!("r{i:05}") }).collect();
        Self::new(names, pairs.into_iter().map(|(a, b)| (a, b, latency(a, b))))
    }

    /// A topology file: `[neighbours]` maps a node to a list of neighbours (latency
    /// `default_latency_ms`) or to a table `{ neighbour = latency_ms }`; links are symmetric.
    /// The origin is the node named by `origin` (default `"origin"`).
    pub fn from_file(path: &Path) -> Result<Self, ScenarioError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ScenarioError::Read { path: path.to_owned(), source })?;
        let file: TopologyFile =
            toml::from_str(&text).map_err(|e| ScenarioError::Parse { path: path.to_owned(), source: Box::new(e) })?;
        let origin = file.origin.unwrap_or_else(|| "origin".into());
        let default = file.default_latency_ms.unwrap_or(5.0);
        let mut links: Vec<(String, String, f64)> = Vec::new();
        for (a, list) in &file.neighbours {
            match list {
                NeighbourList::Names(names) => links.extend(names.iter().map(|b| (a.clone(), b.clone(), default))),
                NeighbourList::Latencies(map) => links.extend(map.iter().map(|(b, ms)| (a.clone(), b.clone(), *ms))),
            }
        }
        if !links.iter().any(|(a, b, _)| *a == origin || *b == origin) {
            return Err(ScenarioError::Invalid(format!("{}: the origin {origin:?} has no links", path.display())));
        }
        if links.iter().any(|(_, _, ms)| ms.is_nan() || *ms < 0.0) {
            return Err(ScenarioError::Invalid(format!("{}: latencies must be non-negative", path.display())));
        }
        let refs: Vec<(&str, &str, f64)> = links.iter().map(|(a, b, l)| (a.as_str(), b.as_str(), *l)).collect();
        Ok(Self::from_links(&origin, &refs))
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn name(&self, node: usize) -> &str {
        &self.names[node]
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    pub fn edges(&self) -> &[Edge] {
        &self.edges
    }

    /// (neighbour, edge index) pairs of `node`.
    pub fn neighbours(&self, node: usize) -> &[(usize, usize)] {
        &self.adj[node]
    }

    /// Shortest paths from `from` by latency plus `per_hop` for every hop (ties: fewer hops);
    /// `None` for unreachable nodes. The returned latency excludes the `per_hop` terms.
    pub fn shortest_paths(&self, from: usize, per_hop: Duration) -> Vec<Option<PathCost>> {
        let per_hop = per_hop.as_nanos() as u64;
        let mut best: Vec<Option<(u64, u32, u64)>> = vec![None; self.len()];
        let mut heap = BinaryHeap::new();
        best[from] = Some((0, 0, 0));
        heap.push(Reverse((0u64, 0u32, from, 0u64)));
        while let Some(Reverse((cost, hops, n, lat))) = heap.pop() {
            if best[n].is_some_and(|(c, h, _)| (c, h) < (cost, hops)) {
                continue;
            }
            for &(m, e) in &self.adj[n] {
                let l = self.edges[e].latency.as_nanos() as u64;
                let cand = (cost + l + per_hop, hops + 1, lat + l);
                if best[m].is_none_or(|(c, h, _)| (cand.0, cand.1) < (c, h)) {
                    best[m] = Some(cand);
                    heap.push(Reverse((cand.0, cand.1, m, cand.2)));
                }
            }
        }
        best.into_iter()
            .map(|b| b.map(|(_, hops, lat)| PathCost { latency: Duration::from_nanos(lat), hops }))
            .collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopologyFile {
    origin: Option<String>,
    default_latency_ms: Option<f64>,
    neighbours: BTreeMap<String, NeighbourList>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NeighbourList {
    Names(Vec<String>),
    Latencies(BTreeMap<String, f64>),
}

fn dist(a: (f64, f64), b: (f64, f64)) -> f64 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}

/// A uniform grid over the square, for nearest-neighbour queries in O(k) per node.
struct Grid {
    cells: Vec<Vec<usize>>,
    per_side: usize,
    cell: f64,
}

impl Grid {
    fn new(pos: &[(f64, f64)], side: f64) -> Self {
        let per_side = ((pos.len() as f64 / 2.0).sqrt().ceil() as usize).max(1);
        let cell = side / per_side as f64;
        let mut cells = vec![Vec::new(); per_side * per_side];
        let g = Self { cells: Vec::new(), per_side, cell };
        for (i, &p) in pos.iter().enumerate() {
            let (cx, cy) = g.cell_of(p);
            cells[cy * per_side + cx].push(i);
        }
        Self { cells, ..g }
    }

    fn cell_of(&self, p: (f64, f64)) -> (usize, usize) {
        let c = |v: f64| ((v / self.cell).floor().max(0.0) as usize).min(self.per_side - 1);
        (c(p.0), c(p.1))
    }

    /// The `k` nodes nearest to `i` that pass `keep`, nearest first (ties: lower index).
    fn nearest(&self, pos: &[(f64, f64)], i: usize, k: usize, keep: impl Fn(usize) -> bool) -> Vec<usize> {
        let (cx, cy) = self.cell_of(pos[i]);
        let mut found: Vec<(f64, usize)> = Vec::new();
        let max_ring = self.per_side;
        for ring in 0..=max_ring {
            let (lo_x, hi_x) = (cx as i64 - ring as i64, cx as i64 + ring as i64);
            let (lo_y, hi_y) = (cy as i64 - ring as i64, cy as i64 + ring as i64);
            for y in lo_y..=hi_y {
                for x in lo_x..=hi_x {
                    let on_ring = y == lo_y || y == hi_y || x == lo_x || x == hi_x;
                    if !on_ring || x < 0 || y < 0 || x >= self.per_side as i64 || y >= self.per_side as i64 {
                        continue;
                    }
                    for &j in &self.cells[y as usize * self.per_side + x as usize] {
                        if j != i && keep(j) {
                            found.push((dist(pos[i], pos[j]), j));
                        }
                    }
                }
            }
            found.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            found.truncate(k);
            // Anything in a farther ring is at least `ring` cells away.
            if found.len() == k && found.last().is_some_and(|(d, _)| *d <= ring as f64 * self.cell) {
                break;
            }
        }
        found.into_iter().map(|(_, j)| j).collect()
    }
}

/// Join every component to the rest by its closest pair of nodes until one component remains.
fn connect_components(pos: &[(f64, f64)], pairs: &mut BTreeSet<(usize, usize)>) {
    let n = pos.len();
    loop {
        let mut uf = UnionFind::new(n);
        for &(a, b) in pairs.iter() {
            uf.union(a, b);
        }
        let root0 = uf.find(0);
        // The smallest component not containing the origin, if any.
        let mut sizes: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for i in 0..n {
            sizes.entry(uf.find(i)).or_default().push(i);
        }
        let Some(comp) = sizes.iter().filter(|(r, _)| **r != root0).map(|(_, v)| v).min_by_key(|v| (v.len(), v[0]))
        else {
            return;
        };
        let root = uf.find(comp[0]);
        let mut best: Option<(f64, usize, usize)> = None;
        for &a in comp {
            for b in 0..n {
                if uf.find(b) == root {
                    continue;
                }
                let d = dist(pos[a], pos[b]);
                if best.is_none_or(|(bd, _, _)| d < bd) {
                    best = Some((d, a, b));
                }
            }
        }
        // Invariant: another component exists (we found one not containing the origin).
        let (_, a, b) = best.expect("another component exists");
        pairs.insert((a.min(b), a.max(b)));
    }
}

struct UnionFind(Vec<usize>);

impl UnionFind {
    fn new(n: usize) -> Self {
        Self((0..n).collect())
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.0[ra.max(rb)] = ra.min(rb);
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    #[test]
    fn geometric_graph_is_connected_symmetric_and_matches_brute_force_knn() {
        let spec = TopologySpec { relays: 400, k: 4, origin_k: 3, ..TopologySpec::default() };
        let t = Topology::geometric(&spec, &mut ChaCha8Rng::seed_from_u64(7));
        assert_eq!(t.len(), 401);
        assert_eq!(t.neighbours(0).len(), 3, "only the origin picks its links");
        let reach = t.shortest_paths(0, Duration::ZERO);
        assert!(reach.iter().all(Option::is_some), "connected");
        for e in t.edges() {
            let ms = e.latency.as_secs_f64() * 1000.0;
            assert!((1.0..=1.0 + 4000.0 * 1.5 / 200.0).contains(&ms), "{ms}");
        }
        // Every relay has at least its k nearest (grid search agrees with brute force).
        let t2 = Topology::geometric(&spec, &mut ChaCha8Rng::seed_from_u64(7));
        assert_eq!(t.edges(), t2.edges(), "same seed, same graph");
        assert!(t.neighbours(5).len() >= 4);
    }

    #[test]
    fn dijkstra_prefers_latency_then_hops() {
        let t = Topology::from_links("o", &[("o", "a", 5.0), ("a", "d", 5.0), ("o", "d", 10.0), ("o", "b", 1.0)]);
        let p = t.shortest_paths(0, Duration::ZERO);
        let d = t.index("d").unwrap();
        assert_eq!(p[d], Some(PathCost { latency: Duration::from_millis(10), hops: 1 }));
        let p = t.shortest_paths(0, Duration::from_millis(1));
        assert_eq!(p[d].unwrap().hops, 1);
    }

    #[test]
    fn grid_nearest_matches_brute_force() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let pos: Vec<(f64, f64)> =
            (0..300).map(|_| (rng.random::<f64>() * 100.0, rng.random::<f64>() * 100.0)).collect();
        let g = Grid::new(&pos, 100.0);
        for i in 0..pos.len() {
            let got = g.nearest(&pos, i, 5, |_| true);
            let mut all: Vec<(f64, usize)> =
                (0..pos.len()).filter(|&j| j != i).map(|j| (dist(pos[i], pos[j]), j)).collect();
            all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let want: Vec<usize> = all.into_iter().take(5).map(|(_, j)| j).collect();
            assert_eq!(got, want, "node {i}");
        }
    }
}
