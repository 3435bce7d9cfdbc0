//! Relaycast's sans-IO core: everything a node decides, with no sockets, clocks, threads or
//! unseeded randomness. The tokio shell (`relaycast` binary) and the simulator drive the same
//! state machines; see `docs/ARCHITECTURE.md`.
//!
//! - [`media`]: names, renditions, segments and their metadata;
//! - [`window`]: the per-rendition window of recent segments;
//! - [`parts`]: the per-rendition log of recent low-latency parts;
//! - [`wire`]: control messages and segment frames between nodes, with size limits;
//! - [`playlist`]: HLS master and live media playlist rendering;
//! - [`llhls`]: low-latency media playlists with parts, and blocking-reload decisions;
//! - [`node`]: the origin/relay state machine (tree, subscriptions, fan-out, keep-alive);
//! - [`neighbours`]: the tracker's neighbour policy (topology file or automatic);
//! - [`buffer`]: the playback-buffer model that counts stalls;
//! - [`multisource`]: the viewer's multi-source download scheduler;
//! - [`p2p`]: viewer-to-viewer sharing: swarm policy, peer wire, segment signatures, peer ranking;
//! - [`steering`]: the traffic manager's policy (edge choice, secondaries, rebalancing, POPs);
//! - [`cmaf`]: packaging a TS stream as fMP4 parts for low-latency HLS;
//! - [`ts`]: cutting an MPEG-TS file into keyframe-aligned segments;
//! - [`abr`]: server-side bitrate adaptation — which rendition each viewer gets;
//! - [`continuity`]: MPEG-TS continuity counters kept continuous across rendition switches.

#![forbid(unsafe_code)]

pub mod abr;
pub mod buffer;
pub mod cmaf;
pub mod continuity;
pub mod encryption;
pub mod llhls;
pub mod media;
pub mod multisource;
pub mod neighbours;
pub mod node;
pub mod p2p;
pub mod parts;
pub mod playlist;
pub mod steering;
pub mod ts;
pub mod viewer;
pub mod window;
pub mod wire;

pub use media::{Name, Part, PartMeta, RenditionInfo, Segment, SegmentMeta};
pub use node::{Availability, Event, Node, NodeConfig, Output, PeerId, Role, RouteView, SourcePart, SourceSegment};
pub use wire::Playback;
