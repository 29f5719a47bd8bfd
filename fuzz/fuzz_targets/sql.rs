//! SQL: plan a statement read-only.
#![no_main]
mod engine;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let env = engine::env();
        let _ = env.rt.block_on(env.engine.check(text));
    }
});
