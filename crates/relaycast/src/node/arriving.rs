//! Parts still arriving from the parent: cut-through inside a part (F32).
//!
//! The core takes a part once all its bytes are in (it checks and forwards whole parts). A viewer
//! holding a request for that part need not wait that long: while the part's QUIC stream is
//! being read, its bytes are kept here, and the edge answers the held request at once and
//! streams the bytes as they arrive. If the stream breaks, the answer is cut short (the player
//! retries the part); once the part is whole it is in the core and this entry is gone.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use relaycast_core::Name;
use relaycast_core::p2p::signing::Signature;
use tokio::sync::watch;

/// A part: channel, rendition, segment, index.
pub type PartKey = (Name, Name, u64, u32);

/// What the header of an arriving part says (known before its bytes).
#[derive(Clone, Debug)]
pub struct PartHead {
    pub len: usize,
    pub origin_ms: u64,
    pub last: bool,
    pub signature: Option<Signature>,
}

/// The bytes of a part so far.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub chunks: Vec<Bytes>,
    pub state: State,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum State {
    #[default]
    Arriving,
    Whole,
    Broken,
}

/// The parts this node is receiving right now.
#[derive(Default)]
pub struct Arriving {
    parts: Mutex<BTreeMap<PartKey, (PartHead, watch::Sender<Progress>)>>,
}

impl Arriving {
    /// A part's stream began; feed its bytes to the returned handle.
    pub fn start(self: &Arc<Self>, key: PartKey, head: PartHead) -> Feed {
        let (tx, _) = watch::channel(Progress::default());
        self.parts.lock().expect("arriving lock").insert(key.clone(), (head, tx.clone()));
        Feed { arriving: self.clone(), key, tx, done: false }
    }

    /// Follow an arriving part, if it is arriving.
    pub fn follow(&self, key: &PartKey) -> Option<(PartHead, watch::Receiver<Progress>)> {
        let parts = self.parts.lock().expect("arriving lock");
        parts.get(key).map(|(head, tx)| (head.clone(), tx.subscribe()))
    }
}

/// The receiving side of one arriving part. Dropped without [`Feed::whole`], the part is
/// marked broken, so followers end their answers instead of waiting.
pub struct Feed {
    arriving: Arc<Arriving>,
    key: PartKey,
    tx: watch::Sender<Progress>,
    done: bool,
}

impl Feed {
    pub fn push(&self, chunk: Bytes) {
        self.tx.send_modify(|p| p.chunks.push(chunk));
    }

    /// Every byte is in (and the part has been handed to the core).
    pub fn whole(mut self) {
        self.done = true;
        self.tx.send_modify(|p| p.state = State::Whole);
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        if !self.done {
            self.tx.send_modify(|p| p.state = State::Broken);
        }
        self.arriving.parts.lock().expect("arriving lock").remove(&self.key);
    }
}

/// The body of an answer that follows an arriving part: every chunk as it comes, ending when
/// the part is whole, with an error when its stream broke.
pub fn body(rx: watch::Receiver<Progress>) -> axum::body::Body {
    let stream = futures_util::stream::unfold(Some((rx, 0usize)), |state| async move {
        let (mut rx, sent) = state?;
        loop {
            let (next, progress) = {
                let p = rx.borrow_and_update();
                (p.chunks.get(sent).cloned(), p.state)
            };
            let broken = match (next, progress) {
                (Some(chunk), _) => return Some((Ok(chunk), Some((rx, sent + 1)))),
                (None, State::Whole) => return None,
                (None, State::Broken) => true,
                // The feed can only go away after saying Whole or Broken; re-read what it said.
                (None, State::Arriving) => rx.changed().await.is_err() && rx.borrow().state == State::Arriving,
            };
            if broken {
                let e = std::io::Error::other("the part's stream from the parent broke");
                return Some((Err(e), None));
            }
        }
    });
    axum::body::Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn key() -> PartKey {
        (Name::new("c").unwrap(), Name::new("r").unwrap(), 5, 1)
    }

    fn head() -> PartHead {
        PartHead { len: 6, origin_ms: 1, last: false, signature: None }
    }

    async fn collect(body: axum::body::Body) -> (Vec<u8>, bool) {
        let mut s = body.into_data_stream();
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(_) => return (out, false),
            }
        }
        (out, true)
    }

    #[tokio::test]
    async fn a_follower_gets_every_byte_including_those_before_it_came() {
        let arriving = Arc::new(Arriving::default());
        let feed = arriving.start(key(), head());
        feed.push(Bytes::from_static(b"abc"));
        let (_, rx) = arriving.follow(&key()).expect("arriving");
        let reader = tokio::spawn(collect(body(rx)));
        tokio::task::yield_now().await;
        feed.push(Bytes::from_static(b"def"));
        feed.whole();
        assert_eq!(reader.await.unwrap(), (b"abcdef".to_vec(), true));
        assert!(arriving.follow(&key()).is_none(), "gone once whole");
    }

    #[tokio::test]
    async fn a_broken_stream_ends_the_answer_with_an_error() {
        let arriving = Arc::new(Arriving::default());
        let feed = arriving.start(key(), head());
        feed.push(Bytes::from_static(b"ab"));
        let (_, rx) = arriving.follow(&key()).expect("arriving");
        drop(feed);
        assert_eq!(collect(body(rx)).await, (b"ab".to_vec(), false));
        assert!(arriving.follow(&key()).is_none(), "gone once broken");
    }
}
