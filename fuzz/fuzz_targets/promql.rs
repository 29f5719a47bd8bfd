//! PromQL: parse and evaluate at one instant.
#![no_main]
mod engine;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let env = engine::env();
        let _ = env.rt.block_on(periscope_query::promql::instant_samples(
            &env.engine,
            text,
            1_700_000_000_000,
        ));
    }
});
