//! `periscope-bench ui`: server render time of the heaviest UI pages with realistic data:
//! a trace of 10,000 spans, a service map of 200 services, a log search with 1,000 hits.
//! Prints the median wall time, the server's CPU per request and the HTML size.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use clap::Args;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

use crate::harness::{cpu_seconds, kv, median, post_export, spawn_server_at, stop};

/// Arguments of `periscope-bench ui`.
#[derive(Debug, Args)]
pub struct UiArgs {
    /// Spans of the big trace.
    #[arg(long, default_value_t = 10_000)]
    pub trace_spans: usize,
    /// Services on the map.
    #[arg(long, default_value_t = 200)]
    pub services: usize,
    /// Log lines that match the search (among five times as many lines).
    #[arg(long, default_value_t = 1_000)]
    pub log_hits: usize,
    /// Times each page is rendered (the median is reported).
    #[arg(long, default_value_t = 11)]
    pub repeat: usize,
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![
            kv("service.name", service),
            kv("service.instance.id", &format!("{service}-1")),
        ],
        ..Default::default()
    })
}

fn traces(groups: Vec<(String, Vec<Span>)>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: resource(&service),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
    .encode_to_vec()
}

fn span_id(n: u64) -> Vec<u8> {
    (n + 1).to_be_bytes().to_vec()
}

/// One trace of `n` spans: a 4-ary tree over 20 services; every child inside its parent.
fn big_trace(n: usize, base: u64) -> ([u8; 16], Vec<Vec<u8>>) {
    let trace_id = [0x7e; 16];
    let mut by_service: Vec<(String, Vec<Span>)> = (0..20)
        .map(|s| (format!("svc-{s:02}"), Vec::new()))
        .collect();
    for i in 0..n as u64 {
        let depth = (64 - (3 * i + 1).leading_zeros()) as u64 / 2;
        let start = base + i * 1_000;
        let end = base + 2_000_000_000 - depth * 10_000_000;
        let span = Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id(i),
            parent_span_id: if i == 0 {
                Vec::new()
            } else {
                span_id((i - 1) / 4)
            },
            name: format!("op-{}", i % 50),
            kind: if i % 2 == 0 { 2 } else { 3 },
            start_time_unix_nano: start,
            end_time_unix_nano: end.max(start + 1_000),
            attributes: vec![kv("http.route", &format!("/r/{}", i % 30))],
            ..Default::default()
        };
        by_service[(i % 20) as usize].1.push(span);
    }
    let body = by_service.chunks(5).map(|c| traces(c.to_vec())).collect();
    (trace_id, body)
}

/// Ten calls along each edge of a tree of `services` services (each calls its children).
fn map_traces(services: usize, base: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut groups: Vec<(String, Vec<Span>)> = Vec::new();
    let mut n = 0u64;
    for child in 1..services {
        let parent = (child - 1) / 3;
        for call in 0..10u64 {
            n += 1;
            let trace_id: Vec<u8> = [n.to_be_bytes(), (child as u64).to_be_bytes()].concat();
            let start = base + call * 1_000_000;
            let client = Span {
                trace_id: trace_id.clone(),
                span_id: span_id(1),
                name: format!("call svc-map-{child:03}"),
                kind: 3,
                start_time_unix_nano: start,
                end_time_unix_nano: start + 5_000_000,
                ..Default::default()
            };
            let server = Span {
                trace_id,
                span_id: span_id(2),
                parent_span_id: span_id(1),
                name: "GET /work".into(),
                kind: 2,
                start_time_unix_nano: start + 100_000,
                end_time_unix_nano: start + 4_900_000,
                ..Default::default()
            };
            groups.push((format!("svc-map-{parent:03}"), vec![client]));
            groups.push((format!("svc-map-{child:03}"), vec![server]));
        }
        if groups.len() >= 400 {
            out.push(traces(std::mem::take(&mut groups)));
        }
    }
    if !groups.is_empty() {
        out.push(traces(groups));
    }
    out
}

fn logs(hits: usize, base: u64) -> Vec<Vec<u8>> {
    let records: Vec<LogRecord> = (0..hits * 5)
        .map(|i| LogRecord {
            time_unix_nano: base + i as u64 * 1_000_000,
            severity_number: if i % 5 == 0 { 17 } else { 9 },
            severity_text: if i % 5 == 0 { "ERROR" } else { "INFO" }.into(),
            body: Some(AnyValue {
                value: Some(Value::StringValue(if i % 5 == 0 {
                    format!("payment needle timeout after {i} ms for order {i}")
                } else {
                    format!("request {i} served in {} ms", i % 97)
                })),
            }),
            attributes: vec![kv("http.route", "/checkout")],
            trace_id: vec![0x11; 16],
            span_id: vec![0x22; 8],
            ..Default::default()
        })
        .collect();
    records
        .chunks(2000)
        .map(|c| {
            ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource: resource("checkout"),
                    scope_logs: vec![ScopeLogs {
                        log_records: c.to_vec(),
                        ..Default::default()
                    }],
                    schema_url: String::new(),
                }],
            }
            .encode_to_vec()
        })
        .collect()
}

/// Runs `periscope-bench ui`.
pub async fn run(args: UiArgs) -> anyhow::Result<()> {
    if args.repeat == 0 || args.trace_spans == 0 || args.services < 2 {
        bail!("--repeat and --trace-spans must be positive, --services at least 2");
    }
    let dir = tempfile::tempdir()?;
    let mut server = spawn_server_at(&dir.path().join("data"))?;
    let client = reqwest::Client::new();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    let base = now - 120_000_000_000;
    let (trace_id, trace_bodies) = big_trace(args.trace_spans, base);
    let http = format!("http://{}", server.otlp_http);
    for body in trace_bodies
        .into_iter()
        .chain(map_traces(args.services, base))
    {
        post_export(&client, &format!("{http}/v1/traces"), body).await?;
    }
    for body in logs(args.log_hits, base) {
        post_export(&client, &format!("{http}/v1/logs"), body).await?;
    }
    let api = format!("http://{}", server.http);
    let pages = [
        (
            "trace view",
            format!("{api}/ui/traces/{}", hex::encode(trace_id)),
        ),
        ("service map", format!("{api}/ui/map?range=1h")),
        ("log search", format!("{api}/ui/logs?q=needle&range=1h")),
        ("overview", format!("{api}/ui/?range=1h")),
    ];
    let pid = server.child.id();
    println!(
        "periscope-bench ui --trace-spans {} --services {} --log-hits {} --repeat {}",
        args.trace_spans, args.services, args.log_hits, args.repeat
    );
    println!(
        "{:<14} {:>12} {:>14} {:>12}  check",
        "page", "median ms", "server CPU ms", "HTML KiB"
    );
    for (name, url) in &pages {
        let mut ms = Vec::new();
        let cpu0 = cpu_seconds(pid)?;
        let mut size = 0;
        let mut check = String::new();
        for _ in 0..args.repeat {
            let t = Instant::now();
            let r = client.get(url).send().await?;
            let status = r.status();
            let body = r.text().await?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            if !status.is_success() {
                bail!("{url}: HTTP {status}");
            }
            size = body.len();
            check = match *name {
                "trace view" => format!("{} span rows", body.matches("class=\"span-row").count()),
                "service map" => format!("{} nodes", body.matches("class=\"node").count()),
                "log search" => body
                    .split("id=\"log-total\">")
                    .nth(1)
                    .and_then(|t| t.split('<').next())
                    .unwrap_or("")
                    .to_string(),
                _ => format!("{} cards", body.matches("class=\"card").count()),
            };
        }
        let cpu = (cpu_seconds(pid)? - cpu0) * 1e3 / args.repeat as f64;
        println!(
            "{name:<14} {:>12.1} {cpu:>14.1} {:>12.0}  {check}",
            median(ms),
            size as f64 / 1024.0
        );
    }
    stop(&mut server).await?;
    Ok(())
}
