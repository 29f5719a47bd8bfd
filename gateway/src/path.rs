//! The request-path check before the route match: routes compare path prefixes, so a path
//! an upstream would read differently from the gateway (`/public/../admin`,
//! `/public/%2e%2e/admin`, `/public%2fadmin`, `/public\admin`) could reach what no route
//! exposes. Such paths are refused with 400 rather than normalized, as a client that
//! sends them is not a browser following a link.

/// Why a path is refused; the text goes to the client.
pub fn refusal(path: &str) -> Option<&'static str> {
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2e") || lower.contains("%2f") || lower.contains("%5c") {
        return Some("the path holds a percent-encoded dot, slash or backslash");
    }
    if path.contains('\\') {
        return Some("the path holds a backslash");
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return Some("the path holds a `.` or `..` segment");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_and_encoded_separators_are_refused() {
        for bad in [
            "/public/../admin",
            "/public/./admin",
            "/..",
            "/public/..",
            "/public/%2e%2e/admin",
            "/public/%2E./admin",
            "/public/.%2e/admin",
            "/public%2fadmin",
            "/public%2F..%2Fadmin",
            "/public/%5c../admin",
            "/public\\..\\admin",
        ] {
            assert!(refusal(bad).is_some(), "{bad}");
        }
        for good in [
            "/",
            "/public/a.b",
            "/public/..a",
            "/public/.well-known/x",
            "/a%20b",
        ] {
            assert!(refusal(good).is_none(), "{good}");
        }
    }
}
