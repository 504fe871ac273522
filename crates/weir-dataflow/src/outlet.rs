//! [`Outlet`]: the end of a stream that others subscribe to. A table's change
//! log and a view's output are outlets; each subscriber (a view's pipeline)
//! gets its own bounded channel, so the slowest subscriber paces the writer.

use parking_lot::Mutex;
use tokio::sync::mpsc;
use weir_common::Message;

use crate::CHANNEL_CAPACITY;

/// Fan-out of one stream to any number of subscribers.
#[derive(Default)]
pub struct Outlet {
    subscribers: Mutex<Vec<mpsc::Sender<Message>>>,
}

impl Outlet {
    /// An outlet with no subscribers.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new subscriber; it receives every message sent from now on.
    pub fn subscribe(&self) -> mpsc::Receiver<Message> {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        self.subscribers.lock().push(tx);
        rx
    }

    /// A new subscriber, and a sender into its channel for messages that
    /// must precede the outlet's own (a new view's backfill).
    pub fn subscribe_with_sender(&self) -> (mpsc::Sender<Message>, mpsc::Receiver<Message>) {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        self.subscribers.lock().push(tx.clone());
        (tx, rx)
    }

    /// Send to every live subscriber, waiting for room in each channel.
    /// Subscribers that went away are dropped.
    pub async fn send(&self, msg: Message) {
        let subscribers: Vec<mpsc::Sender<Message>> = self.subscribers.lock().clone();
        let mut closed = false;
        for s in &subscribers {
            if s.send(msg.clone()).await.is_err() {
                closed = true;
            }
        }
        if closed {
            self.subscribers.lock().retain(|s| !s.is_closed());
        }
    }

    /// Disconnect every subscriber: they see their input end.
    pub fn close(&self) {
        self.subscribers.lock().clear();
    }

    /// Number of live subscribers.
    pub fn subscriber_count(&self) -> usize {
        let mut subs = self.subscribers.lock();
        subs.retain(|s| !s.is_closed());
        subs.len()
    }
}
