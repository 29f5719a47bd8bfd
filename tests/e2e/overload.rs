//! Bounded memory: past its budget the server refuses with a retryable answer instead of
//! growing, and keeps every export it did acknowledge.

use std::collections::HashSet;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;

use crate::support::{Server, otlp};

/// An export of 400 spans, each with a 4 KiB attribute, with span ids from `first`.
fn big_export(
    first: u64,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    let padding = "x".repeat(4096);
    let spans = (first..first + 400)
        .map(|id| {
            let mut s = otlp::span(vec![8; 16], (id + 1).to_be_bytes().to_vec(), "big");
            s.attributes.push(otlp::kv("padding", &padding));
            s
        })
        .collect();
    otlp::traces("overload", spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_its_memory_budget_the_server_answers_retry_later_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    // 64 MiB budget: at most 32 MiB of unflushed rows. Flushes only by pressure.
    let server = Server::start(
        dir.path(),
        &[
            "--memory-limit",
            "64MiB",
            "--flush-bytes",
            "1GiB",
            "--flush-interval",
            "1h",
        ],
    );
    let client = reqwest::Client::new();
    let mut acked = HashSet::new();
    let mut refused_http = None;
    for n in 0..400u64 {
        let first = n * 1000;
        let r = client
            .post(format!("{}/v1/traces", server.otlp_http()))
            .header("content-type", "application/x-protobuf")
            .body(big_export(first).encode_to_vec())
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => {
                acked.insert(first);
            }
            503 => {
                refused_http = Some(r);
                break;
            }
            other => panic!("unexpected status {other}: {}", r.text().await.unwrap()),
        }
    }
    let r = refused_http.expect("the server refused once its buffer was full");
    assert_eq!(r.headers()["retry-after"], "1");
    let body = r.bytes().await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("memory budget"));

    // gRPC exporters get UNAVAILABLE (retryable) while the buffer is still full, or
    // success once a flush has made room; never INTERNAL.
    let mut grpc = TraceServiceClient::connect(server.grpc()).await.unwrap();
    let mut grpc_acked = None;
    match grpc.export(big_export(9_000_000)).await {
        Ok(_) => grpc_acked = Some(9_000_000u64),
        Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status}"),
    }

    // Every acknowledged export is there, exactly once.
    let expected = (acked.len() + usize::from(grpc_acked.is_some())) as i64 * 400;
    server.assert_spans_exactly_once(expected).await;
}

/// Slow clients (slowloris) are cut off after the header timeout while health checks keep
/// answering, and an oversized header block gets 431. The flags' values are what count:
/// a silent client is cut off long before the 10 s default timeout, and a 24 KiB header
/// block, which the 64 KiB default takes, gets 431.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_oversized_requests_are_cut_off() {
    use crate::support::{BETWEEN_FLAG_AND_DEFAULT, CUT_OFF_WITHIN, status_for_header_of};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(
        dir.path(),
        &["--header-read-timeout", "1s", "--max-header-bytes", "16KiB"],
    );
    // The same header block on a server with the defaults is taken.
    let default_dir = tempfile::tempdir().expect("tempdir");
    let defaults = Server::start(default_dir.path(), &[]);
    for addr in [defaults.api_addr.clone(), defaults.otlp_http_addr.clone()] {
        let s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let status = status_for_header_of(s, BETWEEN_FLAG_AND_DEFAULT).await;
        assert!(
            crate::support::header_block_taken(&status),
            "default on {addr}: {status}"
        );
    }
    for addr in [server.api_addr.clone(), server.otlp_http_addr.clone()] {
        // Fifty connections that start a request and never finish its headers.
        let mut slow = Vec::new();
        for _ in 0..50 {
            let mut s = tokio::net::TcpStream::connect(&addr)
                .await
                .expect("connect");
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await
                .expect("write");
            slow.push(s);
        }
        // Meanwhile the server answers others.
        let health = reqwest::get(format!("http://{}/healthz", server.api_addr))
            .await
            .expect("healthz");
        assert_eq!(health.status(), 200);
        // Every slow connection is closed by the server (EOF or a 408) after the flag's
        // 1 s, long before the default's 10 s.
        let deadline = tokio::time::Instant::now() + CUT_OFF_WITHIN;
        for mut s in slow {
            let mut buf = Vec::new();
            let read = tokio::time::timeout_at(deadline, s.read_to_end(&mut buf)).await;
            assert!(
                read.is_ok(),
                "{addr}: a slow client was not cut off after 1 s"
            );
            let text = String::from_utf8_lossy(&buf);
            assert!(buf.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
        }
        // A header block over the flag's limit (and under the default's): 431, and the
        // server goes on.
        let s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let status = status_for_header_of(s, BETWEEN_FLAG_AND_DEFAULT).await;
        assert!(status.starts_with("HTTP/1.1 431"), "{addr}: {status}");
        let s = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        crate::support::assert_big_header_gets_431(s, &addr).await;
    }
    // The OTLP/gRPC port: silent connections are closed after the same timeout, a huge
    // header block is refused, and exports go on.
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(
            tokio::net::TcpStream::connect(&server.grpc_addr)
                .await
                .expect("connect"),
        );
    }
    let mut client = TraceServiceClient::connect(server.grpc())
        .await
        .expect("connect");
    let deadline = tokio::time::Instant::now() + CUT_OFF_WITHIN;
    for mut s in silent {
        let mut buf = Vec::new();
        let read = tokio::time::timeout_at(deadline, s.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "a silent gRPC client was not cut off after 1 s"
        );
    }
    let big = || {
        let mut big = tonic::Request::new(otlp::traces(
            "big-header",
            vec![otlp::span(vec![7; 16], vec![7; 8], "big")],
        ));
        big.metadata_mut().insert(
            "x-big",
            "a".repeat(BETWEEN_FLAG_AND_DEFAULT)
                .parse()
                .expect("metadata value"),
        );
        big
    };
    let mut default_client = TraceServiceClient::connect(defaults.grpc())
        .await
        .expect("connect");
    default_client
        .export(big())
        .await
        .expect("the default limit takes a 24 KiB header");
    let refused = client
        .export(big())
        .await
        .expect_err("a 24 KiB header was taken with --max-header-bytes 16KiB");
    // The server answers 431 to a header list a little over the limit and ends the
    // connection with GOAWAY ENHANCE_YOUR_CALM past that; a client still writing then may
    // see the connection closed instead.
    let seen = format!("{refused:?}");
    assert!(
        (refused.code() == tonic::Code::ResourceExhausted && seen.contains("header_list"))
            || seen.contains("HTTP status code 431")
            || seen.contains("broken pipe")
            || seen.contains("connection reset"),
        "{seen}"
    );
    let mut client = TraceServiceClient::connect(server.grpc())
        .await
        .expect("connect");
    client.export(big_export(10_000)).await.expect("export");
    let health = reqwest::get(format!("http://{}/healthz", server.api_addr))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
}

/// Resident memory of process `pid` in bytes (VmRSS).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// What one sustained-overload run measured.
struct Overloaded {
    /// The first item id of every acknowledged export.
    acked: Vec<u64>,
    /// gRPC refusals made before the message was decoded: by the admission check before
    /// it is read (the head is full), or by the decoding budget once it is read.
    grpc_refused_undecoded: u32,
}

/// A load above capacity for a bounded time against a server with a 256 MiB budget:
/// eight OTLP/HTTP senders post `body(first_id)` to `path` (and `grpc_senders` OTLP/gRPC
/// senders post big span exports) as fast as they are accepted for 10 s, while the
/// process's resident memory is sampled from /proc and `/healthz` is polled. Checks the
/// refusals carry Retry-After, every health check answered and RSS stayed under budget.
async fn sustained_overload(
    server: &Server,
    path: &str,
    body: fn(u64) -> Vec<u8>,
    grpc_senders: u64,
) -> Overloaded {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    const BUDGET: u64 = 256 << 20;
    let pid = server.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let health = {
        let (stop, url) = (Arc::clone(&stop), format!("{}/healthz", server.api()));
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut ok, mut failed) = (0u32, 0u32);
            while !stop.load(Ordering::Relaxed) {
                let answered = client
                    .get(&url)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await;
                match answered {
                    Ok(r) if r.status() == 200 => ok += 1,
                    _ => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (ok, failed)
        })
    };
    let mut senders = Vec::new();
    for sender in 0..8u64 {
        let (stop, url) = (Arc::clone(&stop), format!("{}{path}", server.otlp_http()));
        senders.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut acked, mut refused) = (Vec::new(), 0u32);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let first = (sender << 40) + n * 1000;
                n += 1;
                let r = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(body(first))
                    .send()
                    .await
                    .expect("the server answers");
                match r.status().as_u16() {
                    200 => acked.push(first),
                    429 | 503 => {
                        assert!(r.headers().contains_key("retry-after"));
                        refused += 1;
                        // Keep the pressure on: retry sooner than asked.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => panic!("unexpected status {other}"),
                }
            }
            (acked, refused)
        }));
    }
    // OTLP/gRPC exporters: refused with UNAVAILABLE before their message is decoded.
    let undecoded = Arc::new(AtomicU64::new(0));
    for sender in 8..8 + grpc_senders {
        let (stop, url, undecoded) = (Arc::clone(&stop), server.grpc(), Arc::clone(&undecoded));
        senders.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(url)
                .await
                .expect("connect")
                .max_encoding_message_size(64 << 20);
            let (mut acked, mut refused) = (Vec::new(), 0u32);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let first = (sender << 40) + n * 1000;
                n += 1;
                match client.export(big_export(first)).await {
                    Ok(_) => acked.push(first),
                    Err(status) => {
                        assert_eq!(status.code(), tonic::Code::Unavailable, "{status}");
                        assert!(!status.details().is_empty(), "no RetryInfo: {status}");
                        refused += 1;
                        if status.message().contains("retry after the next flush")
                            || status.message().contains("decoded at once")
                        {
                            undecoded.fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (acked, refused)
        }));
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut acked, mut refused) = (Vec::new(), 0);
    for s in senders {
        let (a, r) = s.await.expect("sender");
        acked.extend(a);
        refused += r;
    }
    let (health_ok, health_failed) = health.await.expect("health");
    sampler.await.expect("sampler");
    let peak_rss = peak.load(Ordering::Relaxed);
    eprintln!(
        "overload {path}: {} exports acknowledged, {refused} refused, peak RSS {} MiB, health {health_ok} ok / {health_failed} failed",
        acked.len(),
        peak_rss >> 20
    );
    assert!(refused > 0, "the load was not above capacity");
    assert!(
        health_ok > 20 && health_failed == 0,
        "{health_ok} / {health_failed}"
    );
    assert!(
        peak_rss < BUDGET,
        "peak RSS {} MiB over the 256 MiB budget",
        peak_rss >> 20
    );
    Overloaded {
        acked,
        grpc_refused_undecoded: undecoded.load(Ordering::Relaxed) as u32,
    }
}

/// Spans over OTLP/HTTP and OTLP/gRPC: RSS under the budget, every acknowledged export
/// stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_sustained_overload_resident_memory_stays_under_the_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &["--memory-limit", "256MiB"]);
    let run = sustained_overload(
        &server,
        "/v1/traces",
        |first| big_export(first).encode_to_vec(),
        2,
    )
    .await;
    assert!(
        run.grpc_refused_undecoded > 0,
        "gRPC exports were never refused before being decoded"
    );
    server
        .assert_spans_exactly_once(run.acked.len() as i64 * 400)
        .await;
}

/// 400 log records of about 4 KiB of words each, with ids from `first` in their bodies.
fn big_log_export(first: u64) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    const WORDS: [&str; 8] = [
        "checkout", "payment", "declined", "timeout", "retry", "cart", "user", "order",
    ];
    let records = (first..first + 400)
        .map(|id| {
            let mut body = format!("id{id} ");
            let mut i = id as usize;
            while body.len() < 4096 {
                body.push_str(WORDS[i % WORDS.len()]);
                body.push_str(&format!("{} ", i % 997));
                i = i.wrapping_mul(31).wrapping_add(7);
            }
            LogRecord {
                time_unix_nano: 1_764_000_000_000_000_000 + id,
                severity_number: 9,
                body: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(body)),
                }),
                ..Default::default()
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: otlp::resource("overload"),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Logs, which are also indexed for search as they arrive: the index writers stay inside
/// the budget too, and every acknowledged record is stored and searchable once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_under_sustained_overload_stay_under_the_budget_and_searchable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &["--memory-limit", "256MiB"]);
    let run = sustained_overload(&server, "/v1/logs", big_log_export, 0).await;
    let expected = run.acked.len() as i64 * 400;
    assert_eq!(server.scalar("SELECT count(*) FROM logs").await, expected);
    // Each body starts with its record's unique `id…` word: counting those keeps the
    // check inside the query memory budget (the bodies themselves are 4 KiB each).
    assert_eq!(
        server
            .scalar("SELECT count(DISTINCT split_part(body, ' ', 1)) FROM logs")
            .await,
        expected,
        "a record is there twice"
    );
    // The first record of the first acknowledged export, found by a word of its body
    // once the index has caught up (indexing runs behind acknowledgement).
    let first = run.acked[0];
    let url = format!("{}/api/v1/logs", server.api());
    crate::support::eventually("the first record to be searchable", 30, || {
        let url = url.clone();
        async move {
            let found: serde_json::Value = reqwest::Client::new()
                .get(url)
                .query(&[
                    ("query", format!("id{first}").as_str()),
                    ("start", "2025-11-24T00:00:00Z"),
                    ("end", "2025-11-26T00:00:00Z"),
                ])
                .send()
                .await
                .expect("search")
                .json()
                .await
                .expect("JSON");
            assert!(found["total"].as_u64().unwrap_or(0) <= 1, "{found}");
            (found["total"] == 1).then_some(())
        }
    })
    .await;
}
