//! CMAF packaging for low-latency HLS (F32): MPEG-TS or RTMP's FLV tags in, fMP4 init segment
//! and parts out.
//!
//! - [`demux`]: a streaming TS demuxer giving timed H.264 and AAC frames;
//! - [`flv`]: the same frames from the FLV tags of an RTMP publish;
//! - [`mux`]: the fMP4 boxes (init segment, `moof`+`mdat` fragments);
//! - [`packager`]: cutting frames into keyframe-aligned segments made of parts.

pub mod demux;
pub mod flv;
pub mod mux;
pub mod packager;
mod sps;

pub use packager::{FrameCounts, Packaged, PackagedPart, Packager, PackagerConfig};
