//! The Prometheus rules for label and metric names, shared by everything that checks
//! them: remote write (collector), PromQL's `label_replace`, `label_join`,
//! `count_values` and label-value API (query), and rule files and matchers (alerting).
//! They live here, in the lowest crate all three depend on, so the rule is written once.

/// Whether `name` is a valid label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `name` is a valid metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_are_letters_digits_and_underscores_not_starting_with_a_digit() {
        for ok in ["a", "_", "job", "__name__", "http_status_2xx", "A9"] {
            assert!(is_label_name(ok), "{ok}");
        }
        for bad in ["", "9a", "a-b", "a:b", "a.b", "é", "a b"] {
            assert!(!is_label_name(bad), "{bad}");
        }
    }

    #[test]
    fn metric_names_may_also_hold_colons() {
        for ok in ["up", ":", "job:rate5m:sum", "_x", "a9"] {
            assert!(is_metric_name(ok), "{ok}");
        }
        for bad in ["", "9a", "a-b", "a.b", "é"] {
            assert!(!is_metric_name(bad), "{bad}");
        }
    }
}
