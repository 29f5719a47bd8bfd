//! Entry points for fuzzing and property tests: the whole decoding path of a request
//! body (gzip, protobuf or JSON, validation and conversion to rows) without storing
//! anything. Each returns `Err` with the message a client would get for bad input, and
//! must never panic, whatever the bytes. `fuzz/` (cargo fuzz) and the tests below call
//! them; `fuzz/corpus/*` and `fuzz/regressions/*` are replayed by the tests.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::export::Export;
use crate::http::{Encoding, decode, gunzip};

/// The largest body the entry points decompress to (the server's default limit).
const LIMIT: usize = 16 << 20;

/// Which OTLP export a body claims to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `ExportTraceServiceRequest`.
    Traces,
    /// `ExportLogsServiceRequest`.
    Logs,
    /// `ExportMetricsServiceRequest`.
    Metrics,
}

fn convert<E: Export>(bytes: &[u8], encoding: Encoding) -> Result<u64, String> {
    let request: E = decode(bytes, encoding).map_err(|r| r.message)?;
    let converted = request.convert(0).map_err(|e| e.to_string())?;
    Ok(converted.accepted)
}

/// An OTLP/HTTP body: optionally gzip, then protobuf or JSON, then validation and
/// conversion. Returns the rows it would store.
pub fn otlp_body(data: &[u8], signal: Signal, json: bool, gzip: bool) -> Result<u64, String> {
    let bytes = if gzip {
        gunzip(data, LIMIT).map_err(|r| r.message)?
    } else {
        data.to_vec()
    };
    let encoding = if json {
        Encoding::Json
    } else {
        Encoding::Protobuf
    };
    match signal {
        Signal::Traces => convert::<ExportTraceServiceRequest>(&bytes, encoding),
        Signal::Logs => convert::<ExportLogsServiceRequest>(&bytes, encoding),
        Signal::Metrics => convert::<ExportMetricsServiceRequest>(&bytes, encoding),
    }
}

/// A Prometheus remote-write body: snappy, protobuf, label checks, conversion to OTLP
/// metrics and to rows.
pub fn remote_write_body(data: &[u8]) -> Result<u64, String> {
    let request = crate::remote_write::decode(data, LIMIT).map_err(|r| r.message)?;
    let otlp = crate::remote_write::to_otlp(&request)?;
    let converted = otlp.convert(0).map_err(|e| e.to_string())?;
    Ok(converted.accepted)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::PathBuf;

    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use proptest::prelude::*;
    use prost::Message;

    use super::*;

    fn valid_traces() -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("cart".into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![1; 16],
                        span_id: vec![2; 8],
                        name: "GET /cart".into(),
                        kind: 2,
                        start_time_unix_nano: 1_700_000_000_000_000_000,
                        end_time_unix_nano: 1_700_000_000_100_000_000,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }

    /// Applies `(position, byte)` edits to a copy of `seed`.
    fn mutate(seed: &[u8], edits: &[(usize, u8)], cut: usize) -> Vec<u8> {
        let mut v = seed.to_vec();
        for (i, b) in edits {
            if !v.is_empty() {
                let at = i % v.len();
                v[at] = *b;
            }
        }
        v.truncate(cut.max(1).min(v.len()));
        v
    }

    #[test]
    fn valid_seed_decodes() {
        assert_eq!(
            otlp_body(&valid_traces(), Signal::Traces, false, false),
            Ok(1)
        );
        assert_eq!(
            otlp_body(&gzip(&valid_traces()), Signal::Traces, false, true),
            Ok(1)
        );
        assert!(otlp_body(b"\x1f\x8b garbage", Signal::Logs, false, true).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048), json in any::<bool>(), gzip_it in any::<bool>()) {
            for signal in [Signal::Traces, Signal::Logs, Signal::Metrics] {
                let _ = otlp_body(&data, signal, json, gzip_it);
            }
            let _ = remote_write_body(&data);
        }

        #[test]
        fn mutated_valid_exports_never_panic(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8), cut in any::<usize>()) {
            let seed = valid_traces();
            let body = mutate(&seed, &edits, cut % (seed.len() + 1));
            for signal in [Signal::Traces, Signal::Logs, Signal::Metrics] {
                let _ = otlp_body(&body, signal, false, false);
            }
            let _ = otlp_body(&gzip(&body), Signal::Traces, false, true);
            let compressed = snap::raw::Encoder::new().compress_vec(&body).expect("snappy");
            let _ = remote_write_body(&compressed);
        }

        #[test]
        fn json_like_text_never_panics(text in "[{}\\[\\]\":,0-9a-zA-Z .\\-]{0,400}") {
            for signal in [Signal::Traces, Signal::Logs, Signal::Metrics] {
                let _ = otlp_body(text.as_bytes(), signal, true, false);
            }
        }
    }

    /// Replays `fuzz/corpus/<target>` and `fuzz/regressions/<target>` (inputs cargo fuzz
    /// found or kept) through the matching entry point.
    #[test]
    fn fuzz_corpora_replay() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut replayed = 0;
        for kind in ["corpus", "regressions"] {
            for (target, run) in [
                (
                    "otlp_protobuf",
                    &(|d: &[u8]| {
                        for s in [Signal::Traces, Signal::Logs, Signal::Metrics] {
                            let _ = otlp_body(d, s, false, false);
                        }
                    }) as &dyn Fn(&[u8]),
                ),
                ("otlp_json", &|d: &[u8]| {
                    for s in [Signal::Traces, Signal::Logs, Signal::Metrics] {
                        let _ = otlp_body(d, s, true, false);
                    }
                }),
                ("otlp_gzip", &|d: &[u8]| {
                    let _ = otlp_body(d, Signal::Traces, false, true);
                }),
                ("remote_write", &|d: &[u8]| {
                    let _ = remote_write_body(d);
                }),
            ] {
                let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) else {
                    continue;
                };
                for e in entries.flatten() {
                    let data = std::fs::read(e.path()).expect("read corpus file");
                    run(&data);
                    replayed += 1;
                }
            }
        }
        assert!(replayed > 0, "no corpus under {}", root.display());
    }
}
