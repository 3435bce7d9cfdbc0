//! Viewer-to-viewer sharing in the shell (F50–F53): Ed25519 signing, the tracker's P2P routes,
//! QUIC links between viewers, and the `relaycast watch --p2p` viewer. The policy is the
//! core's [`relaycast_core::p2p`]; see docs/P2P.md.

pub mod net;
pub mod signing;
pub mod tracker;
pub mod viewer;
