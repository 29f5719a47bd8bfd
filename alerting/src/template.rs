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
#[derive(Clone)]
pub struct TemplateData<'a> {
    /// The alert's labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Labels configured for the whole server.
    pub external_labels: &'a BTreeMap<String, String>,
    /// The server's external URL.
    pub external_url: &'a str,
    /// The alert's value.
    pub value: f64,
    /// The evaluation time, Unix ms (what `query` evaluates at).
    pub time_ms: i64,
    /// Runs PromQL for the `query` function; `None` where no server is at hand.
    pub query: Option<QueryFn>,
}

/// Runs an instant PromQL query at a time (Unix ms): labels and value of each sample.
pub type QueryFn =
    Arc<dyn Fn(&str, i64) -> Result<Vec<(BTreeMap<String, String>, f64)>, String> + Send + Sync>;

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
    compile_for(name, text, None)
}

/// Parses `text` with the functions that depend on the data (`query`, `externalURL`,
/// `pathPrefix`, `graphLink`, `tableLink`) bound to `data`.
fn compile_for(
    name: &str,
    text: &str,
    data: Option<&TemplateData<'_>>,
) -> Result<Compiled, String> {
    let mut template = Template::new(name);
    for (fname, f) in functions() {
        template = template.func(fname, f);
    }
    let external = data.map_or(String::new(), |d| d.external_url.to_string());
    let prefix = reqwest::Url::parse(&external)
        .map(|u| u.path().trim_end_matches('/').to_string())
        .unwrap_or_default();
    let link = |tab: &'static str, prefix: String| {
        move |args: &[Value]| -> gotmpl::Result<Value> {
            let expr = text_arg(args, 0, "graphLink")?;
            let q: String = form_urlencoded::byte_serialize(expr.as_bytes()).collect();
            Ok(string(format!("{prefix}/graph?g0.expr={q}&g0.tab={tab}")))
        }
    };
    let query = data.and_then(|d| d.query.clone());
    let time_ms = data.map_or(0, |d| d.time_ms);
    template = template
        .func("externalURL", {
            let external = external.clone();
            move |_| Ok(string(external.clone()))
        })
        .func("pathPrefix", {
            let prefix = prefix.clone();
            move |_| Ok(string(prefix.clone()))
        })
        .func("graphLink", link("0", prefix.clone()))
        .func("tableLink", link("1", prefix))
        .func("query", move |args| {
            let q = text_arg(args, 0, "query")?;
            let Some(run) = &query else {
                return Err(fail("query: no server to query here".into()));
            };
            let samples = run(&q, time_ms).map_err(|e| fail(format!("query: {e}")))?;
            Ok(Value::List(
                samples.into_iter().map(|(l, v)| sample(&l, v)).collect(),
            ))
        });
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
    compile_for(name, text, Some(data))?.expand(data)
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
        time_ms: 0,
        query: None,
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

fn functions() -> [(&'static str, Func); 24] {
    [
        ("humanize", humanize),
        ("humanize1024", humanize1024),
        ("humanizeDuration", humanize_duration),
        ("humanizePercentage", humanize_percentage),
        ("humanizeTimestamp", humanize_timestamp),
        ("toTime", humanize_timestamp),
        ("toDuration", to_duration),
        ("now", |_| {
            Ok(Value::Float(
                chrono::Utc::now().timestamp_millis() as f64 / 1e3,
            ))
        }),
        ("toUpper", |a| string_fn(a, "toUpper", |s| s.to_uppercase())),
        ("toLower", |a| string_fn(a, "toLower", |s| s.to_lowercase())),
        ("title", |a| string_fn(a, "title", title)),
        ("stripPort", |a| string_fn(a, "stripPort", strip_port)),
        ("stripDomain", |a| string_fn(a, "stripDomain", strip_domain)),
        ("safeHtml", |a| string_fn(a, "safeHtml", str::to_string)),
        ("urlQueryEscape", |a| {
            string_fn(a, "urlQueryEscape", |s| {
                form_urlencoded::byte_serialize(s.as_bytes()).collect()
            })
        }),
        ("match", re_match),
        ("reReplaceAll", re_replace_all),
        ("parseDuration", parse_duration),
        ("first", first),
        ("label", label),
        ("value", value),
        ("strvalue", |a| {
            let s = sample_arg(a, 0, "strvalue")?;
            Ok(labels_of(s)
                .get("__value__")
                .cloned()
                .unwrap_or_else(|| string(String::new())))
        }),
        ("sortByLabel", sort_by_label),
        ("args", |a| {
            Ok(Value::Map(Arc::new(
                a.iter()
                    .enumerate()
                    .map(|(i, v)| (Arc::from(format!("arg{i}").as_str()), v.clone()))
                    .collect(),
            )))
        }),
    ]
}

/// A query result sample as templates see it: `.Labels` and `.Value`.
fn sample(labels: &BTreeMap<String, String>, v: f64) -> Value {
    let labels = labels
        .iter()
        .map(|(k, v)| (Arc::from(k.as_str()), string(v.clone())))
        .collect();
    let mut m = BTreeMap::new();
    m.insert(Arc::from("Labels"), Value::Map(Arc::new(labels)));
    m.insert(Arc::from("Value"), Value::Float(v));
    Value::Map(Arc::new(m))
}

fn sample_arg<'a>(args: &'a [Value], i: usize, name: &str) -> gotmpl::Result<&'a Value> {
    match arg(args, i, name)? {
        v @ Value::Map(_) => Ok(v),
        other => Err(fail(format!(
            "{name}: {other} is not a query result sample"
        ))),
    }
}

fn labels_of(sample: &Value) -> BTreeMap<Arc<str>, Value> {
    match sample.field("Labels") {
        Some(Value::Map(m)) => (**m).clone(),
        _ => BTreeMap::new(),
    }
}

fn first(args: &[Value]) -> gotmpl::Result<Value> {
    match arg(args, 0, "first")? {
        Value::List(l) => l
            .first()
            .cloned()
            .ok_or_else(|| fail("first() called on vector with no elements".into())),
        other => Err(fail(format!("first: {other} is not a query result"))),
    }
}

fn label(args: &[Value]) -> gotmpl::Result<Value> {
    let name = text_arg(args, 0, "label")?;
    let s = sample_arg(args, 1, "label")?;
    Ok(labels_of(s)
        .get(name.as_str())
        .cloned()
        .unwrap_or_else(|| string(String::new())))
}

fn value(args: &[Value]) -> gotmpl::Result<Value> {
    let s = sample_arg(args, 0, "value")?;
    Ok(s.field("Value").cloned().unwrap_or(Value::Float(f64::NAN)))
}

fn sort_by_label(args: &[Value]) -> gotmpl::Result<Value> {
    let name = text_arg(args, 0, "sortByLabel")?;
    let Value::List(list) = arg(args, 1, "sortByLabel")? else {
        return Err(fail(
            "sortByLabel: the second argument must be a query result".into(),
        ));
    };
    let mut v: Vec<Value> = list.to_vec();
    v.sort_by_key(|s| {
        labels_of(s)
            .get(name.as_str())
            .map(ToString::to_string)
            .unwrap_or_default()
    });
    Ok(Value::List(v.into()))
}

/// Go's `time.Duration.String()` of `v` seconds.
fn to_duration(args: &[Value]) -> gotmpl::Result<Value> {
    let v = number(args, "toDuration")?;
    if !v.is_finite() {
        return Err(fail(format!("toDuration: {v} is not a duration")));
    }
    let sign = if v < 0.0 { "-" } else { "" };
    let ns = (v.abs() * 1e9).round() as u128;
    if ns == 0 {
        return Ok(string("0s".into()));
    }
    let text = if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{}µs", trim(ns as f64 / 1e3))
    } else if ns < 1_000_000_000 {
        format!("{}ms", trim(ns as f64 / 1e6))
    } else {
        let secs = ns as f64 / 1e9;
        let h = (secs / 3600.0).floor();
        let m = ((secs - h * 3600.0) / 60.0).floor();
        let s = secs - h * 3600.0 - m * 60.0;
        let mut out = String::new();
        if h > 0.0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0.0 || m > 0.0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&format!("{}s", trim(s)));
        out
    };
    Ok(string(format!("{sign}{text}")))
}

/// Up to 9 decimals, trailing zeros dropped.
fn trim(v: f64) -> String {
    let s = format!("{v:.9}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
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

fn text_arg(args: &[Value], i: usize, name: &str) -> gotmpl::Result<String> {
    Ok(match arg(args, i, name)? {
        Value::String(s) => s.to_string(),
        other => other.to_string(),
    })
}

fn string_fn(args: &[Value], name: &str, f: fn(&str) -> String) -> gotmpl::Result<Value> {
    Ok(Value::String(Arc::from(
        f(&text_arg(args, 0, name)?).as_str(),
    )))
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
        (v, prefix) = small_si_prefix(v);
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
    let (v, prefix) = small_si_prefix(v);
    Ok(string(format!("{}{prefix}s", go_format("%.4g", v))))
}

/// A value below 1 scaled up by thousands until it is at least 1 (or the prefixes run
/// out), and its SI prefix `m`, `u`, ... `y`: the small half of `humanize` and of
/// `humanizeDuration`.
fn small_si_prefix(mut v: f64) -> (f64, &'static str) {
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    (v, prefix)
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
    if let Some(rest) = s.strip_prefix('[')
        && let Some((host, _)) = rest.split_once(']')
    {
        return host.to_string();
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
    let pattern = text_arg(args, 0, "match")?;
    let subject = text_arg(args, 1, "match")?;
    // Go's regexp.MatchString is unanchored.
    let re = Regex::new(&pattern).map_err(|e| fail(format!("match: {e}")))?;
    Ok(Value::Bool(re.is_match(&subject)))
}

fn re_replace_all(args: &[Value]) -> gotmpl::Result<Value> {
    let pattern = text_arg(args, 0, "reReplaceAll")?;
    let replacement = text_arg(args, 1, "reReplaceAll")?;
    let subject = text_arg(args, 2, "reReplaceAll")?;
    let re = Regex::new(&pattern).map_err(|e| fail(format!("reReplaceAll: {e}")))?;
    Ok(string(
        re.replace_all(&subject, replacement.as_str()).into_owned(),
    ))
}

fn parse_duration(args: &[Value]) -> gotmpl::Result<Value> {
    let t = text_arg(args, 0, "parseDuration")?;
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
        let query: QueryFn = Arc::new(|q, t| {
            if q == "up" {
                Ok(vec![
                    ([("job".to_string(), "web".to_string())].into(), 1.0),
                    ([("job".to_string(), "api".to_string())].into(), t as f64),
                ])
            } else {
                Err(format!("no {q}"))
            }
        });
        expand(
            "t",
            text,
            &TemplateData {
                labels: &labels,
                external_labels: &external,
                external_url: "http://periscope:7070/prefix",
                value,
                time_ms: 7,
                query: Some(query),
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
        assert_eq!(
            run("{{ $externalURL }}", 0.0),
            "http://periscope:7070/prefix"
        );
        assert_eq!(
            run("{{ externalURL }}{{ pathPrefix }}", 0.0),
            "http://periscope:7070/prefix/prefix"
        );
        assert_eq!(
            run("{{ graphLink \"up == 0\" }}", 0.0),
            "/prefix/graph?g0.expr=up+%3D%3D+0&g0.tab=0"
        );
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
    fn query_results_and_their_helpers() {
        assert_eq!(
            run(
                "{{ with query \"up\" }}{{ . | first | value }}{{ end }}",
                0.0
            ),
            "1"
        );
        assert_eq!(
            run(
                "{{ range query \"up\" | sortByLabel \"job\" }}{{ label \"job\" . }}={{ .Value }} {{ end }}",
                0.0
            ),
            "api=7 web=1 "
        );
        assert_eq!(run("{{ (args 1 \"x\").arg1 }}", 0.0), "x");
        assert_eq!(
            run("{{ toDuration 90.5 }} {{ toDuration 0.25 }}", 0.0),
            "1m30.5s 250ms"
        );
        assert_eq!(run("{{ urlQueryEscape \"a b&c\" }}", 0.0), "a+b%26c");
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
