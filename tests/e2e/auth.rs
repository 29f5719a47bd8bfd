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

    // (method, path, body, role needed)
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
    for (method, path, body, needs) in &endpoints {
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
                assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{role} on {method} {path}: {status} {text}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{role} on {method} {path}: {text}"
                );
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
    let unauth: std::collections::BTreeSet<&String> = denial_bodies
        .iter()
        .filter(|b| b.contains("missing"))
        .collect();
    assert_eq!(unauth.len(), 1, "one 401 body for every cause: {unauth:?}");

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
