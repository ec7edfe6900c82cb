//! The bridge's small HTTP servers (health and metrics, the sandbox), served with bounds: a
//! connection cap, and a header-read timeout that also ends idle keep-alive connections, so
//! clients dripping partial requests cannot hold the server open (axum's `serve` has neither).
//! Shutdown: stop accepting, let each connection finish its request, close the rest.

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Bounds for one server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// A request's headers must arrive within this, and an idle connection closes after it.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for requests under way.
    pub shutdown_grace: Duration,
    /// Also HTTP/2 without negotiation (h2c, told apart from HTTP/1.1 by its preface), up to
    /// this many concurrent streams per connection; `None`: HTTP/1.1 only.
    pub http2_streams: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            http2_streams: None,
        }
    }
}

/// Drives a connection to its end, or, at `stop`, shuts it down gracefully within `grace`
/// (hyper's HTTP/1.1 and auto connections are different types with the same two methods).
macro_rules! until_stopped {
    ($conn:ident, $stop:expr, $grace:expr) => {
        tokio::pin!($conn);
        tokio::select! {
            _ = $conn.as_mut() => {}
            () = $stop.cancelled() => {
                $conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout($grace, $conn).await;
            }
        }
    };
}

/// Serves `app` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
    limits: Limits,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // the semaphore is never closed
            },
            () = shutdown.cancelled() => break,
        };
        let socket = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => socket,
                Err(e) => {
                    // Out of file descriptors, say: back off rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let service = TowerToHyperService::new(app.clone());
        let stop = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            if limits.http2_streams.is_some() {
                // Telling HTTP/2 from 1.1 reads the first bytes with no timeout of its own:
                // a client that sends nothing is dropped after the header timeout, as on 1.1.
                let mut first = [0u8; 1];
                match tokio::time::timeout(limits.header_read_timeout, socket.peek(&mut first))
                    .await
                {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return,
                }
            }
            let io = TokioIo::new(socket);
            match limits.http2_streams {
                None => {
                    let mut builder = hyper::server::conn::http1::Builder::new();
                    builder
                        .timer(TokioTimer::new())
                        .header_read_timeout(limits.header_read_timeout);
                    let conn = builder.serve_connection(io, service);
                    until_stopped!(conn, stop, limits.shutdown_grace);
                }
                Some(streams) => {
                    let mut builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    builder
                        .http1()
                        .timer(TokioTimer::new())
                        .header_read_timeout(limits.header_read_timeout);
                    builder
                        .http2()
                        .timer(TokioTimer::new())
                        .max_concurrent_streams(streams);
                    let conn = builder.serve_connection(io, service);
                    until_stopped!(conn, stop, limits.shutdown_grace);
                }
            }
        });
    }
    connections.close();
    // Each connection ends within the grace after shutdown; this bounds the wait anyway.
    let _ = tokio::time::timeout(limits.shutdown_grace * 2, connections.wait()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn server(limits: Limits) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let app = Router::new().route("/healthz", get(|| async { "ok\n" }));
        tokio::spawn(serve(listener, app, stop.clone(), limits));
        (addr, stop)
    }

    #[tokio::test]
    async fn a_dripped_partial_request_is_closed_after_the_header_timeout() {
        let (addr, _stop) = server(Limits {
            header_read_timeout: Duration::from_millis(300),
            ..Limits::default()
        })
        .await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        // Never finish the headers: the server must hang up (EOF or an error), not wait.
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(
            closed.is_ok(),
            "the connection stayed open past the header timeout"
        );
    }

    #[tokio::test]
    async fn connections_over_the_cap_wait_and_the_others_are_served() {
        let (addr, _stop) = server(Limits {
            max_connections: 1,
            header_read_timeout: Duration::from_millis(500),
            ..Limits::default()
        })
        .await;
        // One idle connection holds the only slot until its header timeout.
        let _idle = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        let body = reqwest::get(format!("http://{addr}/healthz"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "ok\n");
        // Served once the idle one was closed by its timeout, not before.
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
    }
}
