//! The accept loop: every TCP connection passes the connection caps before a
//! byte of it is parsed, and then gets an HTTP/1.1 connection with a
//! header-read deadline, so a socket that trickles (or never sends) its
//! request head costs the relay one descriptor for a bounded time.
//!
//! The relay serves its router with hyper directly, not `axum::serve`,
//! because `axum::serve` can neither bound the time to read a request head
//! nor refuse a connection before reading it.

use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::sleep_until;
use tower_service::Service;
use tracing::debug;

use crate::http::ConnHandle;
use crate::limits::conns::{AddrFull, ConnSlot};
use crate::shed::Shed;
use crate::Shared;

/// Largest request head (request line and headers) a client may send. A
/// WebSocket upgrade is a few hundred bytes; hyper's default (about 400 KiB)
/// would let every half-open socket pin that much memory. hyper's minimum is
/// 8 KiB.
const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;

/// Pause after a failed accept (usually: out of descriptors), so the loop
/// does not spin while connections close and give descriptors back.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(20);

/// Written to a connection refused at accept, before it is closed: a client
/// that reads it knows why. Written without waiting (the socket is new, so
/// its send buffer is empty), and dropped if it does not fit.
const REFUSED_RESPONSE: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\n\
content-type: text/plain\r\nconnection: close\r\ncontent-length: 64\r\n\r\n\
too many connections from your address (--max-conns-per-ip)    \n";

/// Accepts connections until the shutdown, then drops the listener (so the
/// port stops answering) and returns. Each connection runs as a task of the
/// relay's tracker, so the shutdown waits for it.
pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, router: Router) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(shared.config.header_timeout)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES);
    let http = Arc::new(http);
    loop {
        let accepted = tokio::select! {
            () = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(err) if is_per_connection(&err) => continue,
            Err(err) => {
                debug!(%err, "accept failed");
                shared.shed.note(&shared.metrics, Shed::AcceptFailed);
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let slot = shared.gate.enter(addr.ip(), |reason| {
            shared.shed.note(&shared.metrics, reason);
        });
        let slot = match slot {
            Ok(slot) => slot,
            Err(AddrFull) => {
                shared.shed.note(&shared.metrics, Shed::PerIpCap);
                let _ = tcp.try_write(REFUSED_RESPONSE);
                continue;
            }
        };
        // Frames are small and must go out at once: with Nagle's algorithm a
        // frame waits for the ACK of the previous one, which the peer delays
        // by up to 40 ms (cue-load: fan-out p99 of 44 ms at a tenth of the
        // relay's throughput).
        if let Err(err) = tcp.set_nodelay(true) {
            debug!(%err, "cannot set TCP_NODELAY");
        }
        shared.tasks.spawn(serve_http(
            tcp,
            slot,
            Arc::clone(&shared),
            router.clone(),
            Arc::clone(&http),
        ));
    }
}

/// Errors that concern one connection that failed while being accepted, not
/// the listener: the next accept may well succeed.
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// Serves HTTP on one connection until it closes, is upgraded to a WebSocket
/// (which then owns the slot), is evicted by the caps, or outlives the
/// admission deadline without being upgraded (then it is closed gracefully:
/// a plain HTTP client, say a metrics scraper, just reconnects).
async fn serve_http(
    tcp: TcpStream,
    slot: ConnSlot,
    shared: Arc<Shared>,
    router: Router,
    http: Arc<http1::Builder>,
) {
    let evicted = slot.evicted.clone();
    let deadline = slot.accepted_at + shared.config.admission_timeout;
    let handle = ConnHandle(Arc::new(Mutex::new(Some(slot))));
    // Whether a whole request head ever arrived: the header deadline also
    // closes idle keep-alive connections (a metrics scraper between
    // scrapes), which is housekeeping, not shedding.
    let served = Arc::new(AtomicBool::new(false));
    let saw_request = Arc::clone(&served);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        saw_request.store(true, Ordering::Relaxed);
        request.extensions_mut().insert(handle.clone());
        let mut router = router.clone();
        async move { Ok::<_, Infallible>(router.call(request).await.unwrap_or_else(|e| match e {})) }
    });
    let conn = http
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::pin!(conn);
    let deadline = sleep_until(deadline);
    tokio::pin!(deadline);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    if err.is_timeout() && !served.load(Ordering::Relaxed) {
                        shared.shed.note(&shared.metrics, Shed::HeaderTimeout);
                    } else if err.is_timeout() {
                        debug!("idle keep-alive connection closed");
                    } else {
                        debug!(%err, "HTTP connection failed");
                    }
                }
                return;
            }
            // Counted and logged by the gate that evicted it.
            () = evicted.cancelled() => return,
            () = shared.shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = &mut deadline, if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_well_formed_response() {
        let text = std::str::from_utf8(REFUSED_RESPONSE).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(head.starts_with("HTTP/1.1 429 "));
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{text}"
        );
    }
}
