// Sharing between browsers (issue 20; docs/P2P.md, "Browsers"): hls.js with p2p-media-loader,
// peers found through the Relaycast tracker's WebTorrent side (nearest first), the edge as the
// HTTP source, and every segment taken from a peer checked against the origin's Ed25519
// signature before hls.js gets it. A peer whose bytes fail is dropped (p2p-media-loader does
// that) and reported to the tracker, which stops offering it once enough viewers have.
//
// Loaded as a module by the player page (index.html) and usable on its own — the embed snippet
// in docs/P2P.md:
//
//   import { startSharing } from "https://EDGE/assets/sharing.js";
//   const player = await startSharing(window.Hls, videoElement, "https://EDGE/live/demo/index.m3u8");
//
// Needs the import map below on the page (the node's own page has it):
//   {"imports": {"p2p-media-loader-core": "/assets/p2p-media-loader-core.es.min.js",
//                "p2p-media-loader-hlsjs": "/assets/p2p-media-loader-hlsjs.es.min.js"}}

import { HlsJsP2PEngine } from "p2p-media-loader-hlsjs";

/// What the origin signs, before the channel, rendition, sequence and digest (core::p2p::signing).
const DOMAIN = new TextEncoder().encode("relaycast-segment-v1\0");

/// Where this page can share, or why it can't: asks the node that serves the playlist for its
/// tracker (`/api/v1/p2p`) and the tracker for the origin's key.
/// Returns {announce, tracker, key} or {off: "reason"}.
export async function sharingConfig(base) {
  let cfg;
  try {
    const r = await fetch(new URL("/api/v1/p2p", base), { cache: "no-store" });
    if (!r.ok) {
      const steering = new URL(base, location.href).pathname.startsWith("/play/");
      return {
        off: steering
          ? "a Content Steering playlist does not say where to share; play an edge's playlist to share with other viewers"
          : "this server has no tracker, so there are no peers to share with",
      };
    }
    cfg = await r.json();
  } catch (e) {
    return { off: "could not ask the server for its tracker (" + e + ")" };
  }
  if (!(crypto && crypto.subtle)) return { off: "this page is not in a secure context, so segments from peers cannot be checked" };
  let keyHex;
  try {
    const r = await fetch(cfg.tracker + "/api/v1/p2p/origin-key", { cache: "no-store" });
    if (!r.ok) return { off: "the tracker has no origin key, so segments from peers could not be checked" };
    keyHex = (await r.json()).origin_key;
  } catch (e) {
    return { off: "could not reach the tracker (" + e + ")" };
  }
  let key;
  try {
    key = await crypto.subtle.importKey("raw", hex(keyHex), { name: "Ed25519" }, false, ["verify"]);
  } catch (e) {
    return { off: "this browser cannot check Ed25519 signatures (" + e + ")" };
  }
  return { announce: cfg.announce, tracker: cfg.tracker, key };
}

function hex(s) {
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
  return out;
}

/// channel, rendition and sequence number of a TS segment URL (/live/{c}/{r}/{seq}.ts).
export function segmentPosition(url) {
  const m = new URL(url).pathname.match(/^\/live\/([^/]+)\/([^/]+)\/(\d+)\.ts$/);
  return m ? { channel: decodeURIComponent(m[1]), rendition: decodeURIComponent(m[2]), seq: BigInt(m[3]) } : null;
}

/// The origin's signature of a segment, from the edge's `relaycast-signature` header (a HEAD
/// request: no body). A peer can be a moment ahead of the edge, so a 404 is tried again.
async function signatureOf(url) {
  for (let attempt = 0; attempt < 4; attempt++) {
    const r = await fetch(url, { method: "HEAD", cache: "no-store" });
    const sig = r.ok && r.headers.get("relaycast-signature");
    if (sig) return hex(sig);
    if (r.status !== 404) return null;
    await new Promise((done) => setTimeout(done, 250));
  }
  return null;
}

/// Whether `data` is the segment at `url` as the origin signed it.
export async function verifySegment(key, url, data) {
  const pos = segmentPosition(url);
  if (!pos) return false;
  const signature = await signatureOf(url);
  if (!signature) return false;
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  const enc = new TextEncoder();
  const seq = new Uint8Array(8);
  new DataView(seq.buffer).setBigUint64(0, pos.seq);
  const parts = [DOMAIN, enc.encode(pos.channel), [0], enc.encode(pos.rendition), [0], seq, digest];
  const message = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    message.set(p, at);
    at += p.length;
  }
  return crypto.subtle.verify({ name: "Ed25519" }, key, signature, message);
}

/// Sharing players stay this many segments behind the newest one (hls.js's default is 3; 5
/// left too little of a 6-segment live playlist behind the playhead, and players that joined
/// late stopped loading) ...
const LIVE_SYNC_SEGMENTS = 4;
/// ... and fetch a segment from the server only when it is due within this many seconds, so a
/// new segment has (LIVE_SYNC_SEGMENTS - 1) × duration - HIGH_DEMAND_S seconds (4.5 s with 2 s
/// segments) to travel between viewers first. docs/P2P.md, "Browsers", has the measurements.
const HIGH_DEMAND_S = 1.5;

/// The swarm of a playlist: its path, so viewers of one channel share across edges and links.
function swarmOf(playlist) {
  return new URL(playlist, location.href).pathname;
}

/// Tests only: alter one byte of every large message this page sends to peers — segment data
/// goes out in chunks of up to 64 KiB, p2p-media-loader's commands are small — so the page lies
/// to its peers while its own player gets true bytes and plays on.
function corruptWhatThisPageSends() {
  const send = RTCDataChannel.prototype.send;
  RTCDataChannel.prototype.send = function (data) {
    if (data && data.byteLength >= 1024) {
      const bytes = new Uint8Array(data.buffer ? data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) : data.slice(0));
      bytes[bytes.length >> 1] ^= 0x5a;
      return send.call(this, bytes);
    }
    return send.call(this, data);
  };
}

/// An hls.js player that shares with other browsers. `stats` counts bytes by source (`http`,
/// `p2p`), uploads, peers, and segments rejected; `options.playlist` names the swarm;
/// `options.corruptUploads` is a test-only hook that alters what this page sends to peers
/// (the tests' lying peer).
export function createSharingHls(Hls, hlsConfig, sharing, stats, options = {}) {
  const HlsWithP2P = HlsJsP2PEngine.injectMixin(Hls);
  const reporter = "page-" + Math.random().toString(36).slice(2, 10);
  const connected = new Set();
  Object.defineProperty(stats, "peers", { get: () => connected.size, enumerable: true });
  const core = {
    announceTrackers: [sharing.announce],
    // One swarm per channel whichever edge or signed link a viewer came through: the playlist's
    // path, without host or query (p2p-media-loader's default is the whole URL).
    swarmId: options.playlist ? swarmOf(options.playlist) : undefined,
    // A segment goes to the server once it is this close to the playhead; before that only
    // peers are asked, and one viewer at a time fetches it from the server to seed the rest
    // (p2p-media-loader's default, 15 s, is longer than a live player's whole lead).
    highDemandTimeWindow: HIGH_DEMAND_S,
    // Peers on one network reach each other directly; no STUN server is asked.
    rtcConfig: { iceServers: [] },
    validateP2PSegment: async (url, _range, data) => {
      const ok = await verifySegment(sharing.key, url, data).catch(() => false);
      // Bytes from peers are counted once checked: a lie is not an offload.
      if (ok) stats.p2p += data.byteLength;
      else stats.rejected++;
      return ok;
    },
  };
  if (options.corruptUploads) corruptWhatThisPageSends();
  return new HlsWithP2P({
    liveSyncDurationCount: LIVE_SYNC_SEGMENTS,
    ...hlsConfig,
    p2p: {
      core,
      onHlsJsCreated(hls) {
        const engine = hls.p2pEngine;
        engine.addEventListener("onChunkDownloaded", (n, source) => {
          if (source !== "p2p") stats.http += n;
        });
        engine.addEventListener("onChunkUploaded", (n) => {
          stats.uploaded += n;
        });
        // A set, as a peer's close can be announced twice.
        engine.addEventListener("onPeerConnect", (d) => connected.add(d.peerId));
        engine.addEventListener("onPeerClose", (d) => connected.delete(d.peerId));
        engine.addEventListener("onSegmentError", (d) => {
          if (d.downloadSource !== "p2p" || !d.peerId || !d.error || d.error.type !== "p2p-segment-validation-failed") return;
          const body = JSON.stringify({ reporter, peer: d.peerId, reason: "segment fails the origin's signature" });
          fetch(sharing.tracker + "/api/v1/p2p/browser-report", { method: "POST", body }).catch(() => {});
        });
      },
    },
  });
}

export function freshSharingStats() {
  return { http: 0, p2p: 0, uploaded: 0, peers: 0, rejected: 0 };
}

/// The embed: a sharing player on `video` for `playlist`, or a plain one (with the reason in
/// `player.sharingOff`) where sharing can't work.
export async function startSharing(Hls, video, playlist, hlsConfig = {}) {
  const sharing = await sharingConfig(playlist);
  const stats = freshSharingStats();
  const hls = sharing.off ? new Hls(hlsConfig) : createSharingHls(Hls, hlsConfig, sharing, stats, { playlist });
  hls.loadSource(playlist);
  hls.attachMedia(video);
  return { hls, stats, sharingOff: sharing.off || null };
}
