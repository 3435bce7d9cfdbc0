//! Drives origin and relay state machines with an in-memory, zero-latency harness (a virtual
//! clock, no sockets) and proves the live path's protocol: hop-by-hop subscription on demand,
//! byte-identical fan-out, channels that never mix, resume without gaps after a parent loss,
//! release of idle channels, and refusal of bad peers.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use relaycast_core::node::ChannelStatus;
use relaycast_core::wire::Message;
use relaycast_core::{
    Availability, Event, Name, Node, NodeConfig, Output, PeerId, Playback, RenditionInfo, Role, SourcePart,
    SourceSegment,
};

/// A network of nodes joined by perfect links; each link has one `PeerId` on each side.
struct Net {
    now: Instant,
    nodes: Vec<Node>,
    /// (node, peer id at that node) -> (other node, peer id at the other node)
    links: BTreeMap<(usize, PeerId), (usize, PeerId)>,
    next_peer: u64,
    events: Vec<(usize, Event)>,
    closed: Vec<(usize, PeerId, String)>,
    /// Keep-alive messages sent: (from node, `Ping` / `Pong` / `Alive`) -> count.
    keepalives: BTreeMap<(usize, &'static str), usize>,
    /// `Ping`s sent: (from node, to node) -> count.
    pings: BTreeMap<(usize, usize), usize>,
    /// Nodes whose incoming catalogues are still on their way: held, as (node, from peer, message).
    catalogs_in_flight: Option<(usize, Vec<(PeerId, Message)>)>,
}

impl Net {
    fn new() -> Self {
        // The harness's one real clock read: the epoch of its virtual clock.
        #[allow(clippy::disallowed_methods)]
        let now = Instant::now();
        Self {
            now,
            nodes: Vec::new(),
            links: BTreeMap::new(),
            next_peer: 1,
            events: Vec::new(),
            closed: Vec::new(),
            keepalives: BTreeMap::new(),
            pings: BTreeMap::new(),
            catalogs_in_flight: None,
        }
    }

    fn add(&mut self, role: Role, name: &str, token: &str) -> usize {
        let id = self.nodes.len() as u64 + 1;
        self.add_config(NodeConfig { role, name: name.into(), id, token: token.into(), ..NodeConfig::default() })
    }

    fn add_config(&mut self, config: NodeConfig) -> usize {
        self.nodes.push(Node::new(config));
        self.nodes.len() - 1
    }

    /// `child` dials `parent`.
    fn connect(&mut self, child: usize, parent: usize) -> (PeerId, PeerId) {
        let at_child = PeerId(self.next_peer);
        let at_parent = PeerId(self.next_peer + 1);
        self.next_peer += 2;
        self.links.insert((child, at_child), (parent, at_parent));
        self.links.insert((parent, at_parent), (child, at_child));
        let now = self.now;
        self.nodes[parent].peer_accepted(now, at_parent);
        self.nodes[child].peer_dialed(now, at_child);
        self.run();
        // Let due timers (the origin's first flood) fire, so routes and attachments settle.
        self.advance(Duration::ZERO);
        (at_child, at_parent)
    }

    fn cut(&mut self, node: usize, peer: PeerId) {
        if let Some((other, other_peer)) = self.links.remove(&(node, peer)) {
            self.links.remove(&(other, other_peer));
            let now = self.now;
            self.nodes[node].peer_lost(now, peer, "cut");
            self.nodes[other].peer_lost(now, other_peer, "cut");
        }
    }

    /// Deliver every output until the network is quiet.
    fn run(&mut self) {
        let mut work: VecDeque<usize> = (0..self.nodes.len()).collect();
        while let Some(i) = work.pop_front() {
            while let Some(out) = self.nodes[i].poll_output() {
                let now = self.now;
                match out {
                    Output::Send { peer, msg } => {
                        let keepalive = match msg {
                            Message::Ping { .. } => Some("Ping"),
                            Message::Pong { .. } => Some("Pong"),
                            Message::Alive => Some("Alive"),
                            _ => None,
                        };
                        if let Some(kind) = keepalive {
                            *self.keepalives.entry((i, kind)).or_default() += 1;
                        }
                        if let Some(&(j, pj)) = self.links.get(&(i, peer)) {
                            if keepalive == Some("Ping") {
                                *self.pings.entry((i, j)).or_default() += 1;
                            }
                            if let Some((held, msgs)) = &mut self.catalogs_in_flight
                                && *held == j
                                && matches!(msg, Message::Catalog { .. })
                            {
                                msgs.push((pj, msg));
                                continue;
                            }
                            self.nodes[j].handle_message(now, pj, msg);
                            work.push_back(j);
                        }
                    }
                    Output::SendSegments { peer, channel, rendition, segments } => {
                        if let Some(&(j, pj)) = self.links.get(&(i, peer)) {
                            for segment in segments {
                                self.nodes[j].handle_segment(now, pj, channel.clone(), rendition.clone(), segment);
                            }
                            work.push_back(j);
                        }
                    }
                    Output::SendPart { peer, channel, rendition, part } => {
                        if let Some(&(j, pj)) = self.links.get(&(i, peer)) {
                            self.nodes[j].handle_part(now, pj, channel, rendition, *part);
                            work.push_back(j);
                        }
                    }
                    Output::Close { peer, reason } => {
                        self.closed.push((i, peer, reason));
                        if let Some((j, pj)) = self.links.remove(&(i, peer)) {
                            self.links.remove(&(j, pj));
                            self.nodes[j].peer_lost(now, pj, "closed by peer");
                            work.push_back(j);
                        }
                    }
                    Output::Event(e) => self.events.push((i, e)),
                }
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = self.nodes.iter().filter_map(|n| n.poll_timeout()).min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    for n in &mut self.nodes {
                        n.handle_timeout(now);
                    }
                    self.run();
                }
                _ => break,
            }
        }
        self.now = end;
    }

    /// Hold back the catalogues sent to `node` (as if slow on the wire) until `deliver_catalogs`.
    fn hold_catalogs(&mut self, node: usize) {
        self.catalogs_in_flight = Some((node, Vec::new()));
    }

    fn deliver_catalogs(&mut self) {
        let Some((node, msgs)) = self.catalogs_in_flight.take() else { return };
        let now = self.now;
        for (peer, msg) in msgs {
            self.nodes[node].handle_message(now, peer, msg);
        }
        self.run();
    }

    fn seqs(&self, node: usize, channel: &str, rendition: &str) -> Vec<u64> {
        let ch = self.nodes[node].channel(&name(channel));
        ch.and_then(|c| c.renditions.get(&name(rendition)))
            .map(|r| r.window.iter().map(|s| s.meta.seq).collect())
            .unwrap_or_default()
    }
}

fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

fn chunk(channel: &str, i: u64) -> SourceSegment {
    SourceSegment {
        source_seq: Some(i),
        discontinuity: false,
        duration_us: 2_000_000,
        data: Bytes::from(format!("{channel}-segment-{i}")),
    }
}

fn origin_with(net: &mut Net, channels: &[&str]) -> usize {
    let o = net.add(Role::Origin, "origin", "secret");
    let now = net.now;
    for c in channels {
        net.nodes[o].set_local_channel(now, name(c), "test", vec![RenditionInfo::named(name("src"))]);
    }
    o
}

fn publish(net: &mut Net, origin: usize, channel: &str, i: u64) {
    let now = net.now;
    net.nodes[origin].publish(now, &name(channel), &name("src"), chunk(channel, i), 1_000 + i).unwrap();
    net.run();
}

#[test]
fn viewer_pulls_a_channel_through_two_relays_and_gets_identical_bytes() {
    let mut net = Net::new();
    let o = origin_with(&mut net, &["news", "sport"]);
    let r1 = net.add(Role::Relay, "r1", "secret");
    let r2 = net.add(Role::Relay, "r2", "secret");
    net.connect(r1, o);
    net.connect(r2, r1);
    for i in 0..10 {
        publish(&mut net, o, "news", i);
        publish(&mut net, o, "sport", i);
    }
    // Nothing flows before anyone watches (pull on demand).
    assert!(net.nodes[r1].channel(&name("news")).is_none());
    assert_eq!(net.nodes[r2].catalog().len(), 2, "the catalogue reaches every relay");

    let now = net.now;
    assert_eq!(net.nodes[r2].viewer_request(now, &name("news")), Availability::Pending);
    net.run();
    assert_eq!(net.nodes[r2].viewer_request(now, &name("news")), Availability::Ready);
    // The join backfill is the last six segments, then everything new arrives.
    assert_eq!(net.seqs(r2, "news", "src"), vec![4, 5, 6, 7, 8, 9]);
    publish(&mut net, o, "news", 10);
    publish(&mut net, o, "sport", 10);
    assert_eq!(net.seqs(r2, "news", "src"), (4..=10).collect::<Vec<_>>());
    // The other channel was never pulled and never mixed in (F14).
    assert!(net.nodes[r2].channel(&name("sport")).is_none());
    assert!(net.nodes[r1].channel(&name("sport")).is_none());
    let at_origin =
        net.nodes[o].channel(&name("news")).unwrap().renditions[&name("src")].window.get(10).unwrap().clone();
    let at_edge =
        net.nodes[r2].channel(&name("news")).unwrap().renditions[&name("src")].window.get(10).unwrap().clone();
    assert_eq!(at_origin, at_edge, "bytes and metadata (incl. origin timestamp) are identical");
    for seg in net.nodes[r2].channel(&name("news")).unwrap().renditions[&name("src")].window.iter() {
        assert!(seg.data.starts_with(b"news-"), "no foreign data in the news window");
    }
}

#[test]
fn a_signed_channel_is_signed_at_every_relay_and_a_public_one_stays_open() {
    let mut net = Net::new();
    let o = net.add_config(NodeConfig {
        role: Role::Origin,
        name: "origin".into(),
        id: 1,
        token: "secret".into(),
        playback: [(name("paid"), Playback::Signed)].into_iter().collect(),
        ..NodeConfig::default()
    });
    let now = net.now;
    for c in ["paid", "free"] {
        net.nodes[o].set_local_channel(now, name(c), "test", vec![RenditionInfo::named(name("src"))]);
    }
    // A relay whose own default is public still enforces what the origin declared.
    let r1 = net.add(Role::Relay, "r1", "secret");
    let r2 = net.add(Role::Relay, "r2", "secret");
    net.connect(r1, o);
    net.connect(r2, r1);
    for node in [o, r1, r2] {
        assert_eq!(net.nodes[node].playback(&name("paid")), Playback::Signed, "node {node}");
        assert_eq!(net.nodes[node].playback(&name("free")), Playback::Public, "node {node}");
    }
    // A channel nobody has heard of takes the node's own default: fail closed where configured so.
    let edge = net.add_config(NodeConfig { default_playback: Playback::Signed, ..NodeConfig::default() });
    assert_eq!(net.nodes[edge].playback(&name("unknown")), Playback::Signed);
}

#[test]
fn unknown_channel_is_refused_without_asking_upstream_twice() {
    let mut net = Net::new();
    let o = origin_with(&mut net, &["news"]);
    let r1 = net.add(Role::Relay, "r1", "secret");
    net.connect(r1, o);
    let now = net.now;
    let a = net.nodes[r1].viewer_request(now, &name("nope"));
    assert!(matches!(a, Availability::Unavailable(ref why) if why.contains("no channel named nope")), "{a:?}");
    assert!(matches!(net.nodes[o].viewer_request(now, &name("nope")), Availability::Unavailable(_)));
}

#[test]
fn wrong_token_is_refused_and_the_parent_keeps_serving() {
    let mut net = Net::new();
    let o = origin_with(&mut net, &["news"]);
    let good = net.add(Role::Relay, "good", "secret");
    let bad = net.add(Role::Relay, "bad", "guess");
    net.connect(good, o);
    net.connect(bad, o);
    assert!(net.closed.iter().any(|(n, _, why)| *n == o && why.contains("wrong cluster token")), "{:?}", net.closed);
    assert_eq!(net.nodes[o].children().count(), 1);
    let now = net.now;
    net.nodes[good].viewer_request(now, &name("news"));
    net.run();
    publish(&mut net, o, "news", 1);
    assert_eq!(net.seqs(good, "news", "src"), vec![1]);
    assert!(net.nodes[bad].channel(&name("news")).is_none());
}

#[test]
fn a_child_sending_segments_is_dropped() {
    let mut net = Net::new();
    let o = origin_with(&mut net, &["news"]);
    let r1 = net.add(Role::Relay, "r1", "secret");
    let (_, at_origin) = net.connect(r1, o);
    let now = net.now;
    let seg = relaycast_core::Segment {
        meta: relaycast_core::SegmentMeta { seq: 99, disc_seq: 0, discontinuity: false, duration_us: 1, origin_ms: 1 },
        data: Bytes::from_static(b"evil"),
        signature: None,
    };
    net.nodes[o].handle_segment(now, at_origin, name("news"), name("src"), seg);
    net.run();
    assert!(net.closed.iter().any(|(n, _, why)| *n == o && why.contains("a child may not send segments")));
    assert!(net.seqs(o, "news", "src").is_empty(), "nothing from a child enters the origin's window");
}

/// An origin with channel `news` and one relay `r1` that carries it for a viewer: the
/// nodes, and the link's ids at `r1` (towards the origin) and at the origin (towards `r1`).
fn relay_carrying_news(net: &mut Net) -> (usize, usize, PeerId, PeerId) {
    let o = origin_with(net, &["news"]);
    let r1 = net.add(Role::Relay, "r1", "secret");
    let (at_r1, r1_at_o) = net.connect(r1, o);
    let now = net.now;
    net.nodes[r1].viewer_request(now, &name("news"));
    net.run();
    (o, r1, at_r1, r1_at_o)
}

#[test]
fn relay_resumes_from_its_last_sequence_after_losing_its_parent() {
    let mut net = Net::new();
    let (o, r1, at_r1, _) = relay_carrying_news(&mut net);
    for i in 0..5 {
        publish(&mut net, o, "news", i);
    }
    net.cut(r1, at_r1);
    // The stream goes on at the origin while the relay is cut off.
    for i in 5..9 {
        publish(&mut net, o, "news", i);
    }
    assert_eq!(net.seqs(r1, "news", "src"), vec![0, 1, 2, 3, 4]);
    net.connect(r1, o);
    assert_eq!(net.seqs(r1, "news", "src"), (0..9).collect::<Vec<_>>(), "the gap is filled from the parent's window");
    publish(&mut net, o, "news", 9);
    assert_eq!(net.seqs(r1, "news", "src"), (0..10).collect::<Vec<_>>());
}

/// origin → `r1` → `r2`, with a viewer of `news` at `r2`: the nodes, and the r2–r1 link's ids
/// at `r2` and at `r1`.
fn chain_carrying_news(net: &mut Net) -> (usize, usize, usize, PeerId, PeerId) {
    let o = origin_with(net, &["news"]);
    let r1 = net.add(Role::Relay, "r1", "secret");
    let r2 = net.add(Role::Relay, "r2", "secret");
    net.connect(r1, o);
    let (r2_to_r1, r2_at_r1) = net.connect(r2, r1);
    let now = net.now;
    net.nodes[r2].viewer_request(now, &name("news"));
    net.run();
    (o, r1, r2, r2_to_r1, r2_at_r1)
}

/// `r2` carries `news` through `r1`, holding 0-4, and is then cut off from `r1` while the origin
/// publishes up to `last`. Returns (origin, r2).
fn child_cut_off_while_news_goes_on(net: &mut Net, last: u64) -> (usize, usize) {
    let (o, _, r2, r2_to_r1, _) = chain_carrying_news(net);
    for i in 0..5 {
        publish(net, o, "news", i);
    }
    net.cut(r2, r2_to_r1);
    for i in 5..=last {
        publish(net, o, "news", i);
    }
    (o, r2)
}

/// `child` attaches to a new relay `r3` on the origin, which does not carry `news` yet.
fn reattach_through_a_new_relay(net: &mut Net, o: usize, child: usize) -> usize {
    let r3 = net.add(Role::Relay, "r3", "secret");
    net.connect(r3, o);
    attach(net, child, r3);
    r3
}

/// `child` dials `parent` and waits for the parent's next route flood to attach to it.
fn attach(net: &mut Net, child: usize, parent: usize) {
    net.connect(child, parent);
    net.advance(Duration::from_secs(3));
}

fn parent_name(net: &Net, node: usize) -> Option<String> {
    net.nodes[node].parent().map(|(_, n)| n.to_string())
}

#[test]
fn a_relay_that_starts_carrying_for_a_resuming_child_fetches_what_the_child_missed() {
    let mut net = Net::new();
    // 10 segments missed: more than the join backfill of 6.
    let (o, r2) = child_cut_off_while_news_goes_on(&mut net, 14);
    let r3 = reattach_through_a_new_relay(&mut net, o, r2);
    assert_eq!(parent_name(&net, r2).as_deref(), Some("r3"));
    assert_eq!(net.seqs(r2, "news", "src"), (0..15).collect::<Vec<_>>(), "no gap at the child");
    assert_eq!(net.seqs(r3, "news", "src"), (5..15).collect::<Vec<_>>(), "r3 fetched from the child's point");
    publish(&mut net, o, "news", 15);
    assert_eq!(net.seqs(r2, "news", "src"), (0..16).collect::<Vec<_>>());
}

#[test]
fn a_relay_carrying_for_a_child_one_segment_behind_still_gets_its_join_backfill() {
    let mut net = Net::new();
    let (o, r2) = child_cut_off_while_news_goes_on(&mut net, 5);
    let r3 = reattach_through_a_new_relay(&mut net, o, r2);
    assert_eq!(net.seqs(r2, "news", "src"), (0..6).collect::<Vec<_>>());
    // Segment 5 alone is what the child lacked; a new carrier still starts with 6 segments.
    assert_eq!(net.seqs(r3, "news", "src"), (0..6).collect::<Vec<_>>());
}

#[test]
fn a_parent_whose_catalogue_has_not_come_yet_does_not_make_its_child_drop_the_channel() {
    let mut net = Net::new();
    let (o, r2) = child_cut_off_while_news_goes_on(&mut net, 4);
    // A relay that has found a route, but whose parent's catalogue is still on the way (one
    // that has just restarted, say).
    let r3 = net.add(Role::Relay, "r3", "secret");
    net.hold_catalogs(r3);
    net.connect(r3, o);
    assert!(net.nodes[r3].catalog().is_empty(), "r3 knows no channel yet");
    attach(&mut net, r2, r3);
    assert_eq!(parent_name(&net, r2).as_deref(), Some("r3"));
    assert_eq!(net.seqs(r2, "news", "src"), (0..5).collect::<Vec<_>>(), "the child kept its window");
    let now = net.now;
    assert_eq!(net.nodes[r2].viewer_request(now, &name("news")), Availability::Ready);
    net.deliver_catalogs();
    publish(&mut net, o, "news", 5);
    assert_eq!(net.seqs(r2, "news", "src"), (0..6).collect::<Vec<_>>(), "and it flows on through r3");
}

#[test]
fn a_route_request_spreads_out_of_a_subtree_that_one_crash_orphaned() {
    let mut net = Net::new();
    let o = origin_with(&mut net, &["news"]);
    let [a, b, c, d, e] = ["a", "b", "c", "d", "e"].map(|n| net.add(Role::Relay, n, "secret"));
    net.connect(a, o);
    net.connect(b, a);
    net.connect(c, a);
    net.connect(b, c);
    net.connect(d, c);
    net.connect(e, o);
    // e joins d after d chose c: d keeps c (no clearly better route), so d's way up runs through
    // a like everyone's in the subtree, and e is the subtree's only neighbour outside it.
    net.connect(d, e);
    for (node, parent) in [(b, "a"), (c, "a"), (d, "c"), (e, "origin")] {
        assert_eq!(parent_name(&net, node).as_deref(), Some(parent));
    }
    // Cut a little after a periodic flood: the next one is most of an interval away.
    let flood = |net: &Net| net.nodes[o].route().map(|r| r.flood);
    let before = flood(&net);
    while flood(&net) == before {
        net.advance(Duration::from_millis(10));
    }
    net.advance(Duration::from_millis(150));
    let periodic = flood(&net);
    let a_links: Vec<PeerId> = net.links.keys().filter(|(n, _)| *n == a).map(|(_, p)| *p).collect();
    for peer in a_links {
        net.cut(a, peer);
    }
    // b and c have no usable route: every neighbour's runs through a. Their requests go to
    // each other and to d, whose parent c is the one asking; d passes them to e, e to the origin.
    net.advance(Duration::from_millis(300));
    assert!(flood(&net) > periodic, "the origin flooded on request, not on its timer");
    for node in [b, c, d] {
        let parent = parent_name(&net, node);
        assert!(parent.is_some() && parent.as_deref() != Some("a"), "node {node} repaired: {parent:?}");
    }
}

#[test]
fn a_resume_point_at_the_end_of_time_is_served_live_not_a_crash() {
    let mut net = Net::new();
    let (o, r1, _, r1_at_o) = relay_carrying_news(&mut net);
    let now = net.now;
    publish(&mut net, o, "news", 0);
    // A buggy or hostile child asks to resume after the last possible sequence number.
    let resume = vec![(name("src"), u64::MAX)];
    net.nodes[o].handle_message(now, r1_at_o, Message::Subscribe { channel: name("news"), resume, joining: false });
    net.run();
    publish(&mut net, o, "news", 1);
    assert_eq!(net.seqs(r1, "news", "src"), vec![0, 1], "the child is served live from there");
    assert!(net.closed.is_empty(), "{:?}", net.closed);
}

#[test]
fn idle_channels_are_released_hop_by_hop() {
    let mut net = Net::new();
    let o = origin_with(&mut net, &["news"]);
    let r1 = net.add(Role::Relay, "r1", "secret");
    let r2 = net.add(Role::Relay, "r2", "secret");
    net.connect(r1, o);
    net.connect(r2, r1);
    let now = net.now;
    net.nodes[r2].viewer_request(now, &name("news"));
    net.run();
    assert_eq!(net.nodes[o].channel(&name("news")).unwrap().subscribers.len(), 1);
    // Keep-alives keep the links up while the viewer goes away.
    net.advance(Duration::from_secs(31));
    assert!(net.nodes[r2].channel(&name("news")).is_none(), "edge released the channel");
    net.advance(Duration::from_secs(31));
    assert!(net.nodes[r1].channel(&name("news")).is_none(), "middle relay released it too");
    assert!(net.nodes[o].channel(&name("news")).unwrap().subscribers.is_empty());
    assert_eq!(net.nodes[o].channel(&name("news")).unwrap().status, ChannelStatus::Local);
    assert!(net.closed.is_empty(), "keep-alive kept every link: {:?}", net.closed);
}

#[test]
fn a_channel_whose_last_subscriber_is_lost_is_released_on_time() {
    let mut net = Net::new();
    let (_, r1, r2, _, r2_at_r1) = chain_carrying_news(&mut net);
    assert_eq!(net.nodes[r1].channel(&name("news")).unwrap().subscribers.len(), 1);
    // A viewer keeps watching at r2 for 35 s. r1 heard the channel wanted at the subscription,
    // more than the idle timeout (30 s) ago; its looks at its channels in the meantime found
    // nothing due, with a subscriber.
    for _ in 0..7 {
        net.advance(Duration::from_secs(5));
        let now = net.now;
        net.nodes[r2].viewer_request(now, &name("news"));
        net.run();
    }
    assert_eq!(net.nodes[r1].channel(&name("news")).unwrap().subscribers.len(), 1);
    net.cut(r1, r2_at_r1);
    net.advance(Duration::from_secs(2));
    assert!(net.nodes[r1].channel(&name("news")).is_none(), "released at the first wake after its subscriber left");
}

#[test]
fn silent_parent_is_detected_within_three_keepalives() {
    let mut net = Net::new();
    let o = origin_with(&mut net, &["news"]);
    let r1 = net.add(Role::Relay, "r1", "secret");
    let (at_r1, at_o) = net.connect(r1, o);
    // Make the link one-way dead: drop what r1 sends to the origin and vice versa, without
    // telling either side (a crashed host, not a closed connection).
    net.links.remove(&(r1, at_r1));
    net.links.remove(&(o, at_o));
    net.advance(Duration::from_millis(1600));
    assert!(
        net.events
            .iter()
            .any(|(n, e)| *n == r1 && matches!(e, Event::ParentLost { reason } if reason.contains("keep-alive"))),
        "{:?}",
        net.events
    );
}

#[test]
fn restarted_source_continues_numbering_with_a_discontinuity() {
    let mut net = Net::new();
    let o = origin_with(&mut net, &["news"]);
    for i in [100, 101, 102, 0, 1] {
        publish(&mut net, o, "news", i);
    }
    let w = &net.nodes[o].channel(&name("news")).unwrap().renditions[&name("src")].window;
    let metas: Vec<(u64, u32, bool)> = w.iter().map(|s| (s.meta.seq, s.meta.disc_seq, s.meta.discontinuity)).collect();
    assert_eq!(metas, vec![(100, 0, false), (101, 0, false), (102, 0, false), (103, 1, true), (104, 1, false)]);
    let now = net.now;
    let err = net.nodes[o].publish(now, &name("other"), &name("src"), chunk("other", 0), 0);
    assert!(err.is_err());
    let _ = Message::Ping { nonce: 0, rtt_us: 0 };
}

/// Case A of the keep-alive drop loop: the shell seeds every node's flood counter from the wall
/// clock (seconds), while the origin's flood ids advance one per flood interval (2 s). A relay
/// (re)started a minute after the origin must still take the origin's routes as current, attach,
/// and stay linked — not sit unattached and silent until the origin drops it as dead.
#[test]
fn relay_restarted_long_after_the_origin_attaches_and_stays_linked() {
    let mut net = Net::new();
    let clock_s = 1_700_000_000;
    let node = |role, name: &str, started_s| NodeConfig {
        role,
        name: name.into(),
        id: relaycast_core::node::node_id(name),
        token: "secret".into(),
        flood_base: started_s,
        ..NodeConfig::default()
    };
    let o = net.add_config(node(Role::Origin, "origin", clock_s));
    let r1 = net.add_config(node(Role::Relay, "r1", clock_s));
    let (at_r1, at_o) = net.connect(r1, o);
    net.advance(Duration::from_secs(2));
    assert_eq!(net.nodes[r1].parent().map(|(_, n)| n.to_string()), Some("origin".into()));

    // r1 crashes (no close seen); the origin finds its child dead by keep-alive.
    net.links.remove(&(r1, at_r1));
    net.links.remove(&(o, at_o));
    net.advance(Duration::from_secs(60));
    assert_eq!(net.nodes[o].children().count(), 0);

    // It restarts under the same name, 60 s of wall clock after the origin started.
    let r1 = net.add_config(node(Role::Relay, "r1", clock_s + 60));
    net.closed.clear();
    net.connect(r1, o);
    net.advance(Duration::from_secs(20));
    assert_eq!(
        net.nodes[r1].parent().map(|(_, n)| n.to_string()),
        Some("origin".into()),
        "restarted relay never attached; route view {:?}",
        net.nodes[r1].route_view(net.now)
    );
    assert_eq!(net.nodes[o].children().map(|(_, n)| n.to_string()).collect::<Vec<_>>(), vec!["r1".to_string()]);
    assert!(net.closed.is_empty(), "link dropped: {:?}", net.closed);
}

/// The keep-alive runs one way: the parent says `Alive` every keep-alive and the child, which
/// floods its route anyway, does not ping its parent for it (only an RTT probe every 5 floods).
#[test]
fn the_parent_says_it_is_alive_and_the_child_does_not_ping_it() {
    let mut net = Net::new();
    let o = origin_with(&mut net, &["news"]);
    let r1 = net.add(Role::Relay, "r1", "secret");
    net.connect(r1, o);
    net.advance(Duration::from_secs(10));
    let sent = |node: usize, kind: &'static str| net.keepalives.get(&(node, kind)).copied().unwrap_or(0);
    // 10 s at 500 ms: 20 ticks.
    assert!((19..=21).contains(&sent(o, "Alive")), "origin sent {} Alive", sent(o, "Alive"));
    assert!(sent(r1, "Ping") <= 2, "the child pinged its parent {} times in 10 s", sent(r1, "Ping"));
    assert_eq!(sent(r1, "Alive"), 0, "a node without children says Alive to nobody");
    assert!(net.closed.is_empty(), "{:?}", net.closed);
    assert_eq!(net.nodes[r1].parent().map(|(_, n)| n), Some("origin"));
}

/// One side of a link measures its RTT: a child its parent, else the side that dialed, which
/// passes its figure on in its pings, so the other side need not ping for it.
#[test]
fn one_side_of_a_link_probes_its_rtt_and_tells_the_other() {
    let mut net = Net::new();
    let o = origin_with(&mut net, &["news"]);
    let r1 = net.add(Role::Relay, "r1", "secret");
    let r2 = net.add(Role::Relay, "r2", "secret");
    net.connect(r1, o);
    net.connect(r2, o);
    // r2 dials r1; both are children of the origin, so this link is outside the tree.
    let (at_r2, _) = net.connect(r2, r1);
    assert_eq!(net.nodes[r2].parent().map(|(_, n)| n), Some("origin"));
    // The harness delivers at once (RTT 0); give r2 a figure that can only reach r1 by ping.
    let now = net.now;
    net.nodes[r2].peer_rtt(now, at_r2, Duration::from_millis(30));
    net.advance(Duration::from_secs(60));
    let pings = |from: usize, to: usize| net.pings.get(&(from, to)).copied().unwrap_or(0);
    // One probe per 5 floods (10 s) for 60 s, plus the one at the handshake.
    assert!((6..=8).contains(&pings(r2, r1)), "the dialer probed {} times in 60 s", pings(r2, r1));
    assert!(pings(r1, r2) <= 1, "the other side probed {} times as well", pings(r1, r2));
    assert!((6..=8).contains(&pings(r1, o)), "the child probed its parent {} times", pings(r1, o));
    assert!(pings(o, r1) <= 1, "the parent probed its child {} times", pings(o, r1));
    let rtt_at_r1 = net.nodes[r1].neighbours().find(|(_, n, _)| *n == "r2").and_then(|(_, _, rtt)| rtt);
    assert!(rtt_at_r1.is_some_and(|r| r >= Duration::from_millis(10)), "r1 never heard r2's RTT: {rtt_at_r1:?}");
    assert!(net.closed.is_empty(), "{:?}", net.closed);
}

/// When the transport measures each link's RTT (QUIC in the shell, links in the simulator), no
/// node pings to measure it: after the handshake's ping, the only pings left would be questions
/// to a quiet neighbour, and the RTT the shell reports is the one used.
#[test]
fn with_the_transports_rtt_nobody_pings_to_measure_it() {
    let mut net = Net::new();
    let config = |role: Role, name: &str, id: u64| NodeConfig {
        role,
        name: name.into(),
        id,
        token: "secret".into(),
        rtt_from_transport: true,
        ..NodeConfig::default()
    };
    let o = net.add_config(config(Role::Origin, "origin", 1));
    let now = net.now;
    net.nodes[o].set_local_channel(now, name("news"), "test", vec![RenditionInfo::named(name("src"))]);
    let r1 = net.add_config(config(Role::Relay, "r1", 2));
    let r2 = net.add_config(config(Role::Relay, "r2", 3));
    net.connect(r1, o);
    net.connect(r2, o);
    let (at_r2, _) = net.connect(r2, r1);
    let now = net.now;
    net.nodes[r2].peer_rtt(now, at_r2, Duration::from_millis(30));
    net.advance(Duration::from_secs(60));
    let pings = |from: usize, to: usize| net.pings.get(&(from, to)).copied().unwrap_or(0);
    for (from, to) in [(r1, o), (o, r1), (r2, r1), (r1, r2), (r2, o)] {
        assert!(pings(from, to) <= 1, "{from} pinged {to} {} times in 60 s", pings(from, to));
    }
    let rtt_at_r2 = net.nodes[r2].neighbours().find(|(_, n, _)| *n == "r1").and_then(|(_, _, rtt)| rtt);
    assert_eq!(rtt_at_r2, Some(Duration::from_millis(30)));
    assert!(net.closed.is_empty(), "{:?}", net.closed);
    assert_eq!(net.nodes[r1].parent().map(|(_, n)| n), Some("origin"));
}

/// A neighbour that reports an absurd RTT in its ping and then falls silent is still dropped:
/// the figure is capped at 10 s, so it cannot stretch the keep-alive's deadline (interval plus
/// four RTTs) to forever.
#[test]
fn a_neighbour_lying_about_its_rtt_is_still_dropped_when_silent() {
    let mut net = Net::new();
    let o = origin_with(&mut net, &["news"]);
    let r1 = net.add(Role::Relay, "r1", "secret");
    let (at_r1, at_o) = net.connect(r1, o);
    let now = net.now;
    net.nodes[o].handle_message(now, at_o, Message::Ping { nonce: 7, rtt_us: u64::MAX });
    net.run();
    let rtt = net.nodes[o].neighbours().find(|(_, n, _)| *n == "r1").and_then(|(_, _, rtt)| rtt);
    assert_eq!(rtt, Some(Duration::from_secs(10)));
    // From now on what r1 sends is lost.
    net.links.remove(&(r1, at_r1));
    net.advance(Duration::from_secs(60));
    assert!(net.closed.iter().any(|(n, _, why)| *n == o && why.contains("keep-alive")), "{:?}", net.closed);
}

/// A child proves it is alive with its floods: one that falls silent (its messages lost, the
/// connection not closed) is dropped by its parent 2.25 flood intervals after it last spoke.
#[test]
fn a_silent_child_is_dropped_by_its_parent() {
    let mut net = Net::new();
    let o = origin_with(&mut net, &["news"]);
    let r1 = net.add(Role::Relay, "r1", "secret");
    let (at_r1, _) = net.connect(r1, o);
    net.advance(Duration::from_secs(3));
    assert_eq!(net.nodes[o].children().count(), 1);
    // What r1 sends is lost; what the origin sends still arrives.
    net.links.remove(&(r1, at_r1));
    // Four keep-alives of silence are not enough: the child never pinged, it floods.
    net.advance(Duration::from_secs(2));
    assert_eq!(net.nodes[o].children().count(), 1, "dropped before 2.25 flood intervals");
    // Its last flood was heard at most 2 s before the cut: 4.5 s later it is gone.
    net.advance(Duration::from_secs(3));
    assert!(net.closed.iter().any(|(n, _, why)| *n == o && why.contains("keep-alive")), "{:?}", net.closed);
    assert_eq!(net.nodes[o].children().count(), 0);
}

/// A neighbour that has no route to flood (here: no origin at all) is quiet, not dead: the
/// keep-alive asks it directly instead of dropping a live link every 2.25 flood intervals.
#[test]
fn quiet_neighbour_without_a_route_is_not_dropped_as_dead() {
    let mut net = Net::new();
    let r1 = net.add(Role::Relay, "r1", "secret");
    let r2 = net.add(Role::Relay, "r2", "secret");
    let (at_r1, _) = net.connect(r1, r2);
    net.advance(Duration::from_secs(30));
    assert!(net.closed.is_empty(), "live link dropped: {:?}", net.closed);
    assert_eq!(net.nodes[r1].neighbours().count(), 1);
    assert_eq!(net.nodes[r2].neighbours().count(), 1);
    // A dead one is still found: cut the link silently.
    let at_r2 = net.links[&(r1, at_r1)].1;
    net.links.remove(&(r1, at_r1));
    net.links.remove(&(r2, at_r2));
    net.advance(Duration::from_secs(6));
    assert!(net.closed.iter().any(|(n, _, why)| *n == r1 && why.contains("keep-alive")), "{:?}", net.closed);
    assert_eq!(net.nodes[r1].neighbours().count(), 0);
}

fn part(seg: u64, index: u32, last: bool) -> SourcePart {
    SourcePart {
        source_seq: seg,
        index,
        independent: index == 0,
        last,
        discontinuity: false,
        duration_us: 250_000,
        data: Bytes::from(format!("part-{seg}.{index};")),
    }
}

fn parts_at(net: &Net, node: usize, seq: u64) -> Vec<u32> {
    let r = &net.nodes[node].channel(&name("ll")).unwrap().renditions[&name("src")];
    r.parts.run(seq).map(|run| run.available().map(|p| p.meta.index).collect()).unwrap_or_default()
}

#[test]
fn parts_cut_through_two_relays_as_they_are_published_and_assemble_into_the_same_segment() {
    let mut net = Net::new();
    let o = origin_with(&mut net, &["ll"]);
    let r1 = net.add(Role::Relay, "r1", "secret");
    let r2 = net.add(Role::Relay, "r2", "secret");
    net.connect(r1, o);
    net.connect(r2, r1);
    let now = net.now;
    let publish_part = |net: &mut Net, p: SourcePart| {
        let now = net.now;
        net.nodes[o].publish_part(now, &name("ll"), &name("src"), p, 5_000).unwrap();
        net.run();
    };
    publish_part(&mut net, part(7, 0, false));
    publish_part(&mut net, part(7, 1, false));
    // The edge joins in the middle of segment 7: it gets the parts made so far, then the rest live.
    net.nodes[r2].viewer_request(now, &name("ll"));
    net.run();
    assert_eq!(parts_at(&net, r2, 7), [0, 1]);
    publish_part(&mut net, part(7, 2, false));
    assert_eq!(parts_at(&net, r2, 7), [0, 1, 2], "a part reaches the edge the moment it is published");
    assert!(net.seqs(r2, "ll", "src").is_empty(), "no whole segment before its last part");
    publish_part(&mut net, part(7, 3, true));
    assert_eq!(net.seqs(r2, "ll", "src"), [7]);
    let whole = |node: usize| {
        net.nodes[node].channel(&name("ll")).unwrap().renditions[&name("src")].window.get(7).cloned().unwrap()
    };
    assert_eq!(whole(r2), whole(o));
    assert_eq!(&whole(r2).data[..], b"part-7.0;part-7.1;part-7.2;part-7.3;");
    assert_eq!(whole(r2).meta.duration_us, 1_000_000);
    // Every part was announced at the edge, in order.
    let stored: Vec<u32> = net
        .events
        .iter()
        .filter_map(|(n, e)| match e {
            Event::PartStored { meta, .. } if *n == r2 => Some(meta.index),
            _ => None,
        })
        .collect();
    assert_eq!(stored, [0, 1, 2, 3]);
    // Out of order from the source is refused, not stored.
    let now = net.now;
    let err = net.nodes[o].publish_part(now, &name("ll"), &name("src"), part(8, 1, false), 6_000);
    assert!(err.is_err());
}
