//! PromQL side by side with a real Prometheus (Debian's `prometheus` package, 2.42): the
//! same samples are remote-written to both, then every query of [`QUERIES`] runs as an
//! instant query and as a range query on both and the answers must agree (same series,
//! values within float tolerance). The test fails when Prometheus cannot start.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use periscope_collector::remote_write::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest};
use prost::Message;
use serde_json::Value;

use crate::support::Server;

/// A Prometheus server on a free loopback port, with remote write receiving enabled.
pub struct Prometheus {
    child: Child,
    pub url: String,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Prometheus {
    pub async fn start() -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 15s\n").expect("config");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = dir.path().join("prometheus.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(["--web.enable-remote-write-receiver", "--log.level=warn"])
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("prometheus must be installed (scripts/test.sh installs Debian's prometheus package)");
        let p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
            log,
        };
        let client = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(r) = client.get(format!("{}/-/ready", p.url)).send().await
                && r.status().is_success()
            {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "prometheus did not become ready: {}",
            std::fs::read_to_string(&p.log).unwrap_or_default()
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one WriteRequest as Prometheus does; returns the status.
pub async fn remote_write(base: &str, request: &WriteRequest) -> u16 {
    let body = snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .expect("snappy");
    reqwest::Client::new()
        .post(format!("{base}/api/v1/write"))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body)
        .send()
        .await
        .expect("remote write")
        .status()
        .as_u16()
}

pub fn label(name: &str, value: &str) -> Label {
    Label {
        name: name.into(),
        value: value.into(),
    }
}

const STEP_MS: i64 = 15_000;
const POINTS: i64 = 200; // 50 minutes
const STALE: f64 = f64::from_bits(0x7ff0_0000_0000_0002);

/// Deterministic pseudo-random numbers in [0, 1).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The test's series: each a label set and a value (or nothing) per point index.
fn dataset() -> Vec<(Vec<Label>, Vec<Option<f64>>)> {
    let mut rng = Lcg(42);
    let mut out = Vec::new();
    let n = POINTS as usize;
    let targets = [("api", "a:1"), ("api", "a:2"), ("web", "w:1")];
    for (ti, (job, instance)) in targets.iter().enumerate() {
        for (method, status) in [("GET", "200"), ("POST", "200"), ("GET", "500")] {
            let mut v = 0.0;
            let speed = 1.0 + ti as f64 + rng.next() * 3.0;
            let values = (0..n)
                .map(|i| {
                    // One counter reset in the middle of one series.
                    if ti == 1 && method == "GET" && status == "200" && i == 100 {
                        v = 3.0;
                    } else {
                        v += (speed * (0.5 + rng.next())).round();
                    }
                    Some(v)
                })
                .collect();
            out.push((
                vec![
                    label("__name__", "http_requests_total"),
                    label("job", job),
                    label("instance", instance),
                    label("method", method),
                    label("status", status),
                ],
                values,
            ));
        }
        let mut m = 500.0 + 100.0 * ti as f64;
        let memory = (0..n)
            .map(|_| {
                m += (rng.next() - 0.45) * 40.0;
                Some((m * 1000.0).round() / 1000.0 + 0.001 * ti as f64)
            })
            .collect();
        out.push((
            vec![
                label("__name__", "memory_bytes"),
                label("job", job),
                label("instance", instance),
            ],
            memory,
        ));
        let up = (0..n)
            .map(|i| {
                Some(if ti == 2 && (60..90).contains(&i) {
                    0.0
                } else {
                    1.0
                })
            })
            .collect();
        out.push((
            vec![
                label("__name__", "up"),
                label("job", job),
                label("instance", instance),
            ],
            up,
        ));
        // Classic histogram.
        let bounds = ["0.05", "0.1", "0.5", "1", "+Inf"];
        let mut counts = [0.0; 5];
        let mut sum = 0.0;
        let mut series: Vec<Vec<Option<f64>>> = vec![Vec::new(); 7];
        for _ in 0..n {
            for _ in 0..(3 + ti) {
                let x = rng.next() * rng.next() * 1.5;
                sum += x;
                for (b, bound) in bounds.iter().enumerate() {
                    let le: f64 = bound.replace("+Inf", "inf").parse().unwrap();
                    if x <= le {
                        counts[b] += 1.0;
                    }
                }
            }
            for b in 0..5 {
                series[b].push(Some(counts[b]));
            }
            series[5].push(Some((sum * 1e6).round() / 1e6));
            series[6].push(Some(counts[4]));
        }
        for (b, bound) in bounds.iter().enumerate() {
            out.push((
                vec![
                    label("__name__", "request_duration_seconds_bucket"),
                    label("job", job),
                    label("instance", instance),
                    label("le", bound),
                ],
                series[b].clone(),
            ));
        }
        for (i, name) in [
            (5, "request_duration_seconds_sum"),
            (6, "request_duration_seconds_count"),
        ] {
            out.push((
                vec![
                    label("__name__", name),
                    label("job", job),
                    label("instance", instance),
                ],
                series[i].clone(),
            ));
        }
    }
    for (room, base) in [("kitchen", 21.5), ("cellar", -3.25), ("attic", 30.125)] {
        let mut t = base;
        let values = (0..n)
            .map(|_| {
                t += (rng.next() - 0.5) * 2.0;
                Some((t * 100.0).round() / 100.0)
            })
            .collect();
        out.push((
            vec![
                label("__name__", "temperature_celsius"),
                label("room", room),
            ],
            values,
        ));
    }
    out.push((
        vec![
            label("__name__", "build_info"),
            label("job", "api"),
            label("version", "1.2.3"),
        ],
        vec![Some(1.0); n],
    ));
    // Stops with a staleness marker at point 80, comes back at point 120.
    out.push((
        vec![label("__name__", "flappy"), label("job", "x")],
        (0..n)
            .map(|i| match i {
                80 => Some(STALE),
                81..120 => None,
                _ => Some(i as f64),
            })
            .collect(),
    ));
    // A 10-minute gap without a marker: the 5-minute lookback still sees the last sample.
    out.push((
        vec![label("__name__", "gappy"), label("job", "x")],
        (0..n)
            .map(|i| {
                if (100..140).contains(&i) {
                    None
                } else {
                    Some((i % 7) as f64)
                }
            })
            .collect(),
    ));
    out
}

/// The queries compared. Each runs as an instant query and as a range query.
const QUERIES: &[&str] = &[
    "http_requests_total",
    r#"http_requests_total{method="GET"}"#,
    r#"http_requests_total{method!="GET"}"#,
    r#"http_requests_total{status=~"2.."}"#,
    r#"http_requests_total{status!~"5..",job="api"}"#,
    r#"{__name__="memory_bytes"}"#,
    r#"{__name__=~"memory_.*|temperature_celsius"}"#,
    "rate(http_requests_total[5m])",
    "irate(http_requests_total[5m])",
    "increase(http_requests_total[10m])",
    "delta(memory_bytes[5m])",
    "idelta(memory_bytes[5m])",
    "deriv(memory_bytes[10m])",
    "predict_linear(memory_bytes[10m], 600)",
    "avg_over_time(memory_bytes[5m])",
    "min_over_time(temperature_celsius[10m])",
    "max_over_time(temperature_celsius[10m])",
    "sum_over_time(memory_bytes[3m])",
    "count_over_time(http_requests_total[7m])",
    "last_over_time(memory_bytes[5m])",
    "quantile_over_time(0.9, temperature_celsius[15m])",
    "stddev_over_time(memory_bytes[10m])",
    "stdvar_over_time(temperature_celsius[10m])",
    "changes(up[15m])",
    "resets(http_requests_total[30m])",
    "present_over_time(flappy[5m])",
    "sum(rate(http_requests_total[5m]))",
    "sum by (job) (rate(http_requests_total[5m]))",
    "sum without (instance) (rate(http_requests_total[5m]))",
    "avg by (job) (memory_bytes)",
    "min by (job) (memory_bytes)",
    "max(memory_bytes)",
    "count by (status) (http_requests_total)",
    "group by (job) (http_requests_total)",
    "stddev(temperature_celsius)",
    "stdvar by (job) (memory_bytes)",
    "topk(2, memory_bytes)",
    "bottomk(2, temperature_celsius)",
    "topk by (job) (1, rate(http_requests_total[5m]))",
    "quantile(0.5, temperature_celsius)",
    "quantile by (job) (0.9, memory_bytes)",
    r#"count_values("value", up)"#,
    "histogram_quantile(0.9, rate(request_duration_seconds_bucket[5m]))",
    "histogram_quantile(0.5, sum by (le) (rate(request_duration_seconds_bucket[5m])))",
    "histogram_quantile(0.99, sum by (job, le) (increase(request_duration_seconds_bucket[10m])))",
    "rate(request_duration_seconds_sum[5m]) / rate(request_duration_seconds_count[5m])",
    "memory_bytes / 1024 / 1024",
    "memory_bytes * 2 + 1",
    "2 ^ 3 - memory_bytes % 7",
    "atan2(memory_bytes, 100)",
    "memory_bytes > 550",
    "memory_bytes > bool 550",
    "550 < memory_bytes",
    "temperature_celsius != bool 0",
    "rate(http_requests_total[5m]) * on(job, instance) group_left up",
    "http_requests_total * on(job) group_left(version) build_info",
    "memory_bytes / on(job, instance) up",
    "memory_bytes - ignoring(method, status) group_right sum without (method, status) (http_requests_total)",
    "sum by (job) (memory_bytes) / on(job) group_right memory_bytes",
    "up and memory_bytes > 600",
    "up or flappy",
    "memory_bytes unless memory_bytes > 700",
    "http_requests_total and on(job) (up == 0)",
    "abs(temperature_celsius)",
    "ceil(temperature_celsius)",
    "floor(temperature_celsius)",
    "round(memory_bytes, 10)",
    "round(temperature_celsius)",
    "clamp(temperature_celsius, -5, 25)",
    "clamp_min(temperature_celsius, 0)",
    "clamp_max(temperature_celsius, 10)",
    "sqrt(abs(temperature_celsius))",
    "exp(temperature_celsius / 100)",
    "ln(memory_bytes)",
    "log2(memory_bytes)",
    "log10(memory_bytes)",
    "sgn(temperature_celsius)",
    "time()",
    "vector(time())",
    "scalar(sum(up))",
    "timestamp(memory_bytes)",
    r#"label_replace(up, "host", "$1", "instance", "(.*):.*")"#,
    r#"label_replace(up, "job", "", "job", "web")"#,
    r#"label_join(up, "id", "-", "job", "instance")"#,
    "memory_bytes offset 5m",
    "rate(http_requests_total[5m] offset 10m)",
    "sum(rate(http_requests_total[5m] @ end()))",
    "memory_bytes @ start()",
    "flappy",
    "gappy",
    r#"absent(nonexistent_metric{job="x"})"#,
    "absent(up)",
    "absent_over_time(nonexistent_metric[5m])",
    "sort(memory_bytes)",
    "sort_desc(temperature_celsius)",
    "hour()",
    "minute(vector(time()))",
    "day_of_week()",
    "year(timestamp(up))",
    "max_over_time(rate(http_requests_total[5m])[10m:1m])",
    "avg_over_time(memory_bytes[10m:30s])",
    "-memory_bytes",
    r#"sum by (job) (rate(http_requests_total{status=~"5.."}[5m])) / sum by (job) (rate(http_requests_total[5m]))"#,
    "count(count by (instance) (up))",
    "avg_over_time(temperature_celsius[1h])",
    // The benchmark's queries, and the other aggregations of a range function that range
    // queries evaluate series by series for every step at once.
    "sum by (job) (rate(http_requests_total[5m]))",
    r#"sum(rate(http_requests_total{job="api"}[5m]))"#,
    "topk(2, sum by (job) (rate(http_requests_total[5m])))",
    "count(http_requests_total)",
    "avg by (instance) (increase(http_requests_total[10m]))",
    "max without (status) (irate(http_requests_total[5m]))",
    "min by (job) (avg_over_time(memory_bytes[5m]))",
    "stddev(rate(http_requests_total[5m]))",
    "group by (method) (count_over_time(http_requests_total[7m]))",
    r#"count by (job) (deriv(memory_bytes{job!="db"}[10m]))"#,
];

fn close(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => {
            (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        _ => false,
    }
}

/// A comparable form of a `data` object: label set → points.
fn normalize(data: &Value) -> (String, BTreeMap<String, Vec<(String, String)>>) {
    let kind = data["resultType"].as_str().unwrap_or("").to_string();
    let mut out = BTreeMap::new();
    let point = |p: &Value| (p[0].to_string(), p[1].as_str().unwrap_or("").to_string());
    match kind.as_str() {
        "scalar" | "string" => {
            out.insert(String::new(), vec![point(&data["result"])]);
        }
        _ => {
            for s in data["result"].as_array().cloned().unwrap_or_default() {
                let key = s["metric"].to_string();
                let points = match s.get("values") {
                    Some(v) => v
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(point)
                        .collect(),
                    None => vec![point(&s["value"])],
                };
                out.insert(key, points);
            }
        }
    }
    (kind, out)
}

/// The series of a vector answer in the order given.
fn series_order(data: &Value) -> Vec<String> {
    data["result"]
        .as_array()
        .map(|r| r.iter().map(|s| s["metric"].to_string()).collect())
        .unwrap_or_default()
}

/// Whether Prometheus answered with at least one series or a scalar: only such answers
/// count as compared.
fn has_data(theirs: &Value) -> bool {
    theirs["status"] == "success"
        && match theirs["data"]["resultType"].as_str() {
            Some("scalar" | "string") => true,
            _ => theirs["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty()),
        }
}

fn differences(query: &str, ours: &Value, theirs: &Value) -> Option<String> {
    if ours["status"] != theirs["status"] {
        return Some(format!("{query}: status {} vs prometheus {}", ours, theirs));
    }
    if theirs["status"] != "success" {
        return None;
    }
    let (k1, a) = normalize(&ours["data"]);
    let (k2, b) = normalize(&theirs["data"]);
    if k1 != k2 {
        return Some(format!("{query}: resultType {k1} vs prometheus {k2}"));
    }
    // sort() and sort_desc() order an instant vector: the order is the answer.
    if query.starts_with("query sort") {
        let (o1, o2) = (series_order(&ours["data"]), series_order(&theirs["data"]));
        if o1 != o2 {
            return Some(format!(
                "{query}: order differs:\n  periscope  {o1:?}\n  prometheus {o2:?}"
            ));
        }
    }
    if a.keys().ne(b.keys()) {
        return Some(format!(
            "{query}: series differ:\n  periscope  {:?}\n  prometheus {:?}",
            a.keys().collect::<Vec<_>>(),
            b.keys().collect::<Vec<_>>()
        ));
    }
    for (key, pa) in &a {
        let pb = &b[key];
        let same = pa.len() == pb.len()
            && pa.iter().zip(pb).all(|(x, y)| {
                x.0.parse::<f64>().ok() == y.0.parse::<f64>().ok() && close(&x.1, &y.1)
            });
        if !same {
            return Some(format!(
                "{query}: values of {key} differ:\n  periscope  {pa:?}\n  prometheus {pb:?}"
            ));
        }
    }
    None
}

async fn get_json(url: &str, params: &[(&str, String)]) -> Value {
    let response = reqwest::Client::new()
        .get(url)
        .query(params)
        .send()
        .await
        .expect("request");
    response.json().await.expect("json")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn secs(ms: i64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Every query of [`QUERIES`], as an instant and as a range query, on Periscope at `api`
/// and Prometheus at `prom`: the differences, and how many answers of Prometheus had data.
async fn compare_queries(
    api: &str,
    prom: &str,
    instant_at: i64,
    (start, end): (i64, i64),
) -> (Vec<String>, usize) {
    let mut failures = Vec::new();
    let mut compared = 0;
    for query in QUERIES {
        for (path, params) in [
            (
                "query",
                vec![("query", query.to_string()), ("time", secs(instant_at))],
            ),
            (
                "query_range",
                vec![
                    ("query", query.to_string()),
                    ("start", secs(start)),
                    ("end", secs(end)),
                    ("step", "60".to_string()),
                ],
            ),
        ] {
            let ours = get_json(&format!("{}/api/v1/{path}", api), &params).await;
            let theirs = get_json(&format!("{}/api/v1/{path}", prom), &params).await;
            if has_data(&theirs) {
                compared += 1;
            }
            if std::env::var("PROMQL_DEBUG").is_ok() {
                eprintln!(
                    "{path} {query}\n  ours   {}\n  theirs {}",
                    ours.to_string().chars().take(300).collect::<String>(),
                    theirs.to_string().chars().take(300).collect::<String>()
                );
            }
            if let Some(d) = differences(&format!("{path} {query}"), &ours, &theirs) {
                failures.push(d);
            }
        }
    }
    (failures, compared)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_answers_match_a_real_prometheus() {
    let prometheus = Prometheus::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path(), &[]);

    // 50 minutes of 15-second samples ending a minute ago, written in time order in
    // batches, as a Prometheus agent would.
    let t0 = (now_ms() - 60_000 - POINTS * STEP_MS) / 60_000 * 60_000;
    let data = dataset();
    for chunk in (0..POINTS).collect::<Vec<_>>().chunks(20) {
        let timeseries = data
            .iter()
            .map(|(labels, values)| TimeSeries {
                labels: labels.clone(),
                samples: chunk
                    .iter()
                    .filter_map(|&i| {
                        values[i as usize].map(|value| Sample {
                            value,
                            timestamp: t0 + i * STEP_MS,
                        })
                    })
                    .collect(),
                ..Default::default()
            })
            .filter(|s| !s.samples.is_empty())
            .collect();
        let request = WriteRequest {
            timeseries,
            metadata: vec![MetricMetadata {
                r#type: 1,
                metric_family_name: "http_requests_total".into(),
                help: "Requests served.".into(),
                unit: String::new(),
            }],
        };
        assert_eq!(
            remote_write(&prometheus.url, &request).await,
            204,
            "prometheus write"
        );
        assert_eq!(
            remote_write(&server.api(), &request).await,
            204,
            "periscope write"
        );
    }

    let instant_at = t0 + 45 * 60_000 + 7_000;
    let (start, end) = (t0 + 10 * 60_000, t0 + POINTS * STEP_MS);
    // Once from the rows in memory, then from the files after a restart (a graceful
    // stop flushes), read through their series indexes.
    let (failures, compared) =
        compare_queries(&server.api(), &prometheus.url, instant_at, (start, end)).await;
    assert!(
        failures.is_empty(),
        "{} of {compared} answers from the head differ from Prometheus:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let mut server = server;
    assert!(server.terminate().success());
    let server = Server::start(dir.path(), &[]);
    assert!(
        !crate::support::parquet_files(&dir.path().join("metrics")).is_empty(),
        "the restart flushed the samples to files"
    );
    let (failures, compared) =
        compare_queries(&server.api(), &prometheus.url, instant_at, (start, end)).await;
    assert!(
        failures.is_empty(),
        "{} of {compared} answers from the files differ from Prometheus:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(QUERIES.len() >= 60);
    // Answers both sides agree are empty or errors do not count: most must have data.
    assert!(
        compared >= QUERIES.len() * 2 * 3 / 4,
        "only {compared} of {} answers of Prometheus had data",
        QUERIES.len() * 2
    );

    // Series, label names and label values agree too.
    let window = [("start", secs(start)), ("end", secs(end))];
    for (path, extra) in [
        ("series", vec![("match[]", "up".to_string())]),
        (
            "series",
            vec![(
                "match[]",
                r#"http_requests_total{status="500"}"#.to_string(),
            )],
        ),
        ("labels", vec![]),
        ("labels", vec![("match[]", "memory_bytes".to_string())]),
        ("label/job/values", vec![]),
        ("label/__name__/values", vec![]),
        (
            "label/room/values",
            vec![("match[]", "temperature_celsius".to_string())],
        ),
    ] {
        let mut params: Vec<(&str, String)> = window.to_vec();
        params.extend(extra);
        let ours = get_json(&format!("{}/api/v1/{path}", server.api()), &params).await;
        let theirs = get_json(&format!("{}/api/v1/{path}", prometheus.url), &params).await;
        let sorted = |v: &Value| {
            let mut items: Vec<String> = v["data"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(Value::to_string)
                .collect();
            items.sort();
            items
        };
        assert_eq!(ours["status"], "success", "{path}: {ours}");
        assert_eq!(sorted(&ours), sorted(&theirs), "{path} {params:?}");
    }

    // Invalid PromQL: 400 with Prometheus's error JSON, like Prometheus.
    for bad in ["sum(", "rate(up)", "up[5m] + 1", r#"{job=~"("}"#] {
        let params = [("query", bad.to_string()), ("time", secs(instant_at))];
        let ours = reqwest::Client::new()
            .get(format!("{}/api/v1/query", server.api()))
            .query(&params)
            .send()
            .await
            .expect("query");
        let theirs = get_json(&format!("{}/api/v1/query", prometheus.url), &params).await;
        assert_eq!(ours.status().as_u16(), 400, "{bad}");
        let body: Value = ours.json().await.expect("json");
        assert_eq!(body["status"], "error");
        assert_eq!(body["errorType"], "bad_data", "{bad}: {body}");
        assert!(!body["error"].as_str().unwrap_or("").is_empty());
        assert_eq!(theirs["errorType"], "bad_data", "prometheus agrees {bad}");
    }
}
