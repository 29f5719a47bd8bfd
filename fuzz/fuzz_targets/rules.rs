//! Rule files (YAML, fields, expressions, templates).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = periscope_alerting::rules::parse_file(std::path::Path::new("fuzz.yml"), text);
    }
});
