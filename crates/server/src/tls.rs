//! HTTPS through rustls, when a certificate and key are configured.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;

/// Serves `app` over TLS on `listener` until `shutdown` completes, then drains connections for up to 30 s.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    cert: &Path,
    key: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
        .await
        .with_context(|| format!("loading TLS certificate {} and key {}", cert.display(), key.display()))?;
    let handle = axum_server::Handle::new();
    let draining = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        draining.graceful_shutdown(Some(Duration::from_secs(30)));
    });
    let listener = listener.into_std()?;
    axum_server::from_tcp_rustls(listener, config)?
        .handle(handle)
        .serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .await
        .context("serving HTTPS")
}
