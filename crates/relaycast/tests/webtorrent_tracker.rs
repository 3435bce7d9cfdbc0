//! The tracker's WebTorrent side as a browser's p2p-media-loader meets it, over real WebSockets
//! to a real tracker process: offers go to the nearest peers (same region first), answers come
//! back, reported peers are left out, and bad input — text that is not JSON, binary frames,
//! oversized messages, floods — gets an answer or a closed connection, never a dead tracker.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Node, request};
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const HASH: &str = "relaycast-test-swarm";

async fn connect(tracker: &Node, region: &str) -> Ws {
    let url = format!("ws://{}/announce?region={region}", tracker.http);
    tokio_tungstenite::connect_async(url).await.expect("WebSocket upgrade").0
}

/// A 20-character peer id like p2p-media-loader's.
fn peer(name: &str) -> String {
    format!("-PM0203-{name:-<12}")
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.expect("send");
}

/// The next JSON text message, within 5 s.
async fn recv(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("connection open")
            .expect("a frame");
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).expect("JSON");
        }
    }
}

/// Nothing (but pings) arrives for 300 ms.
async fn silent(ws: &mut Ws) -> bool {
    loop {
        match tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
            Err(_) => return true,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(_) => return false,
        }
    }
}

/// Whether the tracker closed the connection (within 5 s).
async fn closed(ws: &mut Ws) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return false,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

async fn join(ws: &mut Ws, name: &str, offers: usize) -> Value {
    let offers: Vec<Value> = (0..offers)
        .map(|i| json!({"offer": {"type": "offer", "sdp": format!("v=0 from {name} #{i}")}, "offer_id": format!("{name:-<18}o{i}")}))
        .collect();
    send(
        ws,
        json!({"action": "announce", "info_hash": HASH, "peer_id": peer(name), "numwant": offers.len(),
        "uploaded": 0, "downloaded": 0, "event": "started", "offers": offers}),
    )
    .await;
    recv(ws).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_go_to_nearby_peers_and_answers_come_back() {
    let tracker = Node::tracker(&["--provisioner", "none", "--token", "wt-token"]);
    let mut us = connect(&tracker, "us").await;
    let mut eu_a = connect(&tracker, "eu").await;
    let mut eu_b = connect(&tracker, "eu").await;
    for (ws, name) in [(&mut us, "us"), (&mut eu_a, "eu-a"), (&mut eu_b, "eu-b")] {
        let reply = join(ws, name, 0).await;
        assert_eq!(reply["action"], "announce", "{reply}");
        assert!(reply["interval"].as_u64().unwrap() > 0, "{reply}");
    }

    // A newcomer in eu with two offers: they go to the two eu peers, not to us.
    let mut eu_new = connect(&tracker, "eu").await;
    let reply = join(&mut eu_new, "eu-new", 2).await;
    assert_eq!(reply["incomplete"], 4, "{reply}");
    let offer_a = recv(&mut eu_a).await;
    let offer_b = recv(&mut eu_b).await;
    assert!(silent(&mut us).await, "the far peer got no offer while nearer ones were there");
    for offer in [&offer_a, &offer_b] {
        assert_eq!(offer["peer_id"], peer("eu-new"), "{offer}");
        assert_eq!(offer["info_hash"], HASH);
        assert_eq!(offer["offer"]["type"], "offer");
    }

    // eu-a answers: the answer reaches the newcomer, and the answering peer gets nothing back.
    send(&mut eu_a, json!({"action": "announce", "info_hash": HASH, "peer_id": peer("eu-a"),
        "to_peer_id": peer("eu-new"), "offer_id": offer_a["offer_id"], "answer": {"type": "answer", "sdp": "v=0 answer"}}))
    .await;
    let answer = recv(&mut eu_new).await;
    assert_eq!(answer["peer_id"], peer("eu-a"), "{answer}");
    assert_eq!(answer["answer"]["sdp"], "v=0 answer");
    assert_eq!(answer["offer_id"], offer_a["offer_id"]);
    assert!(silent(&mut eu_a).await);

    // Two pages report eu-b (from addresses with a live tracker connection): it is left out.
    for reporter in ["page-1", "page-2"] {
        let body =
            json!({"reporter": reporter, "peer": peer("eu-b"), "reason": "segment fails the origin's signature"});
        let r = request("POST", &tracker.url("/api/v1/p2p/browser-report"), body.to_string().as_bytes()).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let view: Value = serde_json::from_slice(&tracker.get("/api/v1/p2p/browsers").body).unwrap();
    let listed = &view["swarms"][0]["peers"];
    assert!(listed.as_array().unwrap().iter().any(|p| p["peer"] == peer("eu-b") && p["excluded"] == true), "{view}");
    send(
        &mut eu_new,
        json!({"action": "announce", "info_hash": HASH, "peer_id": peer("eu-new"), "numwant": 2,
        "offers": [{"offer": {"type": "offer", "sdp": "v=0"}, "offer_id": "eu-new-second-offer0"},
                   {"offer": {"type": "offer", "sdp": "v=0"}, "offer_id": "eu-new-second-offer1"}]}),
    )
    .await;
    recv(&mut eu_new).await;
    assert_eq!(recv(&mut eu_a).await["peer_id"], peer("eu-new"));
    assert_eq!(recv(&mut us).await["peer_id"], peer("eu-new"), "the second offer goes past the reported peer");
    assert!(silent(&mut eu_b).await, "the reported peer is offered to no one");

    // A page closing leaves the swarm.
    drop(eu_new);
    support::wait_until(Duration::from_secs(5), "the closed page leaves its swarm", || {
        let view: Value = serde_json::from_slice(&tracker.get("/api/v1/p2p/browsers").body).unwrap();
        (view["swarms"][0]["peers"].as_array().map_or(0, Vec::len) == 3).then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_answers_or_closed_connections_and_the_tracker_lives_on() {
    let tracker = Node::tracker(&["--provisioner", "none", "--token", "wt-token"]);

    // Not JSON, an unknown action, a wrong id: a failure reason, and the connection stays.
    let mut ws = connect(&tracker, "eu").await;
    for bad in ["not json", r#"{"action":"dance"}"#, r#"{"action":"announce","info_hash":"short","peer_id":"x"}"#] {
        ws.send(Message::Text(bad.into())).await.unwrap();
        let reply = recv(&mut ws).await;
        assert!(reply["failure reason"].as_str().unwrap().contains("malformed"), "{bad} -> {reply}");
    }
    ws.send(Message::Binary(vec![0u8; 10].into())).await.unwrap();
    assert!(recv(&mut ws).await["failure reason"].as_str().unwrap().contains("binary"));
    assert_eq!(join(&mut ws, "survivor", 0).await["action"], "announce", "still served after bad input");

    // An offer with a 20 kB session description (the message is under 64 KiB) is refused by
    // name, and the page is still served.
    let big = json!({"action": "announce", "info_hash": HASH, "peer_id": peer("big"),
        "offers": [{"offer": {"type": "offer", "sdp": "x".repeat(20_000)}, "offer_id": "big-offer-0000000000"}]});
    let mut ws2 = connect(&tracker, "eu").await;
    send(&mut ws2, big).await;
    let reply = recv(&mut ws2).await;
    assert!(reply["failure reason"].as_str().unwrap().contains("longer than"), "{reply}");
    assert_eq!(join(&mut ws2, "big", 0).await["action"], "announce");

    // A message over 64 KiB closes the connection.
    let mut huge = connect(&tracker, "eu").await;
    let _ = huge.send(Message::Text("x".repeat(100_000).into())).await;
    assert!(closed(&mut huge).await, "an oversized message closes the connection");

    // A flood of announcements closes the connection.
    let mut flood = connect(&tracker, "eu").await;
    for i in 0..150 {
        let msg = json!({"action": "announce", "info_hash": HASH, "peer_id": peer("flood"), "event": if i == 0 { "started" } else { "update" }});
        if flood.send(Message::Text(msg.to_string().into())).await.is_err() {
            break;
        }
    }
    assert!(closed(&mut flood).await, "a flood closes the connection");
    // Whichever limit trips first names itself: the rate, or (on a loaded machine, the flooder
    // not reading its answers) the queue of answers it does not read.
    let log = tracker.log();
    assert!(
        log.contains("messages in 10 s") || log.contains("does not read its tracker messages"),
        "the log says why: {log}"
    );

    // The tracker serves the next client as before.
    let mut next = connect(&tracker, "eu").await;
    assert_eq!(join(&mut next, "after", 0).await["action"], "announce");
    assert!(tracker.metric("relaycast_wt_malformed_total") >= 3.0);
}
