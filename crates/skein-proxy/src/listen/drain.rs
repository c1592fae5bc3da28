//! Graceful drain: a signal every listener and connection watches, and a token every
//! connection holds so that shutdown can wait for the last one.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// Tells listeners and connections that the proxy is draining.
#[derive(Clone, Debug)]
pub struct DrainSignal {
    rx: watch::Receiver<bool>,
}

impl DrainSignal {
    /// Resolves once draining has started (at once if it already has).
    pub async fn signaled(&mut self) {
        // An error means the sender is gone, which only happens at shutdown: same meaning.
        let _ = self.rx.wait_for(|d| *d).await;
    }
}

/// Held by every live connection and listener; drain completes when all are dropped.
#[derive(Clone, Debug)]
pub struct ConnToken {
    _tx: mpsc::Sender<()>,
}

/// Owner side of the drain.
#[derive(Debug)]
pub struct Drain {
    tx: watch::Sender<bool>,
    root: Option<ConnToken>,
    done: mpsc::Receiver<()>,
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    /// A new, not yet signaled drain.
    pub fn new() -> Self {
        let (tx, _) = watch::channel(false);
        let (ttx, done) = mpsc::channel(1);
        Drain {
            tx,
            root: Some(ConnToken { _tx: ttx }),
            done,
        }
    }

    /// A signal receiver.
    pub fn signal(&self) -> DrainSignal {
        DrainSignal {
            rx: self.tx.subscribe(),
        }
    }

    /// A token; `None` once draining has started.
    pub fn token(&self) -> Option<ConnToken> {
        self.root.clone()
    }

    /// Starts draining without waiting.
    pub fn start(&mut self) {
        self.tx.send_replace(true);
        self.root = None;
    }

    /// Starts draining and waits until every token is dropped or `timeout` passes.
    /// Returns true when everything finished in time.
    pub async fn drain(mut self, timeout: Duration) -> bool {
        self.start();
        tokio::time::timeout(timeout, self.done.recv())
            .await
            .is_ok()
    }
}
