//! TLS for the HTTP and gRPC listeners (`--tls-cert`, `--tls-key`): rustls with the ring
//! provider, TLS 1.2 and 1.3, ALPN for HTTP/2 and HTTP/1.1.
//!
//! The HTTP listener hands axum connections whose handshake is done. Handshakes run in
//! tasks of their own, at most [`HANDSHAKES_AT_ONCE`] at a time and each for at most
//! [`HANDSHAKE_WITHIN`], so a client that opens a connection and says nothing holds neither
//! the accept loop nor a slot for long.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Handshakes in progress at once (a bound on their memory); further connections wait to
/// be accepted. Silent clients hold a slot for [`HANDSHAKE_WITHIN`] at most.
const HANDSHAKES_AT_ONCE: usize = 4096;
/// How long a client has to finish its handshake.
pub(crate) const HANDSHAKE_WITHIN: Duration = Duration::from_secs(10);

/// Why the certificate or key cannot be used; each names its file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS certificate {path}: {why}")]
    Certificate { path: PathBuf, why: String },
    #[error("cannot read the TLS key {path}: {why}")]
    Key { path: PathBuf, why: String },
    #[error("the TLS certificate {cert} and key {key} do not work together: {why}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        why: String,
    },
}

/// A certificate chain and its key, read and checked.
#[derive(Clone)]
pub struct TlsIdentity {
    /// The PEM files as given (tonic takes them as they are).
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// The certificate itself (the chain's first), to tell which names it holds.
    leaf: CertificateDer<'static>,
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Reads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8, PKCS#1 or
    /// SEC1) and checks that the key is the certificate's.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_pem = std::fs::read(cert).map_err(|e| TlsError::Certificate {
            path: cert.into(),
            why: e.to_string(),
        })?;
        let key_pem = std::fs::read(key).map_err(|e| TlsError::Key {
            path: key.into(),
            why: e.to_string(),
        })?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Certificate {
                path: cert.into(),
                why: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(TlsError::Certificate {
                path: cert.into(),
                why: "no PEM certificate in it".into(),
            });
        }
        let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Key {
            path: key.into(),
            why: format!("no PEM private key in it ({e})"),
        })?;
        let mismatch = |why: String| TlsError::Mismatch {
            cert: cert.into(),
            key: key.into(),
            why,
        };
        let leaf = chain[0].clone();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| mismatch(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| mismatch(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            cert_pem,
            key_pem,
            leaf,
            config: Arc::new(config),
        })
    }

    /// Whether a client that verifies the certificate accepts it for `host` (a DNS name or
    /// an IP address, as in a URL; brackets around IPv6 allowed), and if not, why: what the
    /// server checks the address jobs reach it by against at start.
    pub fn check_names(&self, host: &str) -> Result<(), String> {
        use rustls::{CertificateError, Error};
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = rustls::pki_types::ServerName::try_from(host)
            .map_err(|_| format!("`{host}` is not a host name or IP address"))?;
        let cert = rustls::server::ParsedCertificate::try_from(&self.leaf).map_err(|e| {
            format!("its certificate cannot be read as an X.509 server certificate ({e})")
        })?;
        rustls::client::verify_server_name(&cert, &name).map_err(|e| match e {
            Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                presented,
                ..
            }) => match presented.is_empty() {
                true => format!(
                    "its certificate names no host (no subject alternative names; clients \
                     ignore the common name), so it is valid for no `{host}`"
                ),
                false => format!(
                    "its certificate names {}, not `{host}`",
                    presented.join(", ")
                ),
            },
            e => format!("its certificate is not valid for `{host}` ({e})"),
        })
    }
}

/// A listener whose connections have finished their TLS handshake.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` (needs a Tokio runtime); stops when dropped.
    pub fn new(tcp: TcpListener, identity: &TlsIdentity) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept(tcp, TlsAcceptor::from(identity.config.clone()), tx));
        Ok(Self { ready, local })
    }
}

async fn accept(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let slots = Arc::new(Semaphore::new(HANDSHAKES_AT_ONCE));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = tokio::select! {
            _ = ready.closed() => return,
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_WITHIN, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    drop(slot);
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task ended (it only does once this listener is dropped).
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_and_wrong_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let err = TlsIdentity::load(&cert, &key).unwrap_err().to_string();
        assert!(
            err.contains("certificate") && err.contains("cert.pem"),
            "{err}"
        );
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let err = TlsIdentity::load(&cert, &key).unwrap_err().to_string();
        assert!(
            err.contains("no PEM certificate") && err.contains("cert.pem"),
            "{err}"
        );
    }
}
