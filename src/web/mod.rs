//! The HTTPS server of a node (`[web]`): the REST API (`api`, described by `openapi`) and
//! `/metrics` (Prometheus text). TLS with the node's inbound certificate
//! (`crate::tls::server_config`, self-signed unless configured); HTTP/1.1 over hyper.

pub mod api;
pub mod jobs;
pub mod metrics;
pub mod openapi;
mod session;
pub mod ui;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::ConnectInfo;
use hyper_util::rt::TokioIo;
use tower_service::Service;

use crate::node::Shared;

/// All routes of the server.
pub fn router(shared: Arc<Shared>) -> axum::Router {
    api::routes()
        .merge(ui::routes())
        .route("/metrics", axum::routing::get(metrics::metrics))
        .with_state(shared)
}

/// Binds `[web]` and serves it in the background; `None` when `[web]` is absent.
pub async fn start(shared: &Arc<Shared>) -> Result<Option<SocketAddr>> {
    let cfg = shared.config();
    let Some(web) = &cfg.web else {
        return Ok(None);
    };
    let addr = SocketAddr::new(cfg.interfaces[web.interface].address, web.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the web server to {addr}"))?;
    let bound = listener.local_addr()?;
    shared.log.info(format!("Web listening on https://{bound}"));
    let app = router(shared.clone());
    let shared = shared.clone();
    tokio::spawn(async move {
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
            let mut tls = (*shared.tls_server()).clone();
            tls.alpn_protocols = vec![b"http/1.1".to_vec()];
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
            let app = app.clone();
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
                let _ = hyper::server::conn::http1::Builder::new()
                    .header_read_timeout(Duration::from_secs(30))
                    .timer(hyper_util::rt::TokioTimer::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(Some(bound))
}
