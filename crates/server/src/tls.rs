//! HTTPS through rustls, when a certificate and key are configured; connections are served by [`crate::listen`].

use std::path::Path;

use anyhow::Context as _;

/// A TLS acceptor for the certificate chain and key in these PEM files, offering HTTP/1.1 only in ALPN: the
/// gateway serves one request at a time per connection, which its budgets count ([`crate::listen`]).
pub async fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
        .await
        .with_context(|| format!("loading TLS certificate {} and key {}", cert.display(), key.display()))?;
    let mut server = (*config.get_inner()).clone();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server)))
}
