//! The in-place path gives exactly the rows (and rejections) of the decoded path, and
//! refuses exactly the bytes prost refuses.

use super::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList, any_value::Value as V};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// xorshift64*: deterministic test data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn value(r: &mut Rng, depth: u32) -> Option<AnyValue> {
    let v = match r.below(if depth > 1 { 5 } else { 9 }) {
        0 => return None,
        1 => V::StringValue(format!("v{}", r.below(50))),
        2 => V::BoolValue(r.below(2) == 1),
        3 => V::IntValue(r.next() as i64 >> r.below(60)),
        4 => V::DoubleValue(f64::from_bits(r.next()) / 7.0),
        5 => {
            let n = r.below(5) as usize;
            V::BytesValue(r.bytes(n))
        }
        6 => V::ArrayValue(ArrayValue {
            values: (0..r.below(3))
                .filter_map(|_| value(r, depth + 1))
                .collect(),
        }),
        7 => V::KvlistValue(KeyValueList {
            values: (0..r.below(3)).map(|_| kv(r, depth + 1)).collect(),
        }),
        _ => V::StringValueStrindex(r.below(9) as i32),
    };
    Some(AnyValue { value: Some(v) })
}

fn kv(r: &mut Rng, depth: u32) -> KeyValue {
    KeyValue {
        key: format!("k{}", r.below(20)),
        value: if r.below(10) == 0 {
            Some(AnyValue { value: None })
        } else {
            value(r, depth)
        },
        key_strindex: 0,
    }
}

fn id(r: &mut Rng, n: usize) -> Vec<u8> {
    match r.below(30) {
        0 => Vec::new(),
        1 => vec![0; n],
        2 => r.bytes(n - 1),
        _ => r.bytes(n),
    }
}

fn span(r: &mut Rng) -> Span {
    let start = match r.below(40) {
        0 => 0,
        1 => u64::MAX,
        _ => 1_700_000_000_000_000_000 + r.below(1 << 40),
    };
    Span {
        trace_id: id(r, 16),
        span_id: id(r, 8),
        parent_span_id: if r.below(3) == 0 {
            Vec::new()
        } else {
            id(r, 8)
        },
        trace_state: if r.below(4) == 0 {
            "a=b".into()
        } else {
            String::new()
        },
        name: format!("op {}", r.below(10)),
        kind: r.below(7) as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start.saturating_add(r.below(1 << 30)),
        attributes: (0..r.below(8)).map(|_| kv(r, 0)).collect(),
        dropped_attributes_count: r.below(2) as u32,
        events: (0..r.below(3))
            .map(|_| span::Event {
                time_unix_nano: if r.below(20) == 0 {
                    u64::MAX
                } else {
                    start.saturating_add(5)
                },
                name: "ev".into(),
                attributes: (0..r.below(3)).map(|_| kv(r, 0)).collect(),
                dropped_attributes_count: 0,
            })
            .collect(),
        links: (0..r.below(2))
            .map(|_| span::Link {
                trace_id: id(r, 16),
                span_id: id(r, 8),
                trace_state: String::new(),
                attributes: (0..r.below(2)).map(|_| kv(r, 0)).collect(),
                dropped_attributes_count: 0,
                flags: 1,
            })
            .collect(),
        status: match r.below(4) {
            0 => None,
            n => Some(Status {
                message: if n == 3 { "boom".into() } else { String::new() },
                code: (n - 1) as i32,
            }),
        },
        flags: r.below(512) as u32,
        ..Default::default()
    }
}

use opentelemetry_proto::tonic::trace::v1::span;

fn request(r: &mut Rng) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: (0..1 + r.below(3))
            .map(|_| ResourceSpans {
                resource: (r.below(5) > 0).then(|| {
                    let mut attributes: Vec<KeyValue> = (0..r.below(4)).map(|_| kv(r, 0)).collect();
                    if r.below(3) > 0 {
                        attributes.push(KeyValue {
                            key: "service.name".into(),
                            value: value(r, 0),
                            key_strindex: 0,
                        });
                    }
                    Resource {
                        attributes,
                        ..Default::default()
                    }
                }),
                scope_spans: (0..1 + r.below(3))
                    .map(|_| ScopeSpans {
                        scope: (r.below(3) > 0).then(|| InstrumentationScope {
                            name: format!("lib{}", r.below(3)),
                            version: if r.below(2) == 0 {
                                "1.0".into()
                            } else {
                                String::new()
                            },
                            ..Default::default()
                        }),
                        spans: (0..r.below(6)).map(|_| span(r)).collect(),
                        schema_url: String::new(),
                    })
                    .collect(),
                schema_url: "https://opentelemetry.io/schemas/1.21.0".into(),
            })
            .collect(),
    }
}

fn same(bytes: &[u8]) {
    let decoded = ExportTraceServiceRequest::decode(bytes);
    let wire = spans_from_protobuf(bytes);
    match (decoded, wire) {
        (Ok(req), Ok(wire)) => {
            let want = crate::spans(&req).unwrap();
            let got = wire.unwrap();
            assert_eq!((got.accepted, got.rejected), (want.accepted, want.rejected));
            assert_eq!(got.error, want.error);
            assert_eq!(got.batch, want.batch);
        }
        (Err(_), Err(_)) => {}
        (d, w) => panic!(
            "prost and the in-place path disagree: prost {:?}, in place {:?}",
            d.err(),
            w.err()
        ),
    }
}

#[test]
fn random_requests_give_the_rows_of_the_decoded_path() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..300 {
        same(&request(&mut r).encode_to_vec());
    }
}

#[test]
fn damaged_requests_are_refused_as_prost_refuses_them() {
    let mut r = Rng(42);
    for _ in 0..100 {
        let bytes = request(&mut r).encode_to_vec();
        if bytes.is_empty() {
            continue;
        }
        let cut = r.below(bytes.len() as u64) as usize;
        same(&bytes[..cut]);
        let mut flipped = bytes.clone();
        let at = r.below(bytes.len() as u64) as usize;
        flipped[at] ^= 1 << r.below(8);
        same(&flipped);
    }
}

#[test]
fn a_resource_after_its_spans_still_names_the_service() {
    let mut r = Rng(7);
    let req = request(&mut r);
    // Encode each ResourceSpans with its fields in reverse order.
    let mut bytes = Vec::new();
    for rs in &req.resource_spans {
        let mut body = Vec::new();
        for ss in &rs.scope_spans {
            prost::encoding::message::encode(2, ss, &mut body);
        }
        if let Some(res) = &rs.resource {
            prost::encoding::message::encode(1, res, &mut body);
        }
        prost::encoding::bytes::encode(1, &body, &mut bytes);
    }
    let got = spans_from_protobuf(&bytes).unwrap().unwrap();
    let want = crate::spans(&req).unwrap();
    assert_eq!(got.batch, want.batch);
}

#[test]
fn invalid_utf8_in_a_name_refuses_the_request() {
    let mut s = Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "ab".into(),
        ..Default::default()
    };
    let mut bytes = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![std::mem::take(&mut s)],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let at = bytes.windows(2).position(|w| w == b"ab").unwrap();
    bytes[at] = 0xff;
    let err = spans_from_protobuf(&bytes).unwrap_err();
    assert!(err.0.contains("UTF-8"), "{err}");
}
