//! TLS for the client listener: certificates from PEM files, optional or
//! required client certificates, reload on change, and the accept loop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

use crate::config::{ClientAuth, TlsConfig};
use crate::metrics::Metrics;
use crate::security::audit::{Audit, Record};

/// Longest a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Why the TLS files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{field}: {path}: {source}")]
    Pem { field: &'static str, path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("{field}: {path}: no PEM certificates in the file")]
    NoCertificates { field: &'static str, path: PathBuf },
    #[error("tls.key: no private key in {path}: {source}")]
    Key { path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("tls.client_ca: {path}: {source}")]
    ClientCa { path: PathBuf, source: rustls::Error },
    #[error("tls.client_ca: {0}")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    #[error("tls: {0}")]
    Protocol(#[source] rustls::Error),
    #[error("tls: the certificate and key do not fit together: {0}")]
    Mismatch(#[source] rustls::Error),
}

/// What a listener speaks, offered in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// gRPC: HTTP/2 only.
    Grpc,
    /// The admin HTTP listener: HTTP/2 or HTTP/1.1 (curl, Prometheus).
    Http,
}

/// Reads the files of `config` and builds a server config. The same loader
/// runs at start, in `--check` and on every reload.
pub fn load(config: &TlsConfig, protocols: Protocols) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = read_certs("tls.cert", &config.cert)?;
    let key = PrivateKeyDer::from_pem_file(&config.key)
        .map_err(|source| TlsError::Key { path: config.key.clone(), source })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocol)?;
    let builder = match &config.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs("tls.client_ca", ca)? {
                roots.add(cert).map_err(|source| TlsError::ClientCa { path: ca.clone(), source })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = match config.client_auth.unwrap_or(ClientAuth::Required) {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(verifier.build().map_err(TlsError::Verifier)?)
        }
    };
    let mut server = builder.with_single_cert(certs, key).map_err(TlsError::Mismatch)?;
    server.alpn_protocols = match protocols {
        Protocols::Grpc => vec![b"h2".to_vec()],
        Protocols::Http => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    Ok(Arc::new(server))
}

fn read_certs(field: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem { field, path: path.to_owned(), source };
    let certs = CertificateDer::pem_file_iter(path).map_err(pem)?.collect::<Result<Vec<_>, _>>().map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificates { field, path: path.to_owned() });
    }
    Ok(certs)
}

/// The current server config, swapped when the files change.
pub struct Reloading {
    current: ArcSwap<rustls::ServerConfig>,
    config: TlsConfig,
    protocols: Protocols,
}

impl Reloading {
    pub fn new(config: TlsConfig, protocols: Protocols) -> Result<Arc<Self>, TlsError> {
        let current = ArcSwap::new(load(&config, protocols)?);
        Ok(Arc::new(Self { current, config, protocols }))
    }

    fn stamps(&self) -> Vec<Option<SystemTime>> {
        let files: Vec<&PathBuf> = [Some(&self.config.cert), Some(&self.config.key), self.config.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .collect();
        files.iter().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
    }

    /// Checks the files every `reload_interval` and swaps in a new config
    /// when they changed and load cleanly; a broken edit keeps the old one.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut seen = self.stamps();
        let mut tick = tokio::time::interval(self.config.reload_interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => return,
            }
            let now = self.stamps();
            if now == seen {
                continue;
            }
            match load(&self.config, self.protocols) {
                Ok(config) => {
                    self.current.store(config);
                    seen = now;
                    tracing::info!("TLS certificates reloaded");
                }
                // Files written one after the other may not match yet; the
                // next tick tries again.
                Err(e) => tracing::warn!(error = %e, "TLS files changed but do not load; keeping the current ones"),
            }
        }
    }

    /// Accepts TCP connections and completes TLS handshakes off the accept
    /// loop, yielding established streams. A failed handshake is logged
    /// and audited, never fatal.
    pub fn incoming(
        self: Arc<Self>,
        listener: TcpListener,
        audit: Audit,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> ReceiverStream<Result<PeerStream, std::io::Error>> {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = stop.cancelled() => return,
                    () = tx.closed() => return,
                };
                let (tcp, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, do not spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = tokio_rustls::TlsAcceptor::from(self.current.load_full());
                let tx = tx.clone();
                let audit = audit.clone();
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send(Ok(PeerStream::new(stream, peer))).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            audit.write(Record::handshake(peer, &e.to_string()));
                            metrics.authentication_failure("tls_handshake");
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            audit.write(Record::handshake(peer, "handshake timed out"));
                            metrics.authentication_failure("tls_handshake_timeout");
                        }
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

/// The identities of a verified client certificate.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ClientIdentity {
    /// URI SANs that are SPIFFE ids.
    pub spiffe_ids: Vec<String>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
}

/// The SPIFFE ids (URI SANs) and DNS names (DNS SANs) of a client
/// certificate.
pub fn identities(cert: &CertificateDer<'_>) -> ClientIdentity {
    use x509_parser::extensions::GeneralName;
    let mut out = ClientIdentity::default();
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else { return out };
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) if uri.starts_with("spiffe://") => out.spiffe_ids.push((*uri).to_owned()),
                GeneralName::DNSName(name) => out.dns_names.push((*name).to_owned()),
                _ => {}
            }
        }
    }
    out
}

/// Who is at the other end of a TLS connection. Read once, when the
/// handshake completes; every request on the connection shares it, so the
/// client certificate is parsed once per connection, not per request.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: SocketAddr,
    /// `None` when the client sent no certificate.
    pub client: Option<Arc<ClientIdentity>>,
}

/// An established TLS connection with its [`PeerInfo`], which tonic puts
/// into every request's extensions.
pub struct PeerStream {
    inner: TlsStream<TcpStream>,
    info: PeerInfo,
}

impl PeerStream {
    fn new(inner: TlsStream<TcpStream>, remote: SocketAddr) -> Self {
        // rustls has verified the chain against tls.client_ca already.
        let leaf = inner.get_ref().1.peer_certificates().and_then(<[_]>::first);
        let client = leaf.map(|cert| Arc::new(identities(cert)));
        Self { inner, info: PeerInfo { remote, client } }
    }
}

impl Connected for PeerStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
