//! A relay's plain HTTP/1.1 viewers (issue 21). TS segments go out as stored responses with
//! `sendfile`; every other body-less request goes through the router on the same keep-alive
//! connection; anything else (HTTP/1.0, HTTP/2, a request with a body) is handed to hyper.
//!
//! One origin loops the built-in sample; one relay (the edge) carries it. The test proves:
//! - the stored segment is byte for byte, header for header (but `date`) what hyper's path
//!   answers (HTTP/1.0 and HTTP/2 prior knowledge), and it is the stored path that answered
//!   (`relaycast_stored_segment_bytes` grows);
//! - pipelined requests on one connection (segment, playlist, HEAD of the segment, a missing
//!   segment) come back in order, each framed right;
//! - garbage, an oversized head, a head cut short and a body-carrying request each get their
//!   answer (400, 431, nothing, 405) and the edge still serves everyone afterwards.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use support::{MEDIA_WAIT, Node, segment_uris, seq_of, wait_until};

const TOKEN: &str = "http1-token";

/// A response read off a connection that stays open.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The headers but `date`, sorted: what two paths must agree on.
    fn comparable_headers(&self) -> Vec<(String, String)> {
        let mut h: Vec<_> = self.headers.iter().filter(|(n, _)| n != "date").cloned().collect();
        h.sort();
        h
    }
}

/// Read one response; its body is `content-length` bytes (none for a HEAD).
fn read_answer(reader: &mut impl BufRead, head_only: bool) -> Answer {
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("status line");
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        panic!("bad status line {status_line:?}");
    });
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (n, v) = line.split_once(':').unwrap_or_else(|| panic!("bad header line {line:?}"));
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; if head_only { 0 } else { len }];
    reader.read_exact(&mut body).expect("body");
    Answer { status, headers, body }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the edge");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Send `raw` on a new connection and read everything until the edge closes it.
fn exchange_bytes(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    s.write_all(raw).expect("send");
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    String::from_utf8_lossy(&exchange_bytes(addr, raw)).into_owned()
}

#[test]
fn stored_segments_answer_as_the_router_does_and_bad_input_breaks_nothing() {
    let origin = Node::origin("origin", TOKEN, &["--sample"]);
    let edge = Node::relay("edge", origin.quic.expect("origin has QUIC"), TOKEN, false);
    let playlist = "/live/demo/src/index.m3u8";
    let seq = wait_until(MEDIA_WAIT, "the edge to list segments", || {
        let r = edge.get(playlist);
        (r.status == 200).then(|| segment_uris(&r.text()).last().map(|u| seq_of(u))).flatten()
    });
    let segment = format!("/live/demo/src/{seq}.ts");
    let stored_before = edge.metric("relaycast_stored_segment_bytes");

    // Pipelined on one keep-alive connection: all four in one write.
    let mut conn = connect(edge.http);
    let host = edge.http;
    let pipelined = format!(
        "GET {segment} HTTP/1.1\r\nHost: {host}\r\n\r\nGET {playlist} HTTP/1.1\r\nHost: {host}\r\n\r\n\
         HEAD {segment} HTTP/1.1\r\nHost: {host}\r\n\r\nGET /live/demo/src/1.ts HTTP/1.1\r\nHost: {host}\r\n\r\n"
    );
    conn.write_all(pipelined.as_bytes()).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let stored = read_answer(&mut reader, false);
    let listed = read_answer(&mut reader, false);
    let head = read_answer(&mut reader, true);
    let missing = read_answer(&mut reader, false);
    assert_eq!(stored.status, 200);
    assert_eq!(stored.header("content-type"), Some("video/mp2t"));
    assert!(stored.body.len() > 10_000 && stored.body[0] == 0x47, "a TS segment: {} bytes", stored.body.len());
    assert_eq!(listed.status, 200);
    assert!(String::from_utf8_lossy(&listed.body).starts_with("#EXTM3U"), "the playlist after the segment");
    assert_eq!((head.status, head.header("content-length")), (200, stored.header("content-length")));
    assert_eq!(missing.status, 404, "{}", String::from_utf8_lossy(&missing.body));
    assert!(String::from_utf8_lossy(&missing.body).contains("not in the window"));
    let grew = edge.metric("relaycast_stored_segment_bytes");
    assert!(grew > stored_before, "the stored path answered: stored bytes {stored_before} -> {grew}");

    // The same segment from hyper's path: HTTP/1.0, then HTTP/2 with prior knowledge (curl).
    let old = exchange_bytes(edge.http, format!("GET {segment} HTTP/1.0\r\n\r\n").as_bytes());
    let old = read_answer(&mut old.as_slice(), false);
    assert_eq!(old.status, 200);
    assert_eq!(old.body, stored.body, "HTTP/1.0 (hyper) and the stored response carry the same bytes");
    assert_eq!(old.comparable_headers(), stored.comparable_headers());
    let h2 = Command::new("curl")
        .args(["-s", "-D", "-", "-o", "/dev/null", "--http2-prior-knowledge", &edge.url(&segment)])
        .output()
        .expect("curl (installed by .ci/run)");
    let h2_head = String::from_utf8_lossy(&h2.stdout).to_ascii_lowercase();
    assert!(h2_head.starts_with("http/2 200"), "{h2_head}");
    for (name, value) in stored.comparable_headers() {
        assert!(h2_head.contains(&format!("{name}: {}", value.to_ascii_lowercase())), "HTTP/2 lacks {name}: {h2_head}");
    }

    // Bad input, each on its own connection.
    let garbage = exchange(edge.http, b"\x16\x03\x01\x02\x00garbage that is not HTTP\r\n\r\n");
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
    assert!(garbage.contains("malformed request"), "{garbage}");
    let huge = format!("GET {segment} HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", "a".repeat(20_000));
    let huge = exchange(edge.http, huge.as_bytes());
    assert!(huge.starts_with("HTTP/1.1 431 "), "{huge}");
    assert_eq!(exchange(edge.http, b"GET /live/demo/src/"), "", "a head cut short is answered by nothing");
    let post = format!("POST {segment} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
    let post = exchange(edge.http, post.as_bytes());
    assert!(post.starts_with("HTTP/1.1 405 "), "a request with a body goes to hyper and the router: {post}");
    let closing = exchange(edge.http, format!("GET {segment} HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes());
    assert!(closing.starts_with("HTTP/1.1 200 "), "{}", &closing[..closing.len().min(300)]);

    // Still serving, on the old keep-alive connection and on a new one.
    conn.write_all(format!("GET {segment} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).unwrap();
    assert_eq!(read_answer(&mut reader, false).body, stored.body);
    assert_eq!(edge.get(&segment).body, stored.body);
}
