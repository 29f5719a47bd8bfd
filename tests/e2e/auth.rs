//! Authentication: tokens made by `periscope token create`, each role on every endpoint
//! and both OTLP transports, the OpenTelemetry SDK sending its token, the UI login, and
//! the refusal to serve a non-loopback address without tokens.

use std::collections::HashMap;
use std::process::Command;

use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use reqwest::StatusCode;

use crate::support::{Server, eventually, otlp};

/// Runs `periscope token create` and returns (token, tokens-file line).
pub(crate) fn create_token(role: &str, name: &str) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_periscope"))
        .args(["token", "create", "--role", role, "--name", name])
        .output()
        .expect("token create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .expect("token line")
        .to_string();
    let line = text.lines().last().expect("file line").to_string();
    assert!(
        line.starts_with(&format!("{name} {role} sha256:")),
        "{line}"
    );
    assert!(!line.contains(&token), "the file line holds only the hash");
    (token, line)
}

fn trace_export(service: &str) -> Vec<u8> {
    let span = otlp::span(vec![3; 16], vec![4; 8], "auth-span");
    otlp::traces(service, vec![span]).encode_to_vec()
}

struct Tokens {
    ingest: String,
    read: String,
    admin: String,
    expired: String,
}

const WRONG: &str = "psc_not-a-token-anyone-was-given";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_exactly_what_it_may_on_every_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ingest, ingest_line) = create_token("ingest", "collector");
    let (read, read_line) = create_token("read", "grafana");
    let (admin, admin_line) = create_token("admin", "ops");
    let (expired, expired_line) = create_token("read", "old");
    let file = dir.path().join("tokens");
    std::fs::write(
        &file,
        format!(
            "# Periscope tokens\n{ingest_line}\n{read_line}\n{admin_line}\n{expired_line} 2020-01-01T00:00:00Z\n"
        ),
    )
    .expect("tokens file");
    let rules = dir.path().join("rules.yml");
    std::fs::write(&rules, "groups: []\n").expect("rules");
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--tokens-file",
            file.to_str().expect("path"),
            "--rules",
            rules.to_str().expect("path"),
        ],
    );
    let t = Tokens {
        ingest,
        read,
        admin,
        expired,
    };
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");

    // Health checks never need a token.
    for path in ["/healthz", "/readyz"] {
        let r = http
            .get(format!("{}{path}", server.api()))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200, "{path}");
    }

    // (method, path, body, role needed); every allowed call answers 200 except the
    // remote write of a body that is not snappy (400).
    let sql = serde_json::json!({"query": "SELECT count(*) FROM spans"}).to_string();
    let endpoints: Vec<(&str, String, String, &str)> = vec![
        ("POST", "/api/v1/sql".into(), sql, "read"),
        ("GET", "/api/v1/query?query=1".into(), String::new(), "read"),
        (
            "GET",
            "/api/v1/query_range?query=1&start=0&end=60&step=15".into(),
            String::new(),
            "read",
        ),
        ("GET", "/api/v1/labels".into(), String::new(), "read"),
        (
            "GET",
            "/api/v1/series?match[]=up".into(),
            String::new(),
            "read",
        ),
        (
            "GET",
            "/api/v1/label/job/values".into(),
            String::new(),
            "read",
        ),
        ("GET", "/api/v1/metadata".into(), String::new(), "read"),
        (
            "GET",
            "/api/v1/status/buildinfo".into(),
            String::new(),
            "read",
        ),
        ("GET", "/api/v1/logs?q=error".into(), String::new(), "read"),
        ("GET", "/api/v1/traces".into(), String::new(), "read"),
        ("GET", "/api/v1/service-graph".into(), String::new(), "read"),
        ("GET", "/api/v1/services".into(), String::new(), "read"),
        ("GET", "/api/v1/components".into(), String::new(), "read"),
        ("GET", "/api/v1/rules".into(), String::new(), "read"),
        ("GET", "/api/v1/alerts".into(), String::new(), "read"),
        ("GET", "/api/v1/notifications".into(), String::new(), "read"),
        ("GET", "/api/services".into(), String::new(), "read"),
        ("GET", "/api/traces?service=x".into(), String::new(), "read"),
        (
            "GET",
            "/api/dependencies?endTs=0&lookback=1".into(),
            String::new(),
            "read",
        ),
        ("GET", "/metrics".into(), String::new(), "read"),
        ("GET", "/ui/".into(), String::new(), "read"),
        ("GET", "/ui/map".into(), String::new(), "read"),
        ("GET", "/ui/logs".into(), String::new(), "read"),
        ("GET", "/ui/sql?q=SELECT%201".into(), String::new(), "read"),
        ("GET", "/ui/storage".into(), String::new(), "read"),
        (
            "POST",
            "/api/v1/write".into(),
            "not snappy".into(),
            "ingest",
        ),
        (
            "POST",
            "/api/v1/rules/reload".into(),
            String::new(),
            "admin",
        ),
    ];
    let mut denial_bodies = Vec::new();
    let mut unauthenticated_bodies = std::collections::BTreeSet::new();
    let mut forbidden_bodies = std::collections::BTreeSet::new();
    for (method, path, body, needs) in &endpoints {
        let expected_ok = if path == "/api/v1/write" {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        let send = |token: Option<&str>| {
            let mut r = http
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                    format!("{}{path}", server.api()),
                )
                .header("content-type", "application/json")
                .body(body.clone());
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            async move {
                let resp = r.send().await.expect("request");
                let status = resp.status();
                (status, resp.text().await.expect("body"))
            }
        };
        let allowed = |role: &str| role == "admin" || role == *needs;
        for (role, token) in [
            ("ingest", t.ingest.as_str()),
            ("read", t.read.as_str()),
            ("admin", t.admin.as_str()),
        ] {
            let (status, text) = send(Some(token)).await;
            if allowed(role) {
                assert_eq!(status, expected_ok, "{role} on {method} {path}: {text}");
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{role} on {method} {path}: {text}"
                );
                forbidden_bodies.insert(text.clone());
                denial_bodies.push(text);
            }
        }
        for token in [None, Some(WRONG), Some(t.expired.as_str())] {
            let (status, text) = send(token).await;
            let page = path.starts_with("/ui/") && *method == "GET";
            if page {
                // A browser with no cookie, or a stale one, goes to the login page.
                assert_eq!(status, StatusCode::SEE_OTHER, "{token:?} on {path}");
            } else {
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{token:?} on {method} {path}: {text}"
                );
                unauthenticated_bodies.insert(text.clone());
                denial_bodies.push(text);
            }
        }
    }
    // Refusals say nothing about the tokens: no names, no difference between missing,
    // wrong and expired.
    for body in &denial_bodies {
        for secret in ["collector", "grafana", "ops", "old", "2020", "sha256"] {
            assert!(!body.contains(secret), "{body} mentions {secret}");
        }
    }
    // Every 401 is the same body whatever the cause and the endpoint, and so is every 403.
    assert_eq!(
        unauthenticated_bodies.len(),
        1,
        "one 401 body for every cause: {unauthenticated_bodies:?}"
    );
    assert_eq!(
        forbidden_bodies.len(),
        1,
        "one 403 body for every role: {forbidden_bodies:?}"
    );

    // SQL stays read-only under every role, admin included.
    for statement in [
        "DROP TABLE spans",
        "COPY (SELECT 1) TO '/tmp/periscope-auth-copy.parquet'",
        "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc/'",
        "SELECT * FROM '/etc/passwd'",
    ] {
        let (status, v) = server.sql_status_with_token(statement, &t.admin).await;
        assert!(status == 403 || status == 400, "{statement}: {status} {v}");
        assert!(
            !v.to_string().contains("missing, invalid"),
            "{statement}: {v}"
        );
    }
    assert!(!std::path::Path::new("/tmp/periscope-auth-copy.parquet").exists());

    // OTLP/HTTP: only ingest and admin.
    for (token, want) in [
        (None, 401),
        (Some(WRONG), 401),
        (Some(t.expired.as_str()), 401),
        (Some(t.read.as_str()), 403),
        (Some(t.ingest.as_str()), 200),
        (Some(t.admin.as_str()), 200),
    ] {
        let mut r = http
            .post(format!("{}/v1/traces", server.otlp_http()))
            .header("content-type", "application/x-protobuf")
            .body(trace_export("auth-http"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        assert_eq!(
            r.send().await.expect("post").status().as_u16(),
            want,
            "{token:?}"
        );
    }

    // OTLP/gRPC: the same, as gRPC status codes.
    let mut client = TraceServiceClient::connect(server.grpc())
        .await
        .expect("connect");
    for (token, want) in [
        (None, Some(tonic::Code::Unauthenticated)),
        (Some(WRONG), Some(tonic::Code::Unauthenticated)),
        (Some(t.expired.as_str()), Some(tonic::Code::Unauthenticated)),
        (Some(t.read.as_str()), Some(tonic::Code::PermissionDenied)),
        (Some(t.ingest.as_str()), None),
        (Some(t.admin.as_str()), None),
    ] {
        let mut req = tonic::Request::new(otlp::traces(
            "auth-grpc",
            vec![otlp::span(vec![5; 16], vec![6; 8], "grpc-span")],
        ));
        if let Some(t) = token {
            req.metadata_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().expect("metadata"),
            );
        }
        let got = client.export(req).await.err().map(|s| s.code());
        assert_eq!(got, want, "{token:?}");
    }

    // The OpenTelemetry SDK sends its token as the Authorization header, over both
    // transports.
    let ingest_token = t.ingest.clone();
    let grpc_addr = server.grpc();
    let http_endpoint = format!("{}/v1/traces", server.otlp_http());
    tokio::task::block_in_place(move || {
        let bearer = format!("Bearer {ingest_token}");
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("authorization", bearer.parse().expect("metadata"));
        let exporters = [
            (
                "sdk-grpc",
                opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(grpc_addr)
                    .with_metadata(metadata)
                    .build()
                    .expect("grpc exporter"),
            ),
            (
                "sdk-http",
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_endpoint(http_endpoint)
                    .with_headers(HashMap::from([(
                        "authorization".to_string(),
                        bearer.clone(),
                    )]))
                    .build()
                    .expect("http exporter"),
            ),
        ];
        for (service, exporter) in exporters {
            crate::support::export_sdk_span(service.to_string(), exporter, "auth-test")
                .expect("flush");
        }
    });
    let services = eventually("SDK spans stored", 30, || async {
        let (status, v) = server
            .sql_status_with_token(
                "SELECT DISTINCT service_name FROM spans WHERE service_name LIKE 'sdk-%' ORDER BY 1",
                &t.read,
            )
            .await;
        assert_eq!(status, 200, "{v}");
        let rows = v["rows"].as_array().cloned().unwrap_or_default();
        (rows.len() == 2).then_some(rows)
    })
    .await;
    assert_eq!(services[0][0], "sdk-grpc");
    assert_eq!(services[1][0], "sdk-http");

    // The UI asks for a token once and keeps it in an HttpOnly, SameSite=Strict cookie.
    let r = http
        .get(format!("{}/ui/logs?q=x", server.api()))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let location = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    assert_eq!(location, "/ui/login?next=%2Fui%2Flogs%3Fq%3Dx");
    let login = http
        .get(format!("{}{location}", server.api()))
        .send()
        .await
        .expect("login page");
    assert_eq!(login.status(), 200);
    assert!(
        login
            .text()
            .await
            .expect("html")
            .contains("type=\"password\"")
    );
    let refused = http
        .post(format!("{}/ui/login", server.api()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            form_urlencoded::Serializer::new(String::new())
                .append_pair("token", &t.ingest)
                .append_pair("next", "/ui/logs?q=x")
                .finish(),
        )
        .send()
        .await
        .expect("post");
    assert_eq!(refused.status(), 401, "an ingest token cannot open the UI");
    assert!(refused.headers().get("set-cookie").is_none());
    let ok = http
        .post(format!("{}/ui/login", server.api()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            form_urlencoded::Serializer::new(String::new())
                .append_pair("token", &t.read)
                .append_pair("next", "/ui/logs?q=x")
                .finish(),
        )
        .send()
        .await
        .expect("post");
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    assert_eq!(ok.headers()["location"], "/ui/logs?q=x");
    let cookie = ok.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().expect("pair").to_string();
    let page = http
        .get(format!("{}/ui/logs?q=x", server.api()))
        .header("cookie", &pair)
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    // The cookie is not an ingest credential... it carries a read token, so the OTLP
    // port refuses it.
    let via_cookie = http
        .post(format!("{}/v1/traces", server.otlp_http()))
        .header("cookie", &pair)
        .header("content-type", "application/x-protobuf")
        .body(trace_export("cookie"))
        .send()
        .await
        .expect("post");
    assert_eq!(via_cookie.status(), 403);
}

#[test]
fn a_public_address_without_tokens_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_periscope"))
        .args(["serve", "--http-addr", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without authentication")
            && err.contains("--insecure-no-auth"),
        "{err}"
    );
    // A malformed tokens file stops the start with its line.
    let file = dir.path().join("tokens");
    std::fs::write(&file, "ok read sha256:00\n").expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_periscope"))
        .args(["serve", "--tokens-file"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tokens:1"), "{err}");
}

/// Sends `method url` with `headers` (a `host` header replaces reqwest's) and `body`;
/// returns the status, the headers and the body. Redirects are not followed.
async fn send_raw(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, reqwest::header::HeaderMap, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut r = client
        .request(
            reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
            url,
        )
        .body(body.to_string());
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let resp = r.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.expect("body"))
}

fn sql_body() -> String {
    serde_json::json!({"query": "SELECT 1 AS one"}).to_string()
}

/// Item: a page the operator visits cannot drive a server that runs without tokens on
/// loopback, neither by a cross-site request nor by DNS rebinding, while curl-like
/// clients (no Origin) and the UI's own origin keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_cannot_use_an_open_loopback_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);
    let api = server.api();
    let sql_url = format!("{api}/api/v1/sql");
    let json = ("content-type", "application/json");
    let own = api.clone();
    let own_origin = ("origin", own.as_str());
    let port = server
        .api_addr
        .rsplit(':')
        .next()
        .expect("port")
        .to_string();

    // curl -d and the SDKs send no Origin: served.
    let (status, _, text) = send_raw("POST", &sql_url, &[json], &sql_body()).await;
    assert_eq!(status, 200, "{text}");
    // The UI's own origin (browsers send Origin on every POST): served, no CORS headers.
    let (status, headers, text) =
        send_raw("POST", &sql_url, &[json, own_origin], &sql_body()).await;
    assert_eq!(status, 200, "{text}");
    assert!(headers.get("access-control-allow-origin").is_none());
    // `fetch(url, {mode: 'no-cors', method: 'POST', body})` from another site: a
    // text/plain body needs no preflight, so the server itself must refuse.
    for (origin, content_type) in [
        ("http://evil.example", "text/plain"),
        ("http://evil.example", "application/json"),
        ("http://127.0.0.1", "text/plain"),
        ("http://127.0.0.1:1", "text/plain"),
        ("null", "text/plain"),
    ] {
        let (status, headers, text) = send_raw(
            "POST",
            &sql_url,
            &[("content-type", content_type), ("origin", origin)],
            &sql_body(),
        )
        .await;
        assert_eq!(status, 403, "Origin {origin}: {text}");
        assert!(headers.get("access-control-allow-origin").is_none());
    }
    let evil = ("origin", "http://evil.example");
    for (method, path) in [
        ("POST", "/api/v1/write"),
        ("POST", "/api/v1/rules/reload"),
        ("GET", "/api/v1/query?query=1"),
        ("OPTIONS", "/api/v1/sql"),
    ] {
        let (status, headers, text) = send_raw(
            method,
            &format!("{api}{path}"),
            &[evil, ("access-control-request-method", "POST")],
            "",
        )
        .await;
        assert_eq!(status, 403, "{method} {path}: {text}");
        assert!(headers.get("access-control-allow-origin").is_none());
    }
    // DNS rebinding: the page's own name, resolved to 127.0.0.1, arrives as the Host.
    let query = format!("{api}/api/v1/query?query=1");
    for host in [
        "evil.example",
        "evil.example:7070",
        "localhost.evil.example",
    ] {
        let (status, _, text) = send_raw("GET", &query, &[("host", host)], "").await;
        assert_eq!(status, 403, "Host {host}: {text}");
    }
    let rebound = format!("evil.example:{port}");
    let (status, _, _) = send_raw(
        "POST",
        &sql_url,
        &[
            json,
            ("host", &rebound),
            ("origin", &format!("http://{rebound}")),
        ],
        &sql_body(),
    )
    .await;
    assert_eq!(status, 403, "a rebound page's same-origin POST");
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let (status, _, text) = send_raw("GET", &query, &[("host", &host)], "").await;
        assert_eq!(status, 200, "Host {host}: {text}");
    }

    // The OTLP/HTTP port: the same rules, and no CORS unless configured.
    let traces = format!("{}/v1/traces", server.otlp_http());
    let protobuf = ("content-type", "application/x-protobuf");
    let (status, _, text) = send_raw("POST", &traces, &[protobuf], "").await;
    assert_eq!(status, 200, "an SDK's export: {text}");
    for (method, headers) in [
        ("POST", [protobuf, evil]),
        ("POST", [protobuf, ("host", "evil.example")]),
        ("OPTIONS", [evil, ("access-control-request-method", "POST")]),
    ] {
        let (status, got, text) = send_raw(method, &traces, &headers, "").await;
        assert_eq!(status, 403, "{method} {headers:?}: {text}");
        assert!(got.get("access-control-allow-origin").is_none());
    }
}

/// Item: real deployments name their hosts (`--allowed-hosts`, `--public-url`), and
/// browser OTLP is served only to the origins of `--cors-allowed-origins`, on the OTLP
/// port only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_hosts_public_url_and_cors_origins_are_opt_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &[
            "--allowed-hosts",
            "periscope.internal,metrics.internal",
            "--public-url",
            "https://obs.example.com/periscope",
            "--cors-allowed-origins",
            "http://shop.example",
        ],
    );
    let api = server.api();
    let query = format!("{api}/api/v1/query?query=1");
    for (host, want) in [
        ("periscope.internal:7070", 200),
        ("METRICS.internal", 200),
        ("obs.example.com", 200),
        ("evil.example", 403),
    ] {
        let (status, _, text) = send_raw("GET", &query, &[("host", host)], "").await;
        assert_eq!(status, want, "Host {host}: {text}");
    }
    let sql_url = format!("{api}/api/v1/sql");
    let json = ("content-type", "application/json");
    for (origin, want) in [
        ("https://obs.example.com", 200),
        ("https://obs.example.com:8443", 403),
        ("http://shop.example", 403),
    ] {
        let (status, _, text) =
            send_raw("POST", &sql_url, &[json, ("origin", origin)], &sql_body()).await;
        assert_eq!(status, want, "Origin {origin} on the API port: {text}");
    }

    let traces = format!("{}/v1/traces", server.otlp_http());
    let shop = ("origin", "http://shop.example");
    let (status, headers, text) = send_raw(
        "OPTIONS",
        &traces,
        &[
            shop,
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ],
        "",
    )
    .await;
    assert_eq!(status, 204, "preflight: {text}");
    assert_eq!(
        headers["access-control-allow-origin"],
        "http://shop.example"
    );
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .expect("methods")
            .contains("POST")
    );
    assert!(
        headers["access-control-allow-headers"]
            .to_str()
            .expect("headers")
            .contains("content-type")
    );
    assert!(headers.get("access-control-allow-credentials").is_none());
    let protobuf = ("content-type", "application/x-protobuf");
    let (status, headers, text) = send_raw("POST", &traces, &[shop, protobuf], "").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        headers["access-control-allow-origin"],
        "http://shop.example"
    );
    let (status, headers, _) = send_raw(
        "POST",
        &traces,
        &[("origin", "http://other.example"), protobuf],
        "",
    )
    .await;
    assert_eq!(status, 403);
    assert!(headers.get("access-control-allow-origin").is_none());

    // A bad value stops the start naming its flag.
    let out = Command::new(env!("CARGO_BIN_EXE_periscope"))
        .args(["serve", "--public-url", "obs.example.com", "--data-dir"])
        .arg(dir.path().join("other"))
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("public-url"), "{err}");
}

/// A server with a read and an admin token; returns it with (read, admin).
fn server_with_tokens(dir: &std::path::Path) -> (Server, String, String) {
    let (read, read_line) = create_token("read", "viewer");
    let (admin, admin_line) = create_token("admin", "operator");
    let file = dir.join("tokens");
    std::fs::write(&file, format!("{read_line}\n{admin_line}\n")).expect("tokens file");
    let rules = dir.join("rules.yml");
    std::fs::write(&rules, "groups: []\n").expect("rules");
    let server = Server::start(
        &dir.join("data"),
        &[
            "--tokens-file",
            file.to_str().expect("path"),
            "--rules",
            rules.to_str().expect("path"),
        ],
    );
    (server, read, admin)
}

/// Logs in with `token` and returns the `name=value` pair of the cookie.
async fn login_cookie(server: &Server, token: &str) -> String {
    let (status, headers, text) = send_raw(
        "POST",
        &format!("{}/ui/login", server.api()),
        &[("content-type", "application/x-www-form-urlencoded")],
        &form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .finish(),
    )
    .await;
    assert_eq!(status, 303, "{text}");
    headers["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_string()
}

/// Item: after the login the browser goes only to a path of this server; tabs, newlines,
/// backslashes and `//host` in `next` fall back to the UI's start page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_sends_the_browser_only_to_paths_of_this_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, read, _) = server_with_tokens(dir.path());
    let login = format!("{}/ui/login", server.api());
    let form = ("content-type", "application/x-www-form-urlencoded");
    for next in [
        "/\t/evil.example/",
        "/\n/evil.example/",
        "/\r\n/evil.example/",
        "/ /evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "/ui/\\..\\\\evil.example",
        "https://evil.example/",
        "evil.example",
    ] {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", &read)
            .append_pair("next", next)
            .finish();
        let (status, headers, text) = send_raw("POST", &login, &[form], &body).await;
        assert_eq!(status, 303, "{next:?}: {text}");
        assert_eq!(headers["location"], "/ui/", "next = {next:?}");
        // The form carries the same fallback, never the foreign target.
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("next", next)
            .finish();
        let (status, _, page) = send_raw("GET", &format!("{login}?{query}"), &[], "").await;
        assert_eq!(status, 200);
        assert!(
            page.contains("name=\"next\" value=\"/ui/\""),
            "next = {next:?}: {page}"
        );
    }
    let (_, headers, _) =
        send_raw("GET", &format!("{}/ui/logs?query=x", server.api()), &[], "").await;
    let target = headers["location"].to_str().expect("location").to_string();
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("token", &read)
        .append_pair(
            "next",
            &form_urlencoded::parse(target.split_once('?').expect("query").1.as_bytes())
                .find(|(k, _)| k == "next")
                .expect("next")
                .1,
        )
        .finish();
    let (_, headers, _) = send_raw("POST", &login, &[form], &body).await;
    assert_eq!(
        headers["location"], "/ui/logs?query=x",
        "a local page is kept"
    );
}

/// Item: every answer of the UI port forbids framing and sniffing and keeps its URL out
/// of other sites' Referer; a request that changes something with the UI cookie alone
/// needs a same-origin Origin, while bearer tokens (no cookie) need none; and with tokens
/// but no allowed hosts configured any Host is served, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_answers_forbid_framing_and_cookie_changes_need_the_ui_origin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, read, admin) = server_with_tokens(dir.path());
    let api = server.api();
    let admin_cookie = login_cookie(&server, &admin).await;
    let read_cookie = login_cookie(&server, &read).await;
    let cookie = |c: &str| ("cookie", c.to_string());
    for (path, headers, want) in [
        ("/ui/login", vec![], 200),
        ("/ui/", vec![], 303),
        ("/ui/", vec![cookie(&read_cookie)], 200),
        ("/ui/sql?q=SELECT%201", vec![cookie(&read_cookie)], 200),
        ("/ui/assets/style.css", vec![], 200),
        ("/api/v1/query?query=1", vec![], 401),
        ("/api/v1/query?query=1", vec![cookie(&read_cookie)], 200),
        ("/healthz", vec![], 200),
        ("/no/such/page", vec![cookie(&read_cookie)], 404),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, got, text) = send_raw("GET", &format!("{api}{path}"), &headers, "").await;
        assert_eq!(status, want, "{path}: {text}");
        assert_eq!(got["x-frame-options"], "DENY", "{path}");
        assert!(
            got["content-security-policy"]
                .to_str()
                .expect("csp")
                .contains("frame-ancestors 'none'"),
            "{path}"
        );
        assert_eq!(got["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(got["referrer-policy"], "same-origin", "{path}");
    }

    let reload = format!("{api}/api/v1/rules/reload");
    let own = api.clone();
    for (headers, want) in [
        (vec![cookie(&admin_cookie)], 403),
        (
            vec![
                cookie(&admin_cookie),
                ("origin", "http://evil.example".into()),
            ],
            403,
        ),
        (vec![cookie(&admin_cookie), ("origin", own.clone())], 200),
        (vec![("authorization", format!("Bearer {admin}"))], 200),
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, _, text) = send_raw("POST", &reload, &h, "").await;
        assert_eq!(status, want, "{headers:?}: {text}");
    }
    let sql_url = format!("{api}/api/v1/sql");
    let json = ("content-type", "application/json");
    let (status, _, text) = send_raw(
        "POST",
        &sql_url,
        &[json, ("cookie", &read_cookie)],
        &sql_body(),
    )
    .await;
    assert_eq!(status, 403, "a cookie POST without Origin: {text}");
    let (status, _, text) = send_raw(
        "POST",
        &sql_url,
        &[json, ("cookie", &read_cookie), ("origin", &own)],
        &sql_body(),
    )
    .await;
    assert_eq!(status, 200, "the UI's own POST: {text}");
    let bearer = format!("Bearer {read}");
    let (status, _, text) = send_raw(
        "POST",
        &sql_url,
        &[
            json,
            ("authorization", &bearer),
            ("host", "periscope.internal"),
        ],
        &sql_body(),
    )
    .await;
    assert_eq!(status, 200, "tokens alone do not restrict Host: {text}");
}
