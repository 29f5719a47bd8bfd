//! TLS on the three ports (rustls with the ring provider): one server certificate and key
//! from PEM files for all ports and, with a client CA, client-certificate verification
//! (mTLS) on the two OTLP ports, which is how mesh proxies identify themselves.
//!
//! Handshakes never run in an accept loop: each connection does its own, in its own task,
//! within a deadline (the `--header-read-timeout`), so a client that connects and stays
//! silent holds nothing but its own socket until then.
//!
//! ```text
//! TcpListener ─accept─> task: handshake (deadline) ─> TlsStream ─> hyper (HTTP ports)
//!                                                        └──────> channel ─> tonic (gRPC)
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tracing::debug;

/// The crypto provider of every TLS configuration in Periscope.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Request extension on the OTLP/HTTP port: the connection's client showed a certificate
/// that the client CA verified during the handshake. It authorizes ingest only.
#[derive(Debug, Clone, Copy)]
pub struct ClientCertificate;

/// The TLS configurations of the three ports, loaded and checked at start.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// UI and query APIs: no client certificates; ALPN `h2`, `http/1.1`.
    pub api: Arc<ServerConfig>,
    /// OTLP/HTTP: ALPN `h2`, `http/1.1`; client certificates required with a client CA.
    pub otlp_http: Arc<ServerConfig>,
    /// OTLP/gRPC: ALPN `h2`; client certificates required with a client CA.
    pub otlp_grpc: Arc<ServerConfig>,
    /// Whether OTLP clients must show a certificate signed by the client CA.
    pub client_auth: bool,
    /// The certificate file, for the start-up log.
    pub cert_file: PathBuf,
}

impl ServerTls {
    /// Reads the server certificate chain, its private key and the optional client CA
    /// bundle (all PEM) and builds the three ports' configurations.
    ///
    /// # Errors
    /// When a file cannot be read, holds no certificate or key, the key is not the
    /// certificate's, or a CA certificate is not usable; the message names the flag and
    /// the file.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> anyhow::Result<ServerTls> {
        let chain = read_certs("tls-cert", cert)?;
        let key_der = read_key(key)?;
        let verifier = match client_ca {
            None => None,
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for (i, c) in read_certs("tls-client-ca", ca)?.into_iter().enumerate() {
                    roots.add(c).map_err(|e| {
                        anyhow::anyhow!(
                            "--tls-client-ca: certificate {} in {} is not a usable CA certificate ({e})",
                            i + 1,
                            ca.display()
                        )
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .with_context(|| {
                            format!("--tls-client-ca: {} cannot verify clients", ca.display())
                        })?;
                Some(verifier)
            }
        };
        let build = |alpn: &[&[u8]], client_auth: bool| -> anyhow::Result<Arc<ServerConfig>> {
            let builder = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .context("the ring provider offers no TLS version")?;
            let builder = match (&verifier, client_auth) {
                (Some(v), true) => builder.with_client_cert_verifier(v.clone()),
                _ => builder.with_no_client_auth(),
            };
            let mut config = builder
                .with_single_cert(chain.clone(), key_der.clone_key())
                .map_err(|e| match e {
                    rustls::Error::InconsistentKeys(_) => anyhow::anyhow!(
                        "--tls-key: {} is not the private key of the certificate in {} (--tls-cert)",
                        key.display(),
                        cert.display()
                    ),
                    e => anyhow::anyhow!(
                        "--tls-cert/--tls-key: cannot use {} with {} ({e})",
                        cert.display(),
                        key.display()
                    ),
                })?;
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(config))
        };
        Ok(ServerTls {
            api: build(&[b"h2", b"http/1.1"], false)?,
            otlp_http: build(&[b"h2", b"http/1.1"], true)?,
            otlp_grpc: build(&[b"h2"], true)?,
            client_auth: verifier.is_some(),
            cert_file: cert.to_path_buf(),
        })
    }
}

/// `[tls]` in the TOML file: the files of [`ServerTls::load`], relative to the config
/// file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Server certificate chain (PEM), leaf first.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
    /// CA bundle (PEM) that OTLP clients' certificates must be signed by (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// Where the TLS files are: `[cert, key, client_ca]`.
pub type TlsPaths = [Option<PathBuf>; 3];

/// TLS from the flags, else `[tls]` (file paths relative to `base`, the config file's
/// directory); `None` when neither gives a certificate.
///
/// # Errors
/// When only half a setup is given (a certificate without its key, a key without its
/// certificate, a client CA without either), naming the missing flag; else as
/// [`ServerTls::load`].
pub fn resolve(
    flags: TlsPaths,
    section: TlsSection,
    base: &Path,
) -> anyhow::Result<Option<ServerTls>> {
    let sectioned = [section.cert, section.key, section.client_ca];
    let [cert, key, client_ca] = std::array::from_fn(|i| {
        flags[i].clone().or_else(|| {
            sectioned[i]
                .clone()
                .map(|p| if p.is_relative() { base.join(p) } else { p })
        })
    });
    match (cert, key) {
        (Some(cert), Some(key)) => ServerTls::load(&cert, &key, client_ca.as_deref()).map(Some),
        (None, None) => match client_ca {
            Some(ca) => bail!(
                "--tls-client-ca {}: client certificates need TLS: give --tls-cert and --tls-key too",
                ca.display()
            ),
            None => Ok(None),
        },
        (Some(cert), None) => bail!(
            "--tls-cert {} needs --tls-key (the certificate's private key; TOML [tls] key)",
            cert.display()
        ),
        (None, Some(key)) => bail!(
            "--tls-key {} needs --tls-cert (the certificate it belongs to; TOML [tls] cert)",
            key.display()
        ),
    }
}

/// Every certificate in a PEM file; at least one.
pub fn read_certs(flag: &str, path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("--{flag}: cannot read {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--{flag}: {} is not valid PEM ({e})", path.display()))?;
    if certs.is_empty() {
        bail!(
            "--{flag}: {} holds no certificate (expected a PEM block -----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("--tls-key: cannot read {}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => anyhow::anyhow!(
            "--tls-key: {} holds no private key (expected a PEM block -----BEGIN PRIVATE KEY-----, \
             RSA PRIVATE KEY or EC PRIVATE KEY)",
            path.display()
        ),
        e => anyhow::anyhow!(
            "--tls-key: {} is not a PEM private key ({e})",
            path.display()
        ),
    })
}

/// The server side of a handshake on `stream`, within `deadline`. `None` when the client
/// fails it (no or an untrusted certificate, plain HTTP, no common protocol) or is too
/// slow; logged at debug level, as clients cause these.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    deadline: Duration,
) -> Option<TlsStream<TcpStream>> {
    let peer = stream.peer_addr().ok();
    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(error)) => {
            debug!(%error, ?peer, "TLS handshake failed");
            None
        }
        Err(_) => {
            debug!(?peer, ?deadline, "TLS handshake timed out");
            None
        }
    }
}

/// Whether the client of a connection showed a certificate; rustls has verified it against
/// the client CA by the end of the handshake (a port without a client CA asks for none).
pub fn client_certificate(tls: &TlsStream<TcpStream>) -> Option<ClientCertificate> {
    let (_, session) = tls.get_ref();
    session
        .peer_certificates()
        .is_some_and(|c| !c.is_empty())
        .then_some(ClientCertificate)
}

/// Connections of `listener` that completed a TLS handshake (within `deadline`), for
/// tonic's `serve_with_incoming_shutdown`, and the accept loop that feeds them, which the
/// caller runs (see [`crate::incoming`]).
pub fn incoming(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    deadline: Duration,
) -> (
    ReceiverStream<io::Result<TlsStream<TcpStream>>>,
    impl Future<Output = ()> + Send + 'static,
) {
    let acceptor = TlsAcceptor::from(config);
    crate::incoming::incoming(listener, move |stream| {
        let acceptor = acceptor.clone();
        async move { handshake(&acceptor, stream, deadline).await }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_loads_and_each_port_gets_its_protocols() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = self_signed("localhost");
        let c = write(dir.path(), "c.pem", &cert);
        let k = write(dir.path(), "k.pem", &key);
        let tls = ServerTls::load(&c, &k, Some(&c)).expect("load");
        assert!(tls.client_auth);
        assert_eq!(tls.otlp_grpc.alpn_protocols, [b"h2".to_vec()]);
        assert_eq!(
            tls.api.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(!ServerTls::load(&c, &k, None).expect("load").client_auth);
    }

    #[test]
    fn bad_files_name_the_flag_and_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = self_signed("localhost");
        let (_, other_key) = self_signed("other");
        let c = write(dir.path(), "c.pem", &cert);
        let k = write(dir.path(), "k.pem", &key);
        let other = write(dir.path(), "other.pem", &other_key);
        let junk = write(dir.path(), "junk.pem", "not pem at all\n");
        let missing = dir.path().join("missing.pem");
        let err = |r: anyhow::Result<ServerTls>| format!("{:#}", r.expect_err("must fail"));
        let e = err(ServerTls::load(&missing, &k, None));
        assert!(e.contains("--tls-cert") && e.contains("missing.pem"), "{e}");
        let e = err(ServerTls::load(&junk, &k, None));
        assert!(e.contains("--tls-cert") && e.contains("junk.pem"), "{e}");
        let e = err(ServerTls::load(&c, &junk, None));
        assert!(e.contains("--tls-key") && e.contains("junk.pem"), "{e}");
        let e = err(ServerTls::load(&c, &c, None));
        assert!(
            e.contains("--tls-key") && e.contains("no private key"),
            "{e}"
        );
        let e = err(ServerTls::load(&c, &other, None));
        assert!(
            e.contains("--tls-key") && e.contains("other.pem") && e.contains("c.pem"),
            "{e}"
        );
        let e = err(ServerTls::load(&c, &k, Some(&junk)));
        assert!(
            e.contains("--tls-client-ca") && e.contains("junk.pem"),
            "{e}"
        );
    }
}
