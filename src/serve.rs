//! The HTTP accept loop: hyper (HTTP/1.1 and HTTP/2, with upgrades for WebSockets)
//! with a deadline for a request's headers, so a client that trickles them
//! (slowloris) is cut off instead of holding a connection forever; `axum::serve`
//! has no such timer.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
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
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
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
            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
            .into_owned();
        tokio::spawn(graceful.watch(connection));
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some HTTP requests did not finish within the shutdown grace period");
    }
}
