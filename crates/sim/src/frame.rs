//! What travels on a simulated link, and how big it is on the wire.
//!
//! Control messages are never encoded (postcard would cost more than the rest of the event):
//! their size is estimated from their fields, which is all the link model needs.

use relaycast_core::wire::{Message, SEGMENT_HEADER_LEN};
use relaycast_core::{Name, Part, Segment};

/// A frame in flight.
#[derive(Clone, Debug)]
pub enum Payload {
    Msg(Message),
    /// Boxed: segments are rare next to control messages, and a small event moves faster.
    Segment(Box<SegmentFrame>),
    /// One part of a low-latency segment (cut-through).
    Part(Box<PartFrame>),
}

#[derive(Clone, Debug)]
pub struct PartFrame {
    pub channel: Name,
    pub rendition: Name,
    pub part: Part,
}

#[derive(Clone, Debug)]
pub struct SegmentFrame {
    pub channel: Name,
    pub rendition: Name,
    pub segment: Segment,
}

/// Fixed cost of a control frame: length prefix, postcard tag and varints, QUIC stream framing.
const CONTROL_BASE: usize = 40;

/// Estimated bytes of a control message on the wire.
pub fn message_size(msg: &Message) -> usize {
    CONTROL_BASE
        + match msg {
            Message::Hello { node, token, .. } => node.len() + token.len() + 12,
            Message::Welcome { node, .. } => node.len() + 8,
            Message::Route(r) => 8 * r.path.len() + 16,
            Message::RouteRefresh { .. } => 24,
            Message::RouteRequest { .. } => 8,
            Message::AttachRefused { reason } => reason.len(),
            Message::Catalog { channels } => channels
                .iter()
                .map(|c| {
                    c.name.as_str().len()
                        + c.source.len()
                        + c.renditions.iter().map(|r| r.name.as_str().len() + 8).sum::<usize>()
                })
                .sum(),
            Message::Subscribe { channel, resume, .. } => {
                channel.as_str().len() + resume.iter().map(|(n, _)| n.as_str().len() + 8).sum::<usize>()
            }
            Message::Unsubscribe { channel } => channel.as_str().len(),
            Message::Refused { channel, reason } => channel.as_str().len() + reason.len(),
            Message::Ping { .. } => 16,
            Message::Pong { .. } => 8,
            Message::NoRoute | Message::Attach | Message::Attached | Message::Detach | Message::Alive => 0,
        }
}

/// Bytes of a part frame: a segment frame plus the part trailer.
pub fn part_size(channel: &Name, rendition: &Name, payload: usize) -> usize {
    segment_size(channel, rendition, payload) + 5
}

/// Bytes of a segment frame: header, names, payload.
pub fn segment_size(channel: &Name, rendition: &Name, payload: usize) -> usize {
    SEGMENT_HEADER_LEN + channel.as_str().len() + rendition.as_str().len() + payload
}

/// Names of message kinds, indexed by [`kind`].
pub const KINDS: [&str; 17] = [
    "Hello",
    "Welcome",
    "Route",
    "NoRoute",
    "Attach",
    "Attached",
    "AttachRefused",
    "Detach",
    "Catalog",
    "Subscribe",
    "Unsubscribe",
    "Refused",
    "Ping",
    "Pong",
    "RouteRefresh",
    "RouteRequest",
    "Alive",
];

/// Index of a message's kind in [`KINDS`].
pub fn kind(msg: &Message) -> usize {
    match msg {
        Message::Hello { .. } => 0,
        Message::Welcome { .. } => 1,
        Message::Route(_) => 2,
        Message::NoRoute => 3,
        Message::Attach => 4,
        Message::Attached => 5,
        Message::AttachRefused { .. } => 6,
        Message::Detach => 7,
        Message::Catalog { .. } => 8,
        Message::Subscribe { .. } => 9,
        Message::Unsubscribe { .. } => 10,
        Message::Refused { .. } => 11,
        Message::Ping { .. } => 12,
        Message::Pong { .. } => 13,
        Message::RouteRefresh { .. } => 14,
        Message::RouteRequest { .. } => 15,
        Message::Alive => 16,
    }
}
