//! Channels on a node: local sources, pull on demand up the tree (F12), fan-out to subscribed
//! children, windows, the catalogue, and releasing what nobody watches.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::sequencer::Sequencer;
use super::{Availability, Event, Node, Output, PeerId, PublishError, SourcePart, SourceSegment};
use crate::media::{Name, Part, PartMeta, RenditionInfo, Segment, SegmentMeta};
use crate::parts::PartLog;
use crate::window::{InsertError, SegmentWindow};
use crate::wire::{ChannelEntry, Message};

/// Segments whose parts are kept: LL-HLS lists parts for the last few segments only.
const PARTS_KEPT: usize = 4;

/// One rendition of a carried channel.
#[derive(Debug, Clone)]
pub struct Rendition {
    pub info: RenditionInfo,
    pub window: SegmentWindow,
    /// Longest segment seen, rounded (EXT-X-TARGETDURATION must never shrink).
    pub target_duration_s: u32,
    /// Parts of the newest segments (low-latency renditions only).
    pub parts: PartLog,
    /// Longest part seen, in microseconds (EXT-X-PART-INF PART-TARGET; never shrinks).
    pub part_target_us: u32,
    sequencer: Sequencer,
    /// The local source's open segment: (its source number, our sequence, disc_seq, discontinuity).
    open: Option<(u64, u64, u32, bool)>,
    /// Since when segments have been waiting beyond a gap in the window.
    gap_since: Option<Instant>,
}

impl Rendition {
    fn new(info: RenditionInfo, window_len: usize) -> Self {
        Self {
            info,
            window: SegmentWindow::new(window_len),
            target_duration_s: 1,
            parts: PartLog::new(PARTS_KEPT),
            part_target_us: 0,
            sequencer: Sequencer::default(),
            open: None,
            gap_since: None,
        }
    }

    /// The advertised bandwidth, or an estimate from the window (peak bits per second).
    pub fn bandwidth(&self) -> Option<u32> {
        self.info.bandwidth.or_else(|| {
            self.window
                .iter()
                .filter(|s| s.meta.duration_us > 0)
                .map(|s| (s.data.len() as u64 * 8 * 1_000_000 / u64::from(s.meta.duration_us)) as u32)
                .max()
        })
    }
}

/// How a node came to carry a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelStatus {
    /// Fed by a source on this node (origin).
    Local,
    /// Subscribed upstream; `live` once the first segment has arrived.
    Upstream { live: bool },
    /// The parent refused it; remembered until `until`.
    Refused { reason: String, until: Instant },
}

/// A channel carried by this node.
#[derive(Debug, Clone)]
pub struct Channel {
    pub status: ChannelStatus,
    pub source: String,
    pub renditions: BTreeMap<Name, Rendition>,
    /// Children subscribed to this channel.
    pub subscribers: BTreeSet<PeerId>,
    /// Peers we subscribed to for it (the parent; during a parent switch, briefly two).
    pub sources: BTreeSet<PeerId>,
    /// While nothing is held: the resume point of the child whose subscription made us carry
    /// the channel, passed up so that what the child misses is sent to us too.
    child_resume: Vec<(Name, u64)>,
    last_wanted: Instant,
}

impl Channel {
    fn new(status: ChannelStatus, source: String, now: Instant) -> Self {
        Self {
            status,
            source,
            renditions: BTreeMap::new(),
            subscribers: BTreeSet::new(),
            sources: BTreeSet::new(),
            child_resume: Vec::new(),
            last_wanted: now,
        }
    }

    pub(crate) fn has_segments(&self) -> bool {
        self.renditions.values().any(|r| !r.window.is_empty())
    }

    /// The origin timestamp of the newest media held, part or segment (when its source last
    /// delivered, at the origin).
    pub fn newest_origin_ms(&self) -> Option<u64> {
        self.renditions
            .values()
            .flat_map(|r| {
                let part = r.parts.runs().next_back().and_then(|run| run.available().last()).map(|p| p.meta.origin_ms);
                part.into_iter().chain(r.window.latest().map(|s| s.meta.origin_ms))
            })
            .max()
    }

    pub(super) fn entry(&self, name: &Name) -> ChannelEntry {
        ChannelEntry {
            name: name.clone(),
            renditions: self.renditions.values().map(|r| r.info.clone()).collect(),
            source: self.source.clone(),
            playback: crate::wire::Playback::Public,
            encryption: None,
        }
    }

    /// Per rendition, the newest sequence held (what a resumed subscription starts after).
    fn resume_points(&self) -> Vec<(Name, u64)> {
        self.renditions.iter().filter_map(|(n, r)| r.window.latest().map(|s| (n.clone(), s.meta.seq))).collect()
    }
}

impl Node {
    // ----- inputs: local sources and viewers -----

    /// Declare (or update) a channel fed by a source on this node. Children learn of it through
    /// the catalogue.
    pub fn set_local_channel(&mut self, now: Instant, name: Name, source: &str, renditions: Vec<RenditionInfo>) {
        let window_len = self.config.window_len;
        let ch = self
            .channels
            .entry(name.clone())
            .or_insert_with(|| Channel::new(ChannelStatus::Local, source.to_string(), now));
        ch.status = ChannelStatus::Local;
        ch.source = source.to_string();
        for mut info in renditions {
            match ch.renditions.get_mut(&info.name) {
                Some(r) => {
                    // A source re-describing its renditions (a master playlist read again) does
                    // not know the init segment its packager made; the rendition stays CMAF.
                    if info.init.is_none() {
                        info.init = r.info.init.take();
                    }
                    r.info = info;
                }
                None => {
                    ch.renditions.insert(info.name.clone(), Rendition::new(info, window_len));
                }
            }
        }
        self.event(Event::ChannelChanged { channel: name });
        self.broadcast_catalog();
    }

    /// Remove a local channel; its subscribers are told it is gone.
    pub fn remove_local_channel(&mut self, name: &Name) {
        let Some(ch) = self.channels.remove(name) else { return };
        for peer in ch.subscribers {
            self.send(peer, Message::Refused { channel: name.clone(), reason: "channel removed at origin".into() });
        }
        self.event(Event::ChannelChanged { channel: name.clone() });
        self.broadcast_catalog();
    }

    /// A rendition of a local channel, which a local source may publish to.
    fn local_rendition(&mut self, channel: &Name, rendition: &Name) -> Result<&mut Rendition, PublishError> {
        let ch = self.channels.get_mut(channel).filter(|c| c.status == ChannelStatus::Local);
        let Some(ch) = ch else { return Err(PublishError::NotLocal(channel.clone())) };
        ch.renditions
            .get_mut(rendition)
            .ok_or_else(|| PublishError::UnknownRendition { channel: channel.clone(), rendition: rendition.clone() })
    }

    /// Publish a segment from a local source at wall-clock time `wall_ms` (Unix milliseconds,
    /// the segment's origin timestamp). The node assigns its sequence number.
    pub fn publish(
        &mut self,
        now: Instant,
        channel: &Name,
        rendition: &Name,
        src: SourceSegment,
        wall_ms: u64,
    ) -> Result<SegmentMeta, PublishError> {
        let per_key = self.config.encrypted.get(channel).copied();
        let cipher = self.cipher.clone();
        if per_key.is_some() && cipher.is_none() {
            return Err(PublishError::NoCipher(channel.clone()));
        }
        let r = self.local_rendition(channel, rendition)?;
        let (seq, disc_seq, discontinuity) = r.sequencer.next(src.source_seq, src.discontinuity);
        let meta = SegmentMeta { seq, disc_seq, discontinuity, duration_us: src.duration_us, origin_ms: wall_ms };
        let data = match (per_key, cipher) {
            (Some(n), Some(c)) => c.encrypt(channel, crate::encryption::key_index(seq, n), seq, &src.data).into(),
            _ => src.data,
        };
        // The origin signs what it publishes (F53), ciphertext if encrypted; relays pass the
        // signature on untouched.
        let signature = self.signer.as_ref().map(|s| s.sign(channel, rendition, seq, &data));
        self.store(now, channel.clone(), rendition.clone(), Segment { meta, data, signature });
        Ok(meta)
    }

    /// Publish one part of a low-latency rendition from a local source (in order: part 0 of a
    /// segment opens it, the `last` part closes it). The node numbers the segment on part 0 and
    /// signs the whole segment when its last part is published.
    pub fn publish_part(
        &mut self,
        now: Instant,
        channel: &Name,
        rendition: &Name,
        src: SourcePart,
        wall_ms: u64,
    ) -> Result<PartMeta, PublishError> {
        if self.config.encrypted.contains_key(channel) {
            return Err(PublishError::EncryptedParts(channel.clone()));
        }
        let r = self.local_rendition(channel, rendition)?;
        let open = match r.open {
            Some(open) if src.index > 0 && open.0 == src.source_seq => open,
            _ if src.index > 0 => return Err(PublishError::PartOutOfOrder { index: src.index }),
            _ => {
                let (seq, disc_seq, discontinuity) = r.sequencer.next(Some(src.source_seq), src.discontinuity);
                (src.source_seq, seq, disc_seq, discontinuity)
            }
        };
        r.open = (!src.last).then_some(open);
        let (_, seq, disc_seq, discontinuity) = open;
        let meta = PartMeta {
            seq,
            index: src.index,
            disc_seq,
            discontinuity,
            duration_us: src.duration_us,
            independent: src.independent,
            last: src.last,
            origin_ms: wall_ms,
        };
        let mut part = Part { meta, data: src.data, signature: None };
        if src.last {
            // Sign the segment the parts make (relays assemble the same bytes).
            let whole = r.parts.run(seq).map_or_else(|| part.data.to_vec(), |run| run.joined_with(&part.data).into());
            part.signature = self.signer.as_ref().map(|s| s.sign(channel, rendition, seq, &whole));
        }
        self.store_part(now, channel.clone(), rendition.clone(), part);
        Ok(meta)
    }

    /// A viewer asked for `channel`. Relays subscribe upstream on the first request and keep the
    /// channel while viewers keep asking.
    pub fn viewer_request(&mut self, now: Instant, channel: &Name) -> Availability {
        let has_parent = self.parent.is_some();
        if let Some(ch) = self.channels.get_mut(channel) {
            ch.last_wanted = now;
            match &ch.status {
                ChannelStatus::Local | ChannelStatus::Upstream { .. } if ch.has_segments() => {
                    return Availability::Ready;
                }
                ChannelStatus::Local => return Availability::Pending,
                ChannelStatus::Upstream { .. } if has_parent => return Availability::Pending,
                ChannelStatus::Upstream { .. } => {
                    return Availability::Unavailable("no parent node at the moment; retry shortly".into());
                }
                ChannelStatus::Refused { reason, until } if *until > now => {
                    return Availability::Unavailable(reason.clone());
                }
                ChannelStatus::Refused { .. } => {
                    self.channels.remove(channel);
                }
            }
        }
        if self.is_origin() {
            return Availability::Unavailable(format!("no channel named {channel}"));
        }
        match &self.upstream_catalog {
            Some(catalog) if !catalog.contains_key(channel) => {
                return Availability::Unavailable(format!("no channel named {channel}"));
            }
            None if has_parent => {
                return Availability::Unavailable(
                    "the channel list has not come from upstream yet; retry shortly".into(),
                );
            }
            None => return Availability::Unavailable("no parent node yet; retry shortly".into()),
            Some(_) => {}
        }
        self.carry_upstream(now, channel, Vec::new());
        Availability::Pending
    }

    /// A segment arrived from `peer`. Only a peer we subscribed to may send segments, and only
    /// for that channel.
    pub fn handle_segment(&mut self, now: Instant, peer: PeerId, channel: Name, rendition: Name, segment: Segment) {
        if self.admit_media(now, peer, &channel, &rendition) {
            self.store(now, channel, rendition, segment);
        }
    }

    /// A part arrived from `peer` (the same rules as for segments).
    pub fn handle_part(&mut self, now: Instant, peer: PeerId, channel: Name, rendition: Name, part: Part) {
        if self.admit_media(now, peer, &channel, &rendition) {
            self.store_part(now, channel, rendition, part);
        }
    }

    /// Whether media from `peer` for `channel` is taken (it is a source we subscribed to); makes
    /// room for the rendition. A child that sends media is dropped.
    fn admit_media(&mut self, now: Instant, peer: PeerId, channel: &Name, rendition: &Name) -> bool {
        let Some(p) = self.peers.get_mut(&peer) else { return false };
        p.last_heard = now;
        let subscribed = self.channels.get(channel).is_some_and(|c| c.sources.contains(&peer));
        if !subscribed {
            if self.peers.get(&peer).is_some_and(|p| p.child) {
                self.drop_peer(now, peer, "a child may not send segments".into());
            }
            // Unsubscribed, or a parent switch: media already in flight may still land.
            return false;
        }
        let window_len = self.config.window_len;
        let info = self.upstream_rendition_info(channel, rendition);
        if let Some(ch) = self.channels.get_mut(channel) {
            ch.renditions.entry(rendition.clone()).or_insert_with(|| Rendition::new(info, window_len));
        }
        true
    }

    // ----- messages -----

    pub(super) fn on_catalog(&mut self, now: Instant, channels: Vec<ChannelEntry>) {
        let catalog: BTreeMap<Name, ChannelEntry> = channels.into_iter().map(|c| (c.name.clone(), c)).collect();
        // Channels that vanished upstream are refused to whoever waits for them.
        let gone: Vec<Name> = self
            .channels
            .iter()
            .filter(|(n, c)| matches!(c.status, ChannelStatus::Upstream { .. }) && !catalog.contains_key(*n))
            .map(|(n, _)| n.clone())
            .collect();
        for (name, entry) in &catalog {
            if let Some(ch) = self.channels.get_mut(name) {
                for info in &entry.renditions {
                    if let Some(r) = ch.renditions.get_mut(&info.name) {
                        r.info = info.clone();
                    }
                }
                ch.source = entry.source.clone();
            }
        }
        self.upstream_catalog = Some(catalog);
        for name in gone {
            self.refuse_locally(now, &name, "channel no longer offered upstream".into());
        }
        self.broadcast_catalog();
    }

    pub(super) fn on_subscribe(
        &mut self,
        now: Instant,
        peer: PeerId,
        channel: Name,
        resume: Vec<(Name, u64)>,
        joining: bool,
    ) {
        if !self.peers.get(&peer).is_some_and(|p| p.child) {
            let reason = "attach before subscribing".to_string();
            return self.send(peer, Message::Refused { channel, reason });
        }
        let offered = if self.is_origin() {
            self.channels.get(&channel).is_some_and(|c| c.status == ChannelStatus::Local)
        } else {
            // A relay that has not heard its parent's catalogue yet carries the channel on
            // trust; if the catalogue then lacks it, `on_catalog` refuses it to the child.
            self.upstream_catalog.as_ref().is_none_or(|c| c.contains_key(&channel))
        };
        if !offered {
            let reason = format!("no channel named {channel}");
            return self.send(peer, Message::Refused { channel, reason });
        }
        if !self.channels.contains_key(&channel) {
            self.carry_upstream(now, &channel, resume.clone());
        }
        let backfill = self.config.join_backfill;
        // Invariant: carry_upstream inserted the channel if it was missing.
        let ch = self.channels.get_mut(&channel).expect("channel carried");
        if let ChannelStatus::Refused { reason, .. } = &ch.status {
            let reason = reason.clone();
            return self.send(peer, Message::Refused { channel, reason });
        }
        ch.subscribers.insert(peer);
        ch.last_wanted = now;
        let resume: BTreeMap<Name, u64> = resume.into_iter().collect();
        let mut out = Vec::new();
        for (rname, r) in &ch.renditions {
            let count = match resume.get(rname) {
                Some(&last) if r.window.iter().next().is_some_and(|s| s.meta.seq <= last.saturating_add(1)) => {
                    let newer = r.window.after(last).count();
                    // A joining child carries the channel for its own child: it gets both.
                    if joining { newer.max(backfill) } else { newer }
                }
                // Nothing held, or what the child holds is older than our window: start live.
                _ => backfill,
            };
            let segs: Vec<&Segment> = r.window.iter().skip(r.window.len().saturating_sub(count)).collect();
            if !segs.is_empty() {
                // One stream for the whole backfill keeps it in order: the child's first
                // playlist then starts at the oldest segment, never later than it.
                out.push(Output::SendSegments {
                    peer,
                    channel: channel.clone(),
                    rendition: rname.clone(),
                    segments: segs.into_iter().cloned().collect(),
                });
            }
            // The segment being made travels as the parts made so far; the rest follow live.
            for part in r.parts.open_parts() {
                if r.window.get(part.meta.seq).is_none() {
                    out.push(Output::SendPart {
                        peer,
                        channel: channel.clone(),
                        rendition: rname.clone(),
                        part: Box::new(part),
                    });
                }
            }
        }
        self.outputs.extend(out);
    }

    pub(super) fn on_unsubscribe(&mut self, now: Instant, peer: PeerId, channel: &Name) {
        if let Some(ch) = self.channels.get_mut(channel) {
            ch.subscribers.remove(&peer);
            ch.last_wanted = now;
            self.channels_check_at = None;
        }
    }

    pub(super) fn on_refused(&mut self, now: Instant, peer: PeerId, channel: &Name, reason: String) {
        if self.channels.get(channel).is_some_and(|c| c.sources.contains(&peer)) && self.parent == Some(peer) {
            self.refuse_locally(now, channel, reason);
        }
    }

    // ----- subscriptions up the tree -----

    /// Start carrying `channel` from upstream (status Upstream, not yet live) and ask the parent,
    /// on behalf of a child holding up to `child_resume` (empty for a viewer here).
    fn carry_upstream(&mut self, now: Instant, channel: &Name, child_resume: Vec<(Name, u64)>) {
        let source =
            self.upstream_catalog.as_ref().and_then(|c| c.get(channel)).map(|e| e.source.clone()).unwrap_or_default();
        let mut carried = Channel::new(ChannelStatus::Upstream { live: false }, source, now);
        carried.child_resume = child_resume;
        self.channels.insert(channel.clone(), carried);
        self.channels_check_at = None;
        self.subscribe_at_parent(channel);
        self.event(Event::ChannelChanged { channel: channel.clone() });
    }

    /// Subscribe `channel` at the current parent, resuming after what we hold (or, holding
    /// nothing yet, after what the child we carry it for holds).
    fn subscribe_at_parent(&mut self, channel: &Name) {
        let Some(parent) = self.parent else { return };
        let Some(ch) = self.channels.get_mut(channel) else { return };
        ch.sources.insert(parent);
        let joining = !ch.has_segments();
        let resume = if joining { ch.child_resume.clone() } else { ch.resume_points() };
        self.send(parent, Message::Subscribe { channel: channel.clone(), resume, joining });
    }

    /// After a parent change: subscribe every carried channel at the new parent (resuming after
    /// what we hold, so nothing is missing downstream) and release it at the old one.
    pub(super) fn move_subscriptions(&mut self, old: Option<PeerId>) {
        let carried: Vec<Name> = self
            .channels
            .iter()
            .filter(|(_, c)| matches!(c.status, ChannelStatus::Upstream { .. }))
            .map(|(n, _)| n.clone())
            .collect();
        for name in carried {
            self.subscribe_at_parent(&name);
            if let Some(old) = old.filter(|o| Some(*o) != self.parent) {
                if let Some(ch) = self.channels.get_mut(&name) {
                    ch.sources.remove(&old);
                }
                if self.peers.contains_key(&old) {
                    self.send(old, Message::Unsubscribe { channel: name.clone() });
                }
            }
        }
    }

    fn refuse_locally(&mut self, now: Instant, channel: &Name, reason: String) {
        let Some(ch) = self.channels.get_mut(channel) else { return };
        if ch.status == ChannelStatus::Local {
            return;
        }
        ch.status = ChannelStatus::Refused { reason: reason.clone(), until: now + self.config.refusal_ttl };
        self.channels_check_at = None;
        ch.renditions.clear();
        ch.sources.clear();
        let subs = std::mem::take(&mut ch.subscribers);
        for peer in subs {
            self.send(peer, Message::Refused { channel: channel.clone(), reason: reason.clone() });
        }
        self.event(Event::ChannelChanged { channel: channel.clone() });
    }

    fn upstream_rendition_info(&self, channel: &Name, rendition: &Name) -> RenditionInfo {
        self.upstream_catalog
            .as_ref()
            .and_then(|c| c.get(channel))
            .and_then(|e| e.renditions.iter().find(|r| &r.name == rendition))
            .cloned()
            .unwrap_or_else(|| RenditionInfo::named(rendition.clone()))
    }

    /// Put a part in its log and fan it out at once (cut-through); when it completes its segment,
    /// store the segment (children assemble their own from the parts).
    fn store_part(&mut self, now: Instant, channel: Name, rendition: Name, part: Part) {
        let Some(ch) = self.channels.get_mut(&channel) else { return };
        let Some(r) = ch.renditions.get_mut(&rendition) else { return };
        if r.window.get(part.meta.seq).is_some() || r.window.latest().is_some_and(|l| l.meta.seq > part.meta.seq + 1) {
            return; // already whole here, or too late to matter
        }
        r.part_target_us = r.part_target_us.max(part.meta.duration_us);
        let whole = match r.parts.push(part.clone()) {
            Ok(whole) => whole,
            Err(e) => {
                if !matches!(e, crate::parts::PartError::Duplicate { .. }) {
                    self.event(Event::PartRefused { channel, rendition, reason: e.to_string() });
                }
                return;
            }
        };
        for &peer in &ch.subscribers {
            self.outputs.push_back(Output::SendPart {
                peer,
                channel: channel.clone(),
                rendition: rendition.clone(),
                part: Box::new(part.clone()),
            });
        }
        self.event(Event::PartStored {
            channel: channel.clone(),
            rendition: rendition.clone(),
            meta: part.meta,
            bytes: part.data.len(),
        });
        if let Some(segment) = whole {
            self.store_inner(now, channel, rendition, segment, false);
        }
    }

    /// Put a segment in its window, fan it out to subscribers, and tell the shell.
    fn store(&mut self, now: Instant, channel: Name, rendition: Name, segment: Segment) {
        self.store_inner(now, channel, rendition, segment, true);
    }

    fn store_inner(&mut self, now: Instant, channel: Name, rendition: Name, segment: Segment, fan_out: bool) {
        let Some(ch) = self.channels.get_mut(&channel) else { return };
        let Some(r) = ch.renditions.get_mut(&rendition) else { return };
        let newest = r.window.latest().is_none_or(|l| l.meta.seq < segment.meta.seq);
        match r.window.insert(segment.clone()) {
            Ok(()) => {}
            // A resumed or re-sent segment we already hold: harmless.
            Err(InsertError::Duplicate(_) | InsertError::TooOld { .. }) => return,
        }
        if ch.status == ChannelStatus::Local {
            // A local source's gaps are final: nothing will ever fill them.
            while r.window.skip_gap().is_some() {}
        }
        let gap_opened = r.window.has_hidden() && r.gap_since.is_none();
        r.gap_since = match (r.window.has_hidden(), r.gap_since) {
            (false, _) => None,
            (true, None) => Some(now),
            (true, since) => since,
        };
        r.target_duration_s = r.target_duration_s.max(crate::playlist::target_duration_s([segment.meta]));
        let became_live = matches!(ch.status, ChannelStatus::Upstream { live: false });
        if became_live {
            ch.status = ChannelStatus::Upstream { live: true };
        }
        for &peer in ch.subscribers.iter().filter(|_| fan_out) {
            self.outputs.push_back(Output::SendSegments {
                peer,
                channel: channel.clone(),
                rendition: rendition.clone(),
                segments: vec![segment.clone()],
            });
        }
        let meta = segment.meta;
        let bytes = segment.data.len();
        if gap_opened {
            self.channels_check_at = None;
        }
        if became_live {
            self.event(Event::ChannelChanged { channel: channel.clone() });
        }
        self.event(Event::SegmentStored { channel, rendition, meta, bytes, newest });
    }

    /// The catalogue children may rely on; None for a relay that has not heard its parent's yet.
    /// Unknown is not empty: told "nothing", children would refuse their channels and drop
    /// their windows (a restarted relay found a route before its parent's catalogue came).
    pub(super) fn known_catalog(&self) -> Option<Vec<ChannelEntry>> {
        (self.is_origin() || self.upstream_catalog.is_some()).then(|| self.catalog())
    }

    pub(super) fn broadcast_catalog(&mut self) {
        let Some(channels) = self.known_catalog() else { return };
        let children: Vec<PeerId> = self.children().map(|(id, _)| id).collect();
        for peer in children {
            self.send(peer, Message::Catalog { channels: channels.clone() });
        }
    }

    /// Give up on gaps that have waited too long; viewers move on past them.
    /// Returns when the first gap left open will be stale, if it is not filled before.
    fn skip_stale_gaps(&mut self, now: Instant) -> Option<Instant> {
        let mut skipped = Vec::new();
        let mut first_stale: Option<Instant> = None;
        for (cname, ch) in &mut self.channels {
            for (rname, r) in &mut ch.renditions {
                let Some(since) = r.gap_since else { continue };
                if now.duration_since(since) >= self.config.gap_timeout {
                    if let Some(lost) = r.window.skip_gap() {
                        skipped.push(Event::GapSkipped { channel: cname.clone(), rendition: rname.clone(), lost });
                    }
                    r.gap_since = r.window.has_hidden().then_some(now);
                }
                if let Some(since) = r.gap_since {
                    let stale = since + self.config.gap_timeout;
                    first_stale = Some(first_stale.map_or(stale, |d| d.min(stale)));
                }
            }
        }
        for e in skipped {
            self.event(e);
        }
        first_stale
    }

    /// Skip stale gaps and release idle channels, if either may be due (every channel and
    /// rendition is a cache miss, and most wakes have nothing to do there); returns when the
    /// first gap will turn stale.
    pub(super) fn check_channels(&mut self, now: Instant) -> Option<Instant> {
        if self.channels_check_at.is_some_and(|t| now < t) {
            return self.gap_due;
        }
        self.gap_due = self.skip_stale_gaps(now);
        let idle_due = self.release_idle_channels(now);
        // With nothing pending, what could make something due resets `channels_check_at`; the
        // idle timeout is only a safety net.
        let next = self.gap_due.into_iter().chain(idle_due).min();
        self.channels_check_at = Some(next.unwrap_or(now + self.config.idle_timeout));
        self.gap_due
    }

    /// Release channels nobody wants any more (relays only; local channels stay). Returns when
    /// the first channel kept may turn idle or see its refusal run out.
    fn release_idle_channels(&mut self, now: Instant) -> Option<Instant> {
        let mut first_due: Option<Instant> = None;
        let mut idle = Vec::new();
        for (name, c) in &self.channels {
            let (due, released) = match &c.status {
                ChannelStatus::Refused { until, .. } => (*until, *until <= now),
                ChannelStatus::Upstream { .. } if c.subscribers.is_empty() => (
                    c.last_wanted + self.config.idle_timeout,
                    now.duration_since(c.last_wanted) > self.config.idle_timeout,
                ),
                ChannelStatus::Local | ChannelStatus::Upstream { .. } => continue,
            };
            if released {
                idle.push(name.clone());
            } else {
                first_due = Some(first_due.map_or(due, |f| f.min(due)));
            }
        }
        for name in idle {
            let Some(ch) = self.channels.remove(&name) else { continue };
            for peer in ch.sources {
                if self.peers.contains_key(&peer) {
                    self.send(peer, Message::Unsubscribe { channel: name.clone() });
                }
            }
            self.event(Event::ChannelChanged { channel: name });
        }
        first_due
    }
}
