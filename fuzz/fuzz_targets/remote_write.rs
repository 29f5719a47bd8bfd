//! Prometheus remote-write bodies: snappy, protobuf, labels, conversion.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = periscope_collector::fuzz::remote_write_body(data);
});
