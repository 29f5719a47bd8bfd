//! OTLP protobuf bodies of every signal: decode, validate, convert to rows.
#![no_main]
use periscope_collector::fuzz::{Signal, otlp_body};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for signal in [Signal::Traces, Signal::Logs, Signal::Metrics] {
        let _ = otlp_body(data, signal, false, false);
    }
});
