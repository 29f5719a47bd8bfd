//! Alertmanager-style label matchers for routes: `name="value"`, `name!="value"`,
//! `name=~"regex"`, `name!~"regex"` (regexes are anchored, as in Alertmanager).

use std::collections::BTreeMap;

use regex::Regex;

/// How a matcher compares.
#[derive(Debug, Clone)]
enum Op {
    Eq(String),
    Ne(String),
    Re(Regex),
    NotRe(Regex),
}

/// One matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    name: String,
    op: Op,
}

impl Matcher {
    /// Parses `name OP "value"` (the value may be unquoted).
    ///
    /// # Errors
    /// A message saying what shape was expected, or the regex error.
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let bad = || format!("{text:?} is not a matcher like severity=\"page\" or team=~\"pay.*\"");
        let pos = text.find(['=', '!']).ok_or_else(bad)?;
        let name = text[..pos].trim();
        if !periscope_storage::names::is_label_name(name) {
            return Err(bad());
        }
        let rest = &text[pos..];
        let (sym, value) = ["=~", "!~", "!=", "="]
            .iter()
            .find_map(|s| rest.strip_prefix(s).map(|v| (*s, v.trim())))
            .ok_or_else(bad)?;
        let value = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            Some(quoted) => quoted.replace("\\\"", "\"").replace("\\\\", "\\"),
            None => value.to_string(),
        };
        let regex = |v: &str| {
            Regex::new(&format!("^(?:{v})$")).map_err(|e| format!("{text:?}: invalid regex: {e}"))
        };
        let op = match sym {
            "=" => Op::Eq(value),
            "!=" => Op::Ne(value),
            "=~" => Op::Re(regex(&value)?),
            _ => Op::NotRe(regex(&value)?),
        };
        Ok(Matcher {
            name: name.to_string(),
            op,
        })
    }

    /// Whether `labels` satisfy the matcher (a missing label is the empty string).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.name).map_or("", String::as_str);
        match &self.op {
            Op::Eq(x) => v == x,
            Op::Ne(x) => v != x,
            Op::Re(r) => r.is_match(v),
            Op::NotRe(r) => !r.is_match(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_follow_alertmanager() {
        let labels: BTreeMap<String, String> = [
            ("severity".to_string(), "page".to_string()),
            ("team".to_string(), "payments".to_string()),
        ]
        .into();
        assert!(
            Matcher::parse("severity=\"page\"")
                .unwrap()
                .matches(&labels)
        );
        assert!(Matcher::parse("severity = page").unwrap().matches(&labels));
        assert!(
            !Matcher::parse("severity!=\"page\"")
                .unwrap()
                .matches(&labels)
        );
        assert!(Matcher::parse("team=~\"pay.*\"").unwrap().matches(&labels));
        assert!(
            !Matcher::parse("team=~\"pay\"").unwrap().matches(&labels),
            "anchored"
        );
        assert!(Matcher::parse("env!~\"prod\"").unwrap().matches(&labels));
        assert!(Matcher::parse("no operator").is_err());
        assert!(Matcher::parse("x=~\"(\"").is_err());
    }
}
