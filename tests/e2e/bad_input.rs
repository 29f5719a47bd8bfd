//! Bad input gets the documented answer, the server keeps serving and stored rows stay.

use std::io::Write;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use serde_json::Value;

use crate::support::{Server, otlp};

/// `google.rpc.Status`, as the error bodies carry it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn post(
    server: &Server,
    path: &str,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut r = reqwest::Client::new()
        .post(format!("{}{path}", server.otlp_http()))
        .header("content-type", content_type)
        .body(body);
    if let Some(e) = encoding {
        r = r.header("content-encoding", e);
    }
    r.send().await.expect("request")
}

async fn proto_error(r: reqwest::Response, status: u16) -> String {
    assert_eq!(r.status().as_u16(), status);
    assert_eq!(r.headers()["content-type"], "application/x-protobuf");
    let bytes = r.bytes().await.unwrap();
    let s = RpcStatus::decode(&bytes[..]).expect("error body is a google.rpc.Status");
    assert!(!s.message.is_empty());
    s.message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_answers_and_harm_nothing_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let good = otlp::traces(
        "cart",
        vec![otlp::span(vec![1; 16], vec![1; 8], "stored-before")],
    );
    let r = post(
        &server,
        "/v1/traces",
        "application/x-protobuf",
        None,
        good.encode_to_vec(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let ok = ExportTraceServiceResponse::decode(&r.bytes().await.unwrap()[..]).unwrap();
    assert!(
        ok.partial_success.is_none(),
        "full success has no partial_success"
    );

    // Garbage protobuf.
    let r = post(
        &server,
        "/v1/traces",
        "application/x-protobuf",
        None,
        vec![0xff, 0xff, 0xff, 0x01, 0x02],
    )
    .await;
    let m = proto_error(r, 400).await;
    assert!(m.contains("protobuf"), "{m}");

    // Invalid JSON: the error comes back as JSON.
    let r = post(
        &server,
        "/v1/logs",
        "application/json",
        None,
        b"{\"resourceLogs\": [".to_vec(),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    assert!(v["message"].as_str().unwrap().contains("JSON"), "{v}");

    // Truncated gzip.
    let zipped = gzip(&good.encode_to_vec());
    let r = post(
        &server,
        "/v1/traces",
        "application/x-protobuf",
        Some("gzip"),
        zipped[..zipped.len() / 2].to_vec(),
    )
    .await;
    let m = proto_error(r, 400).await;
    assert!(m.contains("gzip"), "{m}");

    // A gzip bomb: 64 MiB of zeros in about 64 KiB, cut off at the 16 MiB limit.
    let bomb = gzip(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 1 << 20);
    let r = post(
        &server,
        "/v1/traces",
        "application/x-protobuf",
        Some("gzip"),
        bomb,
    )
    .await;
    let m = proto_error(r, 413).await;
    assert!(m.contains("limit"), "{m}");

    // Wrong content type and unknown content encoding.
    let r = post(&server, "/v1/traces", "text/plain", None, b"hello".to_vec()).await;
    assert_eq!(r.status(), 415);
    let r = post(
        &server,
        "/v1/traces",
        "application/x-protobuf",
        Some("br"),
        good.encode_to_vec(),
    )
    .await;
    assert_eq!(r.status(), 415);

    // Oversized body.
    let r = post(
        &server,
        "/v1/metrics",
        "application/x-protobuf",
        None,
        vec![0u8; 17 << 20],
    )
    .await;
    proto_error(r, 413).await;

    // Invalid ids: a partial success that counts the rejected span; the valid one is kept.
    let mixed = otlp::traces(
        "cart",
        vec![
            otlp::span(vec![2; 15], vec![2; 8], "short-trace-id"),
            otlp::span(vec![3; 16], vec![], "no-span-id"),
            otlp::span(vec![4; 16], vec![4; 8], "valid"),
        ],
    );
    let r = post(
        &server,
        "/v1/traces",
        "application/x-protobuf",
        None,
        mixed.encode_to_vec(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let resp = ExportTraceServiceResponse::decode(&r.bytes().await.unwrap()[..]).unwrap();
    let partial = resp.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial.error_message.contains("trace_id must be 16 bytes"),
        "{}",
        partial.error_message
    );

    // The same over JSON: hex ids, and the answer in JSON.
    let json = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"cart"}}]},
      "scopeSpans":[{"spans":[{"traceId":"0505050505050505050505050505050","spanId":"0505050505050505","name":"odd-hex","kind":2,
      "startTimeUnixNano":"1764000000000000000","endTimeUnixNano":1764000000000000500}]}]}]}"#;
    let r = post(
        &server,
        "/v1/traces",
        "application/json",
        None,
        json.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(r.status(), 400, "an odd-length hex id does not decode");

    // The OTLP JSON mapping: hex ids, enums as numbers, 64-bit integers as strings or
    // numbers, gzip on top.
    let json = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"cart"}}]},
      "scopeSpans":[{"scope":{"name":"json-scope"},"spans":[{"traceId":"0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a","spanId":"0b0b0b0b0b0b0b0b",
      "parentSpanId":"0c0c0c0c0c0c0c0c","name":"json-span","kind":3,
      "startTimeUnixNano":"1764000000000000001","endTimeUnixNano":1764000000000000500,
      "attributes":[{"key":"as_string","value":{"intValue":"9007199254740993"}},{"key":"as_number","value":{"intValue":7}},
                    {"key":"d","value":{"doubleValue":0.25}},{"key":"b","value":{"bytesValue":"AQID"}}],
      "status":{"code":2,"message":"bad"}}]}]}]}"#;
    let r = post(
        &server,
        "/v1/traces",
        "application/json",
        Some("gzip"),
        gzip(json.as_bytes()),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let rows = server
        .rows("SELECT trace_id, parent_span_id, kind, duration_ns, attributes, status_code, status_message, scope_name \
               FROM spans WHERE name = 'json-span'")
        .await;
    assert_eq!(
        serde_json::Value::Array(rows[0].clone()),
        serde_json::json!(["0a".repeat(16), "0c".repeat(8), "client", 499,
            {"as_string": "9007199254740993", "as_number": "7", "d": "0.25", "b": "AQID"}, "error", "bad", "json-scope"])
    );

    // An empty export is a full success.
    let r = post(
        &server,
        "/v1/traces",
        "application/json",
        None,
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v.get("partialSuccess").is_none(), "{v}");

    // gRPC, gzip-compressed, with an invalid id: partial success there too.
    let mut client = TraceServiceClient::connect(server.grpc())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let req = otlp::traces(
        "cart",
        vec![
            otlp::span(vec![0; 16], vec![5; 8], "zero-trace-id"),
            otlp::span(vec![6; 16], vec![6; 8], "grpc-valid"),
        ],
    );
    let resp = client.export(req).await.expect("gRPC export").into_inner();
    assert_eq!(resp.partial_success.expect("partial").rejected_spans, 1);

    // A gRPC decompression bomb: 20 MiB of repeated text, a few KiB compressed, stopped
    // at the 16 MiB limit.
    let mut bomb = otlp::span(vec![7; 16], vec![7; 8], "grpc-bomb");
    bomb.attributes
        .push(otlp::kv("padding", &"x".repeat(20 << 20)));
    let status = client
        .export(otlp::traces("cart", vec![bomb]))
        .await
        .expect_err("over the limit after decompression");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");

    // The server still serves, and exactly the valid spans are stored.
    let names = server.rows("SELECT name FROM spans ORDER BY name").await;
    let names: Vec<&str> = names.iter().map(|r| r[0].as_str().unwrap()).collect();
    assert_eq!(names, ["grpc-valid", "json-span", "stored-before", "valid"]);
    let health = reqwest::get(format!("{}/healthz", server.api()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}
