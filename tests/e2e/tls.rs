//! TLS on all three ports and client certificates (mTLS) on the two OTLP ports: the
//! OpenTelemetry Rust SDK exports over OTLP/gRPC and OTLP/HTTP with a client certificate
//! and SQL reads the spans back over HTTPS; clients without a certificate or with one from
//! another CA, and plain HTTP, are refused and store nothing; without a client CA, tokens
//! authenticate ingest as before; slow handshakes and headers are cut off; bad certificate
//! files stop the start with the flag and the file named.
//!
//! Every certificate is made at test time with rcgen: a CA, a server certificate for
//! 127.0.0.1 and localhost, a client certificate from the CA, and a client certificate
//! from another CA.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Server, eventually, otlp};

/// A certificate and its key, in PEM, and where they are written.
struct Pem {
    cert: String,
    key: String,
    cert_file: PathBuf,
    key_file: PathBuf,
}

/// The test PKI: a CA, the server's certificate, a client of the CA and a client of
/// another CA.
struct Pki {
    _dir: tempfile::TempDir,
    ca: String,
    ca_file: PathBuf,
    server: Pem,
    client: Pem,
    rogue: Pem,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}

fn leaf(
    dir: &Path,
    name: &str,
    issuer: &CertifiedIssuer<'static, KeyPair>,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Pem {
    let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().expect("key");
    let cert = params.signed_by(&key, issuer).expect("sign");
    let pem = Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
        cert_file: dir.join(format!("{name}.crt")),
        key_file: dir.join(format!("{name}.key")),
    };
    std::fs::write(&pem.cert_file, &pem.cert).expect("write cert");
    std::fs::write(&pem.key_file, &pem.key).expect("write key");
    pem
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let authority = ca("Periscope test CA");
    let other = ca("Someone else's CA");
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, authority.pem()).expect("write CA");
    let server = leaf(
        dir.path(),
        "server",
        &authority,
        &["localhost", "127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    let client = leaf(
        dir.path(),
        "mesh-proxy",
        &authority,
        &["mesh-proxy"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let rogue = leaf(
        dir.path(),
        "rogue",
        &other,
        &["mesh-proxy"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    Pki {
        ca: authority.pem(),
        ca_file,
        server,
        client,
        rogue,
        _dir: dir,
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

impl Pki {
    /// Flags for TLS with this server certificate, and the client CA when `mtls`.
    fn flags(&self, mtls: bool) -> Vec<&str> {
        let mut f = vec![
            "--tls-cert",
            path(&self.server.cert_file),
            "--tls-key",
            path(&self.server.key_file),
        ];
        if mtls {
            f.extend(["--tls-client-ca", path(&self.ca_file)]);
        }
        f
    }

    /// A rustls client trusting the test CA, showing `identity` if given.
    fn rustls_client(&self, identity: Option<&Pem>) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca.as_bytes()) {
            roots.add(c.expect("CA PEM")).expect("CA");
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
        match identity {
            None => builder.with_no_client_auth(),
            Some(id) => builder
                .with_client_auth_cert(
                    CertificateDer::pem_slice_iter(id.cert.as_bytes())
                        .collect::<Result<Vec<_>, _>>()
                        .expect("cert PEM"),
                    PrivateKeyDer::from_pem_slice(id.key.as_bytes()).expect("key PEM"),
                )
                .expect("client identity"),
        }
    }

    /// An HTTPS connector (HTTP/2 or HTTP/1.1 by ALPN) trusting the test CA.
    fn connector(&self, identity: Option<&Pem>) -> HttpsConnector<HttpConnector> {
        hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(self.rustls_client(identity))
            .https_only()
            .enable_all_versions()
            .build()
    }

    /// An HTTPS client trusting the test CA, showing `identity` if given.
    fn https(&self, identity: Option<&Pem>) -> Https {
        Client::builder(TokioExecutor::new()).build(self.connector(identity))
    }

    /// tonic's TLS settings: trust the test CA, show `identity` if given.
    fn tonic_tls(&self, identity: Option<&Pem>) -> tonic::transport::ClientTlsConfig {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca));
        match identity {
            None => tls,
            Some(id) => tls.identity(tonic::transport::Identity::from_pem(&id.cert, &id.key)),
        }
    }
}

type Https = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// POSTs `body` and returns the status and the body as text.
async fn post(
    client: &Https,
    url: &str,
    content_type: &str,
    body: Vec<u8>,
    token: Option<&str>,
) -> Result<(u16, String), hyper_util::client::legacy::Error> {
    let mut request = http::Request::post(url).header("content-type", content_type);
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    let response = client
        .request(request.body(Full::new(Bytes::from(body))).expect("request"))
        .await?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// SQL over HTTPS on the API port.
async fn sql(client: &Https, server: &Server, query: &str, token: Option<&str>) -> (u16, Value) {
    let body = serde_json::to_vec(&serde_json::json!({ "query": query })).expect("json");
    let url = format!("https://{}/api/v1/sql", server.api_addr);
    let (status, text) = post(client, &url, "application/json", body, token)
        .await
        .expect("SQL over HTTPS");
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, v)
}

/// The services that have spans, in order.
async fn services(client: &Https, server: &Server, token: Option<&str>) -> Vec<String> {
    let (status, v) = sql(
        client,
        server,
        "SELECT DISTINCT service_name FROM spans ORDER BY 1",
        token,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r[0].as_str().expect("service").to_string())
        .collect()
}

fn trace_export(service: &str) -> Vec<u8> {
    otlp::traces(
        service,
        vec![otlp::span(vec![7; 16], vec![8; 8], "tls-span")],
    )
    .encode_to_vec()
}

/// The OpenTelemetry SDK's HTTP client, run on the test's tokio runtime: the SDK's batch
/// processor exports from a thread of its own, which hyper cannot spawn on.
#[derive(Debug, Clone)]
struct OnRuntime {
    inner: opentelemetry_http::hyper::HyperClient<HttpsConnector<HttpConnector>>,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let inner = self.inner.clone();
        self.runtime
            .spawn(async move { inner.send_bytes(request).await })
            .await?
    }
}

/// Exports one span per transport with the OpenTelemetry SDK, as services `{prefix}-grpc`
/// and `{prefix}-http`, over TLS, showing `identity` and sending `token` if given.
fn export_with_sdk(
    server: &Server,
    pki: &Pki,
    prefix: &str,
    identity: Option<&Pem>,
    token: Option<&str>,
) {
    let runtime = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        let mut metadata = tonic::metadata::MetadataMap::new();
        let mut headers = std::collections::HashMap::new();
        if let Some(t) = token {
            metadata.insert(
                "authorization",
                format!("Bearer {t}").parse().expect("meta"),
            );
            headers.insert("authorization".to_string(), format!("Bearer {t}"));
        }
        let http_client = OnRuntime {
            inner: opentelemetry_http::hyper::HyperClient::new(
                pki.connector(identity),
                Duration::from_secs(10),
                None,
            ),
            runtime,
        };
        let exporters = [
            (
                format!("{prefix}-grpc"),
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(format!("https://{}", server.grpc_addr))
                    .with_tls_config(pki.tonic_tls(identity))
                    .with_metadata(metadata)
                    .build()
                    .expect("gRPC exporter"),
            ),
            (
                format!("{prefix}-http"),
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_http_client(http_client)
                    .with_endpoint(format!("https://{}/v1/traces", server.otlp_http_addr))
                    .with_headers(headers)
                    .build()
                    .expect("HTTP exporter"),
            ),
        ];
        for (service, exporter) in exporters {
            // A refused export shows as missing spans below.
            let _ = crate::support::export_sdk_span(service, exporter, "tls-test");
        }
    });
}

/// Whether one OTLP/gRPC export over TLS with `identity` succeeds.
async fn grpc_export(
    server: &Server,
    pki: &Pki,
    identity: Option<&Pem>,
    service: &str,
) -> Result<(), String> {
    let channel = tonic::transport::Channel::from_shared(format!("https://{}", server.grpc_addr))
        .expect("endpoint")
        .tls_config(pki.tonic_tls(identity))
        .expect("tls config")
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let request = otlp::traces(
        service,
        vec![otlp::span(vec![9; 16], vec![1; 8], "grpc-span")],
    );
    TraceServiceClient::new(channel)
        .export(request)
        .await
        .map(|_| ())
        .map_err(|s| format!("export: {s}"))
}

/// A read token and an ingest token made by `periscope token create`, and a tokens file.
fn tokens(dir: &Path) -> (String, String, PathBuf) {
    let (read, read_line) = crate::auth::create_token("read", "grafana");
    let (ingest, ingest_line) = crate::auth::create_token("ingest", "collector");
    let file = dir.join("tokens");
    std::fs::write(&file, format!("{read_line}\n{ingest_line}\n")).expect("tokens file");
    (read, ingest, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_exports_over_mtls_on_both_otlp_ports_and_sql_reads_the_spans_over_https() {
    let pki = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let (read, _, tokens_file) = tokens(dir.path());
    let mut flags = pki.flags(true);
    flags.extend(["--tokens-file", path(&tokens_file)]);
    let mut server = Server::start(&dir.path().join("data"), &flags);

    // The SDK shows the mesh proxy's certificate and sends no token: the certificate is
    // its ingest credential.
    export_with_sdk(&server, &pki, "mtls", Some(&pki.client), None);
    let https = pki.https(None);
    let stored = eventually("spans exported over mTLS", 30, || async {
        let s = services(&https, &server, Some(&read)).await;
        (s.len() == 2).then_some(s)
    })
    .await;
    assert_eq!(stored, ["mtls-grpc", "mtls-http"]);
    let (status, v) = sql(
        &https,
        &server,
        "SELECT name FROM spans WHERE service_name = 'mtls-http'",
        Some(&read),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["rows"][0][0], "sdk-span");

    // A certificate never grants read: the API port asks for none and wants a token.
    let with_cert = pki.https(Some(&pki.client));
    let (status, _) = sql(&with_cert, &server, "SELECT 1", None).await;
    assert_eq!(status, 401);

    // `periscope sql` over HTTPS with the CA; without it the system's CAs do not trust
    // the test CA and it says what to do.
    let sql_cli = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_periscope"))
            .args(["sql", "--format", "csv", "--token", &read])
            .args(["--server", &format!("https://{}", server.api_addr)])
            .args(extra)
            .arg("SELECT count(*) AS n FROM spans WHERE service_name LIKE 'mtls-%'")
            .output()
            .expect("periscope sql")
    };
    let out = sql_cli(&["--tls-ca", path(&pki.ca_file)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "n\n2\n");
    let out = sql_cli(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tls-ca"), "{err}");

    // Shutdown stays graceful with TLS on every port.
    assert!(server.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_certificate_from_the_client_ca_are_refused_and_store_nothing() {
    let pki = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &pki.flags(true));

    for (who, identity) in [("no-cert", None), ("rogue", Some(&pki.rogue))] {
        let refused = grpc_export(&server, &pki, identity, &format!("{who}-grpc")).await;
        assert!(refused.is_err(), "{who}: gRPC export was accepted");
        let url = format!("https://{}/v1/traces", server.otlp_http_addr);
        let refused = post(
            &pki.https(identity),
            &url,
            "application/x-protobuf",
            trace_export(&format!("{who}-http")),
            None,
        )
        .await;
        assert!(refused.is_err(), "{who}: HTTP export answered {refused:?}");
    }
    // The SDK without a certificate gets nowhere either.
    export_with_sdk(&server, &pki, "sdk-no-cert", None, None);

    // Plain HTTP and gRPC to the TLS ports fail.
    let plain = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", server.otlp_http_addr))
        .header("content-type", "application/x-protobuf")
        .body(trace_export("plain-http"))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    let plain = reqwest::get(format!("http://{}/healthz", server.api_addr)).await;
    assert!(plain.is_err(), "plain HTTP to the API port was answered");
    let plain = match TraceServiceClient::connect(format!("http://{}", server.grpc_addr)).await {
        Ok(mut c) => c
            .export(otlp::traces(
                "plain-grpc",
                vec![otlp::span(vec![9; 16], vec![2; 8], "s")],
            ))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    assert!(plain.is_err(), "plain gRPC was accepted");

    // A proper client goes through afterwards, and is the only thing stored.
    grpc_export(&server, &pki, Some(&pki.client), "good-grpc")
        .await
        .expect("export with the client certificate");
    let https = pki.https(None);
    let stored = eventually("the good export", 30, || async {
        let s = services(&https, &server, None).await;
        (!s.is_empty()).then_some(s)
    })
    .await;
    assert_eq!(stored, ["good-grpc"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_client_ca_tls_ingest_is_authenticated_by_tokens_as_before() {
    let pki = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let (read, ingest, tokens_file) = tokens(dir.path());
    let mut flags = pki.flags(false);
    flags.extend(["--tokens-file", path(&tokens_file)]);
    let server = Server::start(&dir.path().join("data"), &flags);
    let https = pki.https(None);

    // No token: 401 over HTTPS, UNAUTHENTICATED over gRPC with TLS.
    let url = format!("https://{}/v1/traces", server.otlp_http_addr);
    let (status, _) = post(
        &https,
        &url,
        "application/x-protobuf",
        trace_export("no-token"),
        None,
    )
    .await
    .expect("HTTPS");
    assert_eq!(status, 401);
    let err = grpc_export(&server, &pki, None, "no-token")
        .await
        .expect_err("no token");
    assert!(
        err.contains("Unauthenticated") || err.contains("token"),
        "{err}"
    );

    // A client certificate is not asked for, so it cannot stand in for a token.
    let (status, _) = post(
        &pki.https(Some(&pki.client)),
        &url,
        "application/x-protobuf",
        trace_export("cert-only"),
        None,
    )
    .await
    .expect("HTTPS");
    assert_eq!(status, 401);

    // The SDK with an ingest token, over both transports.
    export_with_sdk(&server, &pki, "token", None, Some(&ingest));
    let (status, _) = post(
        &https,
        &url,
        "application/x-protobuf",
        trace_export("token-raw"),
        Some(&ingest),
    )
    .await
    .expect("HTTPS");
    assert_eq!(status, 200);
    let stored = eventually("token-authenticated spans", 30, || async {
        let s = services(&https, &server, Some(&read)).await;
        (s.len() == 3).then_some(s)
    })
    .await;
    assert_eq!(stored, ["token-grpc", "token-http", "token-raw"]);
}

/// Reads until the server closes the connection; panics if it has not by `deadline`.
async fn closed_by_server<S: tokio::io::AsyncRead + Unpin>(
    mut s: S,
    what: &str,
    deadline: tokio::time::Instant,
) -> String {
    let mut buf = Vec::new();
    let read = tokio::time::timeout_at(deadline, s.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "{what}: a slow client was not cut off after 1 s"
    );
    String::from_utf8_lossy(&buf).into_owned()
}

async fn tls_connect(
    pki: &Pki,
    addr: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut config = pki.rustls_client(None);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_handshakes_and_slow_headers_are_cut_off_and_big_headers_get_431_over_tls() {
    let pki = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut flags = pki.flags(false);
    flags.extend(["--header-read-timeout", "1s", "--max-header-bytes", "16KiB"]);
    let server = Server::start(dir.path(), &flags);
    let https = pki.https(None);
    let health = || async {
        let r = https
            .request(
                http::Request::get(format!("https://{}/healthz", server.api_addr))
                    .body(Full::new(Bytes::new()))
                    .expect("request"),
            )
            .await
            .expect("healthz over HTTPS");
        r.status().as_u16()
    };

    // Clients that connect and never start the handshake, on every port.
    let mut silent = Vec::new();
    for addr in [&server.api_addr, &server.otlp_http_addr, &server.grpc_addr] {
        for _ in 0..10 {
            silent.push((
                addr.clone(),
                tokio::net::TcpStream::connect(addr).await.expect("connect"),
            ));
        }
    }
    // Clients that finish the handshake and never finish their headers.
    let mut slow = Vec::new();
    for addr in [&server.api_addr, &server.otlp_http_addr] {
        for _ in 0..10 {
            let mut s = tls_connect(&pki, addr).await;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .expect("write");
            slow.push((addr.clone(), s));
        }
    }
    // Meanwhile the server answers others.
    assert_eq!(health().await, 200);
    // All are cut off after the flag's 1 s, long before the default's 10 s.
    let deadline = tokio::time::Instant::now() + crate::support::CUT_OFF_WITHIN;
    for (addr, s) in silent {
        let text = closed_by_server(s, &addr, deadline).await;
        assert!(!text.starts_with("HTTP"), "{addr}: {text}");
    }
    for (addr, s) in slow {
        let text = closed_by_server(s, &addr, deadline).await;
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
    }
    // A header block over the flag's limit, under the default's: 431 over TLS too, and
    // taken by a server with the defaults.
    let between = crate::support::BETWEEN_FLAG_AND_DEFAULT;
    for addr in [&server.api_addr, &server.otlp_http_addr] {
        let s = tls_connect(&pki, addr).await;
        let status = crate::support::status_for_header_of(s, between).await;
        assert!(status.starts_with("HTTP/1.1 431"), "{addr}: {status}");
    }
    assert_eq!(health().await, 200);
    let default_dir = tempfile::tempdir().expect("tempdir");
    let defaults = Server::start(default_dir.path(), &pki.flags(false));
    for addr in [&defaults.api_addr, &defaults.otlp_http_addr] {
        let s = tls_connect(&pki, addr).await;
        let status = crate::support::status_for_header_of(s, between).await;
        assert!(
            crate::support::header_block_taken(&status),
            "default on {addr}: {status}"
        );
    }
}

/// Item: over TLS the UI's session cookie is `Secure` (a browser never sends it over
/// plain HTTP), and the UI's answers carry the security headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_session_cookie_is_secure() {
    let pki = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let (read, _, tokens_file) = tokens(dir.path());
    let mut flags = pki.flags(false);
    flags.extend(["--tokens-file", path(&tokens_file)]);
    let server = Server::start(&dir.path().join("data"), &flags);
    let https = pki.https(None);
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("token", &read)
        .append_pair("next", "/ui/")
        .finish();
    let response = https
        .request(
            http::Request::post(format!("https://{}/ui/login", server.api_addr))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(form)))
                .expect("request"),
        )
        .await
        .expect("login over HTTPS");
    assert_eq!(response.status().as_u16(), 303);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    assert!(cookie.split(';').any(|a| a.trim() == "Secure"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.headers()["referrer-policy"], "same-origin");
    // The UI's own origin over TLS is https://…: a cookie POST from it is served.
    let pair = cookie.split(';').next().expect("pair").to_string();
    let sql = serde_json::to_vec(&serde_json::json!({ "query": "SELECT 1" })).expect("json");
    let response = https
        .request(
            http::Request::post(format!("https://{}/api/v1/sql", server.api_addr))
                .header("content-type", "application/json")
                .header("cookie", &pair)
                .header("origin", format!("https://{}", server.api_addr))
                .body(Full::new(Bytes::from(sql)))
                .expect("request"),
        )
        .await
        .expect("SQL over HTTPS");
    assert_eq!(response.status().as_u16(), 200);
}

#[test]
fn bad_certificate_files_stop_the_start_naming_the_flag_and_the_file() {
    let pki = pki();
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "this is not PEM\n").expect("write");
    let missing = dir.path().join("missing.crt");
    let cert = path(&pki.server.cert_file);
    let key = path(&pki.server.key_file);
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--tls-cert", path(&missing), "--tls-key", key],
            vec!["--tls-cert", "missing.crt"],
        ),
        (
            vec!["--tls-cert", path(&junk), "--tls-key", key],
            vec!["--tls-cert", "junk.pem"],
        ),
        (
            vec!["--tls-cert", cert, "--tls-key", path(&junk)],
            vec!["--tls-key", "junk.pem"],
        ),
        // The client's key is not the server certificate's key.
        (
            vec!["--tls-cert", cert, "--tls-key", path(&pki.client.key_file)],
            vec!["--tls-key", "mesh-proxy.key", "server.crt"],
        ),
        (
            vec![
                "--tls-cert",
                cert,
                "--tls-key",
                key,
                "--tls-client-ca",
                path(&junk),
            ],
            vec!["--tls-client-ca", "junk.pem"],
        ),
        (vec!["--tls-cert", cert], vec!["--tls-key"]),
    ];
    for (flags, want) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_periscope"))
            .arg("serve")
            .args(&flags)
            .args(["--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr"])
            .args(["127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .output()
            .expect("run");
        assert!(!out.status.success(), "{flags:?} started");
        let err = String::from_utf8_lossy(&out.stderr);
        for w in want {
            assert!(err.contains(w), "{flags:?}: {err}");
        }
    }
}
