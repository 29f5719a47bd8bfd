//! Prometheus templating for alert labels and annotations: Go's text/template (through
//! `gotmpl`) with the variables and functions Prometheus defines.
//!
//! As Prometheus, every template is prefixed with definitions of `$labels`,
//! `$externalLabels`, `$externalURL` and `$value`, and the data is an object with
//! `.Labels`, `.ExternalLabels`, `.ExternalURL` and `.Value`.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use gotmpl::{Template, TemplateError, Value};
use regex::Regex;

/// What Prometheus prepends to every alert template.
const DEFINITIONS: &str = "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}";

/// The data a template sees.
#[derive(Debug, Clone)]
pub struct TemplateData<'a> {
    /// The alert's labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Labels configured for the whole server.
    pub external_labels: &'a BTreeMap<String, String>,
    /// The server's external URL.
    pub external_url: &'a str,
    /// The alert's value.
    pub value: f64,
}

/// A parsed template.
#[derive(Clone)]
pub struct Compiled(Template);

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Compiled")
    }
}

/// Parses `text` as a Prometheus alert template.
///
/// # Errors
/// The template parser's message.
pub fn compile(name: &str, text: &str) -> Result<Compiled, String> {
    let mut template = Template::new(name);
    for (fname, f) in functions() {
        template = template.func(fname, f);
    }
    template
        .parse(&format!("{DEFINITIONS}{text}"))
        .map(Compiled)
        .map_err(|e| clean_error(&e))
}

impl Compiled {
    /// Expands the template.
    ///
    /// # Errors
    /// When a function fails or a value has the wrong type.
    pub fn expand(&self, data: &TemplateData<'_>) -> Result<String, String> {
        let map = |m: &BTreeMap<String, String>| {
            Value::Map(Arc::new(
                m.iter()
                    .map(|(k, v)| (Arc::from(k.as_str()), Value::String(Arc::from(v.as_str()))))
                    .collect(),
            ))
        };
        let mut root = BTreeMap::new();
        root.insert(Arc::from("Labels"), map(data.labels));
        root.insert(Arc::from("ExternalLabels"), map(data.external_labels));
        root.insert(
            Arc::from("ExternalURL"),
            Value::String(Arc::from(data.external_url)),
        );
        root.insert(Arc::from("Value"), Value::Float(data.value));
        self.0
            .execute_to_string(&Value::Map(Arc::new(root)))
            .map_err(|e| clean_error(&e))
    }
}

/// Expands `text` once (compile and expand); the error says which step failed.
///
/// # Errors
/// As [`compile`] and [`Compiled::expand`].
pub fn expand(name: &str, text: &str, data: &TemplateData<'_>) -> Result<String, String> {
    if !text.contains("{{") {
        return Ok(text.to_string());
    }
    compile(name, text)?.expand(data)
}

/// Checks a template as `promtool check rules` does: it parses, and names no function
/// or variable that does not exist.
///
/// # Errors
/// The parser's or executor's message.
pub fn check(name: &str, text: &str) -> Result<(), String> {
    let compiled = compile(name, text)?;
    let empty = BTreeMap::new();
    match compiled.expand(&TemplateData {
        labels: &empty,
        external_labels: &empty,
        external_url: "",
        value: 0.0,
    }) {
        Err(e) if e.contains("undefined") => Err(e),
        _ => Ok(()),
    }
}

/// The error without gotmpl's `template: NAME:LINE:COL:` prefix, whose column counts
/// the definitions Periscope adds in front.
fn clean_error(e: &TemplateError) -> String {
    let text = e.to_string();
    let Some(rest) = text.strip_prefix("template: ") else {
        return text;
    };
    let mut parts = rest.splitn(4, ':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(line), Some(col), Some(message))
            if line.trim().parse::<u32>().is_ok() && col.trim().parse::<u32>().is_ok() =>
        {
            message.trim().to_string()
        }
        _ => text,
    }
}

type Func = fn(&[Value]) -> gotmpl::Result<Value>;

fn functions() -> [(&'static str, Func); 14] {
    [
        ("humanize", humanize),
        ("humanize1024", humanize1024),
        ("humanizeDuration", humanize_duration),
        ("humanizePercentage", humanize_percentage),
        ("humanizeTimestamp", humanize_timestamp),
        ("toUpper", |a| string_fn(a, "toUpper", |s| s.to_uppercase())),
        ("toLower", |a| string_fn(a, "toLower", |s| s.to_lowercase())),
        ("title", |a| string_fn(a, "title", title)),
        ("stripPort", |a| string_fn(a, "stripPort", strip_port)),
        ("stripDomain", |a| string_fn(a, "stripDomain", strip_domain)),
        ("safeHtml", |a| string_fn(a, "safeHtml", str::to_string)),
        ("match", re_match),
        ("reReplaceAll", re_replace_all),
        ("parseDuration", parse_duration),
    ]
}

fn fail(message: String) -> TemplateError {
    TemplateError::Exec(message)
}

fn arg<'a>(args: &'a [Value], i: usize, name: &str) -> gotmpl::Result<&'a Value> {
    args.get(i)
        .ok_or_else(|| fail(format!("{name}: wrong number of arguments")))
}

/// A number argument; strings are parsed as Prometheus does.
fn number(args: &[Value], name: &str) -> gotmpl::Result<f64> {
    let v = arg(args, 0, name)?;
    match v {
        Value::Float(f) => Ok(*f),
        Value::Int(i) => Ok(*i as f64),
        Value::Uint(u) => Ok(*u as f64),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| fail(format!("{name}: {s:?} is not a number"))),
        other => Err(fail(format!("{name}: {other} is not a number"))),
    }
}

fn text(args: &[Value], i: usize, name: &str) -> gotmpl::Result<String> {
    Ok(match arg(args, i, name)? {
        Value::String(s) => s.to_string(),
        other => other.to_string(),
    })
}

fn string_fn(args: &[Value], name: &str, f: fn(&str) -> String) -> gotmpl::Result<Value> {
    Ok(Value::String(Arc::from(f(&text(args, 0, name)?).as_str())))
}

fn string(s: String) -> Value {
    Value::String(Arc::from(s.as_str()))
}

/// Go's `fmt.Sprintf(format, v)` for one float, through gotmpl's own printf.
fn go_format(format: &'static str, v: f64) -> String {
    static CACHE: OnceLock<parking_lot::Mutex<BTreeMap<&'static str, Template>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock();
    let template = match cache.get(format) {
        Some(t) => t.clone(),
        None => match Template::new("f").parse(&format!("{{{{printf {format:?} .}}}}")) {
            Ok(t) => {
                cache.insert(format, t.clone());
                t
            }
            Err(_) => return v.to_string(),
        },
    };
    drop(cache);
    template
        .execute_to_string(&Value::Float(v))
        .unwrap_or_else(|_| v.to_string())
}

fn humanize(args: &[Value]) -> gotmpl::Result<Value> {
    let mut v = number(args, "humanize")?;
    if v == 0.0 || !v.is_finite() {
        return Ok(string(go_format("%.4g", v)));
    }
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    Ok(string(format!("{}{prefix}", go_format("%.4g", v))))
}

fn humanize1024(args: &[Value]) -> gotmpl::Result<Value> {
    let mut v = number(args, "humanize1024")?;
    if v.abs() <= 1.0 || !v.is_finite() {
        return Ok(string(go_format("%.4g", v)));
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    Ok(string(format!("{}{prefix}", go_format("%.4g", v))))
}

fn humanize_duration(args: &[Value]) -> gotmpl::Result<Value> {
    let mut v = number(args, "humanizeDuration")?;
    if !v.is_finite() {
        return Ok(string(go_format("%.4g", v)));
    }
    if v == 0.0 {
        return Ok(string("0s".into()));
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        v = v.abs();
        let d = v as i64;
        let (days, hours, minutes, seconds) = (d / 86_400, (d / 3600) % 24, (d / 60) % 60, d % 60);
        return Ok(string(if days != 0 {
            format!("{sign}{days}d {hours}h {minutes}m {seconds}s")
        } else if hours != 0 {
            format!("{sign}{hours}h {minutes}m {seconds}s")
        } else if minutes != 0 {
            format!("{sign}{minutes}m {seconds}s")
        } else {
            format!("{sign}{}s", go_format("%.4g", v))
        }));
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    Ok(string(format!("{}{prefix}s", go_format("%.4g", v))))
}

fn humanize_percentage(args: &[Value]) -> gotmpl::Result<Value> {
    let v = number(args, "humanizePercentage")?;
    Ok(string(format!("{}%", go_format("%.4g", v * 100.0))))
}

fn humanize_timestamp(args: &[Value]) -> gotmpl::Result<Value> {
    let v = number(args, "humanizeTimestamp")?;
    if !v.is_finite() {
        return Ok(string(go_format("%.4g", v)));
    }
    let millis = (v * 1e3) as i64;
    let t = chrono::DateTime::from_timestamp_millis(millis).unwrap_or_default();
    // Go's time.Time.String() of a millisecond time: fractional seconds without
    // trailing zeros.
    let mut s = t.format("%Y-%m-%d %H:%M:%S%.3f").to_string();
    while s.ends_with('0') {
        s.pop();
    }
    if s.ends_with('.') {
        s.pop();
    }
    Ok(string(format!("{s} +0000 UTC")))
}

fn title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut at_start = true;
    for c in s.chars() {
        if at_start && c.is_alphanumeric() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        at_start = !(c.is_alphanumeric() || c == '_' || c == '\'');
    }
    out
}

fn strip_port(s: &str) -> String {
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((host, _)) = rest.split_once(']') {
            return host.to_string();
        }
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => {
            host.to_string()
        }
        _ => s.to_string(),
    }
}

fn strip_domain(s: &str) -> String {
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (s, None),
    };
    if host.parse::<std::net::IpAddr>().is_ok() {
        return s.to_string();
    }
    let short = host.split('.').next().unwrap_or(host);
    match port {
        Some(p) => format!("{short}:{p}"),
        None => short.to_string(),
    }
}

fn re_match(args: &[Value]) -> gotmpl::Result<Value> {
    let pattern = text(args, 0, "match")?;
    let subject = text(args, 1, "match")?;
    // Go's regexp.MatchString is unanchored.
    let re = Regex::new(&pattern).map_err(|e| fail(format!("match: {e}")))?;
    Ok(Value::Bool(re.is_match(&subject)))
}

fn re_replace_all(args: &[Value]) -> gotmpl::Result<Value> {
    let pattern = text(args, 0, "reReplaceAll")?;
    let replacement = text(args, 1, "reReplaceAll")?;
    let subject = text(args, 2, "reReplaceAll")?;
    let re = Regex::new(&pattern).map_err(|e| fail(format!("reReplaceAll: {e}")))?;
    Ok(string(
        re.replace_all(&subject, replacement.as_str()).into_owned(),
    ))
}

fn parse_duration(args: &[Value]) -> gotmpl::Result<Value> {
    let t = text(args, 0, "parseDuration")?;
    promql_parser::util::parse_duration(&t)
        .map(|d| Value::Float(d.as_secs_f64()))
        .map_err(|e| fail(format!("parseDuration: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, value: f64) -> String {
        let labels: BTreeMap<String, String> = [("instance".to_string(), "web-1:9090".to_string())]
            .into_iter()
            .collect();
        let external = BTreeMap::new();
        expand(
            "t",
            text,
            &TemplateData {
                labels: &labels,
                external_labels: &external,
                external_url: "http://periscope:7070",
                value,
            },
        )
        .unwrap()
    }

    #[test]
    fn prometheus_variables_and_fields() {
        assert_eq!(
            run("{{ $labels.instance }} is {{ $value }}", 3.5),
            "web-1:9090 is 3.5"
        );
        assert_eq!(run("{{ .Labels.instance }}", 0.0), "web-1:9090");
        assert_eq!(run("{{ $externalURL }}", 0.0), "http://periscope:7070");
        assert_eq!(run("{{ printf \"%.2f\" $value }}", 0.12345), "0.12");
        assert_eq!(run("{{ $labels.instance | stripPort }}", 0.0), "web-1");
        assert_eq!(
            run("{{ if gt $value 1.0 }}high{{ else }}low{{ end }}", 2.0),
            "high"
        );
        assert_eq!(run("plain text", 0.0), "plain text");
    }

    #[test]
    fn humanize_functions_match_prometheus() {
        assert_eq!(run("{{ humanize $value }}", 1234567.0), "1.235M");
        assert_eq!(run("{{ humanize $value }}", 0.012), "12m");
        assert_eq!(run("{{ humanize $value }}", 0.0), "0");
        assert_eq!(run("{{ humanize1024 $value }}", 1048576.0), "1Mi");
        assert_eq!(run("{{ humanizeDuration $value }}", 93784.0), "1d 2h 3m 4s");
        assert_eq!(run("{{ humanizeDuration $value }}", 1.5), "1.5s");
        assert_eq!(run("{{ humanizeDuration $value }}", 0.25), "250ms");
        assert_eq!(run("{{ $value | humanizePercentage }}", 0.0512), "5.12%");
        assert_eq!(
            run("{{ humanizeTimestamp $value }}", 1.5),
            "1970-01-01 00:00:01.5 +0000 UTC"
        );
        assert_eq!(
            run("{{ toUpper \"abc\" }} {{ title \"hello world\" }}", 0.0),
            "ABC Hello World"
        );
        assert_eq!(
            run("{{ reReplaceAll \"(a+)\" \"<$1>\" \"baaad\" }}", 0.0),
            "b<aaa>d"
        );
        assert_eq!(
            run("{{ if match \"^web\" $labels.instance }}yes{{ end }}", 0.0),
            "yes"
        );
    }

    #[test]
    fn bad_templates_are_refused() {
        assert!(compile("t", "{{ $labels.x ").is_err());
        assert_eq!(
            compile("t", "{{ $labels.x ").unwrap_err(),
            "unclosed action"
        );
        assert!(check("t", "{{ nosuchfunc 1 }}").is_err());
        assert!(
            check("t", "{{ humanize $labels.missing }}").is_ok(),
            "data errors show at run time"
        );
    }
}
