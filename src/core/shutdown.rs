//! How a management server that is stopping (a commit moved or removed it) tells its
//! open connections: the server's `watch` turns true (or its sender is dropped), an HTTP
//! connection then ends after its current request, and an SSH session may go on for
//! [`GRACE`] before it is disconnected. `servers` flips the watch; `ssh` and `web` wait
//! on it, so neither needs the other nor the code that starts them.

use std::time::Duration;

use tokio::sync::watch;

/// How long the connections of a stopped server may go on.
pub const GRACE: Duration = Duration::from_secs(10);

/// Resolves when the server that accepted a connection is stopping.
pub async fn closing(mut rx: watch::Receiver<bool>) {
    // The sender gone is a stop too.
    let _ = rx.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls a future once: `Some` when it was ready.
    async fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut *f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }

    #[tokio::test]
    async fn closing_resolves_on_a_stop_or_a_dropped_sender_and_not_before() {
        let (tx, rx) = watch::channel(false);
        let mut waiting = Box::pin(closing(rx));
        assert!(poll_once(&mut waiting).await.is_none());
        tx.send_replace(false);
        assert!(poll_once(&mut waiting).await.is_none());
        tx.send_replace(true);
        assert!(poll_once(&mut waiting).await.is_some());

        let (tx, rx) = watch::channel(false);
        let mut waiting = Box::pin(closing(rx));
        assert!(poll_once(&mut waiting).await.is_none());
        drop(tx);
        assert!(poll_once(&mut waiting).await.is_some());
    }
}
