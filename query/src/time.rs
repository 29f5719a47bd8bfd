//! Time and duration parameters of the `/api/v1` endpoints, as docs/traces.md and
//! docs/logs.md describe them:
//! RFC 3339, Unix seconds (fractional allowed), and `now` with an optional offset
//! (`now-15m`, `now+1h`); durations like `120ms`, `1.5s`, `5m`, `1h30m`.

use chrono::DateTime;

/// Parses a duration into nanoseconds: one or more `<number><unit>` parts, the number
/// possibly fractional, units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, `d`, `w`.
/// (humantime reads no fractions, and `1.5s` is how Jaeger and Tempo users write them.)
///
/// # Errors
/// A message saying what is wrong with the text.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!(
                "invalid duration {text:?}: expected a number, as in 120ms or 1.5s"
            ));
        }
        let number: f64 = rest[..num_len].parse().map_err(|_| {
            format!(
                "invalid duration {text:?}: bad number {:?}",
                &rest[..num_len]
            )
        })?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86_400e9,
            "w" => 604_800e9,
            "" => {
                return Err(format!(
                    "invalid duration {text:?}: missing unit (ns, us, ms, s, m, h, d, w)"
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration {text:?}: unknown unit {other:?} (ns, us, ms, s, m, h, d, w)"
                ));
            }
        };
        total += number * nanos_per;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > i64::MAX as f64 {
        return Err(format!("duration {text:?} is too long"));
    }
    Ok(total.round() as i64)
}

/// The `start`/`end` parameters of an `/api/v1` endpoint as inclusive Unix-nanosecond
/// bounds: `end` defaults to `now`, `start` to `default_span` before `end`; empty values
/// count as missing.
///
/// # Errors
/// A message naming the bad parameter, or saying that `start` is after `end`.
pub fn parse_range(
    start: Option<&str>,
    end: Option<&str>,
    now: i64,
    default_span: i64,
) -> Result<(i64, i64), String> {
    let end = match end.filter(|t| !t.is_empty()) {
        None => now,
        Some(t) => parse_time(t, now).map_err(|e| format!("end: {e}"))?,
    };
    let start = match start.filter(|t| !t.is_empty()) {
        None => end.saturating_sub(default_span),
        Some(t) => parse_time(t, now).map_err(|e| format!("start: {e}"))?,
    };
    if start > end {
        return Err("start is after end".into());
    }
    Ok((start, end))
}

/// Parses a point in time into Unix nanoseconds, relative to `now` (Unix ns).
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse_time(text: &str, now: i64) -> Result<i64, String> {
    let s = text.trim();
    if let Some(rest) = s.strip_prefix("now") {
        let rest = rest.trim();
        if rest.is_empty() {
            return Ok(now);
        }
        let (sign, dur) = if let Some(d) = rest.strip_prefix('-') {
            (-1, d)
        } else if let Some(d) = rest.strip_prefix('+') {
            (1, d)
        } else {
            return Err(format!(
                "invalid time {text:?}: after `now` write -15m or +1h"
            ));
        };
        let nanos = parse_duration(dur).map_err(|e| format!("invalid time {text:?}: {e}"))?;
        return Ok(now.saturating_add(sign * nanos));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return t
            .timestamp_nanos_opt()
            .ok_or_else(|| format!("time {text:?} is out of range"));
    }
    if let Ok(secs) = s.parse::<f64>()
        && secs.is_finite()
        && secs.abs() < 9.2e9
    {
        return Ok((secs * 1e9).round() as i64);
    }
    Err(format!(
        "invalid time {text:?}: use RFC 3339 (2026-11-25T10:00:00Z), Unix seconds (1764064800.5) or now-15m"
    ))
}

/// The current time in Unix nanoseconds.
pub fn now_nanos() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("120ms"), Ok(120_000_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000_000_000));
        assert!(parse_duration("5").unwrap_err().contains("missing unit"));
        assert!(parse_duration("5y").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn times() {
        let now = 1_764_064_800_000_000_000;
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("now-15m", now), Ok(now - 900_000_000_000));
        assert_eq!(parse_time("now+1h", now), Ok(now + 3_600_000_000_000));
        assert_eq!(
            parse_time("2025-11-25T10:00:00Z", now),
            Ok(1_764_064_800_000_000_000)
        );
        assert_eq!(
            parse_time("1764064800.5", now),
            Ok(1_764_064_800_500_000_000)
        );
        assert!(
            parse_time("yesterday", now)
                .unwrap_err()
                .contains("RFC 3339")
        );
        assert!(parse_time("now*2", now).is_err());
    }
}
