//! Graceful shutdown: one signal every task listens to, and a way to wait for
//! every task to be gone (the mini-redis shape).
//!
//! `serve` flips a `watch` channel to `true`; each connection notices, closes its
//! WebSocket with 1001 and ends. Each connection task holds a [`TaskGuard`]
//! (a clone of an mpsc sender that never sends); when the receiver reports that
//! every sender is dropped, every task has finished.

use tokio::sync::{mpsc, watch};

/// A task's view of the shutdown signal.
#[derive(Clone, Debug)]
pub(crate) struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The side that starts the shutdown.
#[derive(Debug)]
pub(crate) struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// Kept alive by every connection task, so that `serve` can wait for them.
#[derive(Clone, Debug)]
pub(crate) struct TaskGuard {
    _alive: mpsc::Sender<()>,
}

/// Resolves once every [`TaskGuard`] is dropped.
#[derive(Debug)]
pub(crate) struct AllTasksDone {
    rx: mpsc::Receiver<()>,
}

/// A fresh signal, not yet triggered.
pub(crate) fn shutdown_signal() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

/// A first guard and the waiter for it and all its clones.
pub(crate) fn task_tracker() -> (TaskGuard, AllTasksDone) {
    let (tx, rx) = mpsc::channel(1);
    (TaskGuard { _alive: tx }, AllTasksDone { rx })
}

impl ShutdownTrigger {
    /// Tells every listener to stop.
    pub(crate) fn trigger(&self) {
        self.tx.send_replace(true);
    }
}

impl Shutdown {
    /// Whether the shutdown has started, for code that is not waiting on it.
    pub(crate) fn is_shutdown(&self) -> bool {
        *self.rx.borrow()
    }

    /// Waits for the shutdown; also returns if the trigger is gone, since then
    /// nobody is left to run the relay.
    pub(crate) async fn recv(&mut self) {
        let _ = self.rx.wait_for(|stopping| *stopping).await;
    }
}

impl AllTasksDone {
    /// Waits until every guard is dropped.
    pub(crate) async fn wait(mut self) {
        // `recv` only returns `None` once all senders are gone; nobody sends.
        while self.rx.recv().await.is_some() {}
    }
}
