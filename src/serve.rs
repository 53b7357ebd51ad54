//! The HTTP accept loop: hyper's HTTP/1.1 (with upgrades for WebSockets) with a
//! deadline for a request's headers, so a client that trickles them (slowloris) is cut
//! off instead of holding a connection forever; `axum::serve` has no such timer.
//! HTTP/1.1 only: browsers speak HTTP/2 only over TLS, which a proxy in front
//! terminates, and a plain HTTP/1 connection upgrades to the bare `TcpStream` that
//! the WebSocket edge wants.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Serves `app` until `stop`, then lets open requests finish for up to `grace`.
/// Upgraded connections (WebSockets) are not waited for here: they have their own
/// shutdown.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    stop: CancellationToken,
    header_timeout: Duration,
    grace: Duration,
    send_buffer_bytes: usize,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let requests = TaskTracker::new();
    loop {
        let (tcp, remote) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, usually: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small frames go out at once: no Nagle delay on the real-time path.
        let _ = tcp.set_nodelay(true);
        if send_buffer_bytes > 0 {
            let _ = socket2::SockRef::from(&tcp).set_send_buffer_size(send_buffer_bytes);
        }
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request
                .extensions_mut()
                .insert(ConnectInfo::<SocketAddr>(remote));
            app.clone().oneshot(request.map(Body::new))
        });
        let connection = builder
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        let stop = stop.clone();
        requests.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                // Finish the request in progress, if any, then close.
                _ = stop.cancelled() => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
    }
    drop(listener);
    requests.close();
    if tokio::time::timeout(grace, requests.wait()).await.is_err() {
        tracing::warn!("some HTTP requests did not finish within the shutdown grace period");
    }
}
