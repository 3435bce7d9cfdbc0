//! Sources that feed an origin's channels: looped media files (F5), HLS pulled from a URL (F1)
//! and HLS pushed by ffmpeg over HTTP PUT (F2). Each one hands segments to the core with
//! [`relaycast_core::Node::publish`], which numbers and timestamps them. Low-latency sources
//! (a pushed TS stream, a looped file in low-latency mode) go through [`cmaf`] and publish
//! parts with [`relaycast_core::Node::publish_part`].

pub mod claim;
pub mod cmaf;
pub mod file;
pub mod ladder;
pub mod meter;
pub mod pull;
pub mod push;
pub mod rtmp;
pub mod srt;
