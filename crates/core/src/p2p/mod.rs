//! Viewer-to-viewer sharing (F50–F53), as sans-IO policy.
//!
//! Viewers of one rendition form a swarm: each keeps QUIC links to a few peers the tracker
//! ranked for it (same region first, then RTT), advertises which recent segments it holds, and
//! fetches what a peer holds ahead of its playback deadline — falling back to the edge early
//! enough that sharing never causes a stall a CDN-only viewer would not have. Everything a peer
//! sends is checked against the origin's signature before it is used or passed on.
//!
//! - [`signing`]: the signed message layout and the signer/verifier traits (no crypto here: the
//!   shell plugs Ed25519 in, tests plug in a toy scheme);
//! - [`wire`]: the bounded messages viewers exchange;
//! - [`swarm`]: one viewer's policy — piece selection, deadlines, fallback, choking, uploads;
//! - [`peers`]: the tracker's side — ranking peers and the direct-path bypass (F52);
//! - [`webtorrent`]: the tracker's side for browsers — the WebTorrent tracker protocol (F54).

pub mod peers;
pub mod signing;
pub mod swarm;
pub mod webtorrent;
pub mod wire;

pub use swarm::{PeerKey, Swarm, SwarmAction, SwarmConfig};
