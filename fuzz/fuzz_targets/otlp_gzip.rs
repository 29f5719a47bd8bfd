//! gzip-compressed OTLP bodies (decompression with the size limit, then decoding).
#![no_main]
use periscope_collector::fuzz::{Signal, otlp_body};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = otlp_body(data, Signal::Traces, false, true);
});
