//! Text helpers shared by the pages: times, durations, ranges.

/// Unix ns as `2026-11-30 14:05:01.123` (UTC).
pub fn time_ns(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns)
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

/// Now, Unix ns.
pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

/// The time-range presets of the range pickers: label, parameter, length in seconds.
pub const PRESETS: [(&str, &str, i64); 6] = [
    ("5m", "5m", 300),
    ("15m", "15m", 900),
    ("1h", "1h", 3600),
    ("6h", "6h", 21_600),
    ("24h", "24h", 86_400),
    ("7d", "7d", 604_800),
];

/// The window a `range` preset names, ending now: (start, end) in Unix ns; unknown
/// presets mean the last hour.
pub fn preset_window(range: Option<&str>) -> (i64, i64, &'static str) {
    let (_, name, secs) = PRESETS
        .iter()
        .find(|(_, p, _)| Some(*p) == range)
        .copied()
        .unwrap_or(PRESETS[2]);
    let end = now_ns();
    (end - secs * 1_000_000_000, end, name)
}

/// Percent-encodes `s` for a query string (spaces as `+`).
pub fn q(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn helpers() {
        assert_eq!(super::q("a b&c=é~"), "a+b%26c%3D%C3%A9%7E");
        assert_eq!(super::time_ns(1_500_000_000), "1970-01-01 00:00:01.500");
        let (start, end, name) = super::preset_window(Some("15m"));
        assert_eq!((end - start, name), (900_000_000_000, "15m"));
        assert_eq!(super::preset_window(Some("bogus")).2, "1h");
    }
}
