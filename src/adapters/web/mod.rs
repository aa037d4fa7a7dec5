//! The HTTPS server of a node (`[web]`): the REST API (`api`, described by `openapi`) and
//! `/metrics` (Prometheus text). TLS with the node's inbound certificate
//! (`crate::net::tls::server_config`, self-signed unless configured); HTTP/1.1 over hyper.

pub mod api;
pub mod jobs;
pub mod metrics;
pub mod openapi;
mod session;
pub mod ui;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::TokioIo;
use tower_service::Service;

use crate::core::state::Handles;

/// All routes of the server.
pub fn router(shared: Arc<Handles>) -> axum::Router {
    let deps = metrics::Deps {
        config: shared.config.clone(),
        mail: shared.mail.clone(),
        scan: shared.scan.clone(),
        cpq: shared.cpq.clone(),
    };
    api::routes()
        .merge(ui::routes())
        .route(
            "/metrics",
            axum::routing::get(move || metrics::metrics(deps.clone())),
        )
        .with_state(shared)
}

/// The accept loop of the web server on `listener` (bound by `crate::servers`). When
/// `stop` turns true, each connection ends after its current request, within
/// `shutdown::GRACE`.
pub async fn serve(
    shared: Arc<Handles>,
    listener: tokio::net::TcpListener,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    // Built per server: a restarted web server starts with no sessions.
    let app = router(shared.clone());
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                // Out of descriptors and the like: try again shortly.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        // The certificate in force now (a commit may change it).
        let mut tls = (*shared.tls.server()).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let app = app.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let svc = hyper::service::service_fn(move |mut req| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let mut app = app.clone();
                async move { app.call(req).await }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .header_read_timeout(Duration::from_secs(30))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = crate::core::shutdown::closing(stop) => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(crate::core::shutdown::GRACE, conn).await;
        });
    }
}
