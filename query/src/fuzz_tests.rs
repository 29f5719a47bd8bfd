//! Property tests of the query entry points: the log query parser, PromQL (parse and
//! evaluate) and SQL (plan read-only) never panic, whatever the text; and the corpora
//! in `fuzz/corpus/{logql,promql,sql}` plus `fuzz/regressions/*` are replayed.

use std::path::PathBuf;

use periscope_storage::{Store, StoreConfig};
use proptest::prelude::*;

use crate::{QueryConfig, QueryEngine};

const LOGQL_TOKENS: &[&str] = &[
    "error",
    "AND",
    "OR",
    "NOT",
    "(",
    ")",
    "\"",
    "\"a b\"",
    "service:",
    "payment",
    "*",
    "severity>=",
    "warn",
    "body:",
    ":",
    "-",
    "trace_id:",
    "/",
    "route:/x",
    "<",
    ">",
    "=",
];
const PROMQL_TOKENS: &[&str] = &[
    "sum",
    "by",
    "(",
    ")",
    "rate",
    "up",
    "{",
    "}",
    "job",
    "=",
    "=~",
    "!~",
    "\"a\"",
    "[5m]",
    "[1m:10s]",
    "offset",
    "5m",
    "@",
    "1700000000",
    "histogram_quantile",
    "0.9",
    "+",
    "/",
    "and",
    "or",
    "unless",
    "on",
    "ignoring",
    "group_left",
    "bool",
    ">",
    "-",
    "1e308",
    "NaN",
    "Inf",
    "label_replace",
    ",",
    "\"$1\"",
    "\"(.*)\"",
    "topk",
    "count_values",
    "absent",
    "vector",
    "time()",
    "scalar",
    "^",
    "%",
    "atan2",
    "quantile_over_time",
    "[0s]",
    "le",
];
const SQL_TOKENS: &[&str] = &[
    "SELECT",
    "*",
    "FROM",
    "spans",
    "logs",
    "metrics",
    "WHERE",
    "GROUP BY",
    "ORDER BY",
    "LIMIT",
    "1",
    "count(*)",
    "attributes['k']",
    "=",
    "'x'",
    "(",
    ")",
    ",",
    "JOIN",
    "USING",
    "(trace_id)",
    "UNION",
    "WITH",
    "t",
    "AS",
    "histogram_quantile",
    "[1,2]",
    "CAST",
    "INT",
    "duration_ns",
    "/",
    "0",
    "::",
    "DROP",
    "TABLE",
    "COPY",
    "TO",
    "'/tmp/x'",
    "INSERT",
    "INTO",
    "VALUES",
    "information_schema.tables",
    "unnest",
    "events",
    "NULL",
    ";",
];

fn soup(tokens: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(tokens), 0..24).prop_map(|v| v.join(" "))
}

const PROMQL_SEEDS: &[&str] = &[
    "sum by (job) (rate(http_requests_total{job=\"cart\", code=~\"5..\"}[5m]))",
    "histogram_quantile(0.95, sum by (le) (rate(latency_bucket[1m]))) > 0.5",
    "label_replace(up, \"host\", \"$1\", \"instance\", \"(.*):.*\") offset 5m",
    "avg_over_time(queue_depth[10m:1m]) unless on(job) absent(up) or vector(1)",
    "topk(3, count_values(\"v\", up)) * on(job) group_left(x) scalar(time())",
];
const SQL_SEEDS: &[&str] = &[
    "SELECT service_name, count(*) FROM spans WHERE status_code = 'error' GROUP BY 1 ORDER BY 2 DESC LIMIT 10",
    "SELECT attributes['http.route'] r, approx_percentile_cont(duration_ns, 0.99) FROM spans GROUP BY r",
    "WITH t AS (SELECT trace_id FROM logs WHERE body LIKE '%timeout%') SELECT * FROM spans JOIN t USING (trace_id)",
    "SELECT histogram_quantile(0.9, bucket_counts, explicit_bounds) FROM metrics WHERE metric_type = 'histogram'",
    "SELECT unnest(events) FROM spans WHERE duration_ns / 1000 > 5 UNION ALL SELECT NULL",
];

/// A valid query with a token fragment spliced in at a random place: inputs that get
/// past the parser's first tokens and into planning and evaluation.
fn spliced(
    seeds: &'static [&'static str],
    tokens: &'static [&'static str],
) -> impl Strategy<Value = String> {
    (
        prop::sample::select(seeds),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        soup(tokens),
    )
        .prop_map(|(seed, at, len, fragment)| {
            let chars: Vec<char> = seed.chars().collect();
            let start = at.index(chars.len() + 1);
            let end = (start + len.index(6)).min(chars.len());
            let mut out: String = chars[..start].iter().collect();
            out.push_str(&fragment);
            out.extend(&chars[end..]);
            out
        })
}

fn engine() -> (tempfile::TempDir, QueryEngine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(StoreConfig::new(dir.path())).expect("open");
    let engine = QueryEngine::new(store, QueryConfig::default()).expect("engine");
    (dir, engine)
}

/// The instant the PromQL properties evaluate at (unix ms).
const AT_MS: i64 = 1_700_000_000_000;

/// An engine over a store holding series the PromQL tokens name: `up` (a gauge) and
/// `rate`-able counters, for jobs "a" and "b", every 15 s over the 30 minutes before
/// [`AT_MS`], so evaluation really runs over data.
async fn engine_with_series() -> (tempfile::TempDir, QueryEngine) {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::metrics::v1::{
        AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
        metric::Data, number_data_point,
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(StoreConfig::new(dir.path())).expect("open");
    let points = |job: &str, slope: f64| -> Vec<NumberDataPoint> {
        (0..120)
            .map(|i| NumberDataPoint {
                attributes: vec![KeyValue {
                    key: "job".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(job.into())),
                    }),
                    ..Default::default()
                }],
                time_unix_nano: ((AT_MS - 1_800_000 + i * 15_000) * 1_000_000) as u64,
                value: Some(number_data_point::Value::AsDouble(slope * i as f64)),
                ..Default::default()
            })
            .collect()
    };
    let mut metrics = Vec::new();
    for (job, slope) in [("a", 1.0), ("b", 3.0)] {
        metrics.push(Metric {
            name: "up".into(),
            data: Some(Data::Gauge(Gauge {
                data_points: points(job, 0.0)
                    .into_iter()
                    .map(|mut p| {
                        p.value = Some(number_data_point::Value::AsDouble(1.0));
                        p
                    })
                    .collect(),
            })),
            ..Default::default()
        });
        metrics.push(Metric {
            name: "http_requests".into(),
            data: Some(Data::Sum(Sum {
                data_points: points(job, slope),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })),
            ..Default::default()
        });
    }
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let converted = periscope_otlp::metrics(&request).expect("convert");
    store
        .append(
            periscope_storage::Signal::Metrics,
            converted.batch.expect("rows"),
        )
        .await
        .expect("append");
    let engine = QueryEngine::new(store, QueryConfig::default()).expect("engine");
    (dir, engine)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

fn run_promql(rt: &tokio::runtime::Runtime, engine: &QueryEngine, q: &str) {
    let _ = rt.block_on(crate::promql::instant_samples(engine, q, AT_MS));
    let _ = rt.block_on(crate::promql::range_query(
        engine,
        q,
        AT_MS - 600_000,
        AT_MS,
        60_000,
    ));
}

fn run_sql(rt: &tokio::runtime::Runtime, engine: &QueryEngine, q: &str) {
    let _ = rt.block_on(engine.check(q));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn log_queries_never_panic(q in prop_oneof![soup(LOGQL_TOKENS), "\\PC{0,80}"]) {
        let _ = crate::logsearch::syntax::parse(&q);
    }
}

thread_local! {
    /// One runtime and engine per test thread, for all cases: PromQL over a store with
    /// series, SQL over an empty one.
    static ENV: (tokio::runtime::Runtime, tempfile::TempDir, QueryEngine) = {
        let rt = runtime();
        let (dir, engine) = rt.block_on(engine_with_series());
        (rt, dir, engine)
    };
}

#[test]
fn the_promql_property_runs_over_series() {
    ENV.with(|(rt, _, engine)| {
        let up = rt
            .block_on(crate::promql::instant_samples(engine, "up", AT_MS))
            .expect("up");
        assert_eq!(up.len(), 2, "{up:?}");
        let rates = rt
            .block_on(crate::promql::instant_samples(
                engine,
                "sum by (job) (rate(http_requests_total[5m]))",
                AT_MS,
            ))
            .expect("rate");
        let mut values: Vec<f64> = rates.iter().map(|(_, v)| *v).collect();
        values.sort_by(f64::total_cmp);
        assert_eq!(values.len(), 2, "{rates:?}");
        assert!((values[0] - 1.0 / 15.0).abs() < 1e-9, "{values:?}");
        assert!((values[1] - 3.0 / 15.0).abs() < 1e-9, "{values:?}");
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn promql_never_panics(q in prop_oneof![soup(PROMQL_TOKENS), spliced(PROMQL_SEEDS, PROMQL_TOKENS), "[a-z_(){}\\[\\]=~!\"0-9.,+*/^<> :@-]{0,80}"]) {
        ENV.with(|(rt, _, engine)| run_promql(rt, engine, &q));
    }

    #[test]
    fn sql_never_panics(q in prop_oneof![soup(SQL_TOKENS), spliced(SQL_SEEDS, SQL_TOKENS), "\\PC{0,80}"]) {
        ENV.with(|(rt, _, engine)| run_sql(rt, engine, &q));
    }
}

#[test]
fn fuzz_corpora_replay() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let rt = runtime();
    let (_dir, engine) = rt.block_on(async { engine() });
    let mut replayed = 0;
    for kind in ["corpus", "regressions"] {
        for target in ["logql", "promql", "sql"] {
            let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) else {
                continue;
            };
            for e in entries.flatten() {
                let data = std::fs::read(e.path()).expect("read corpus file");
                let text = String::from_utf8_lossy(&data);
                match target {
                    "logql" => {
                        let _ = crate::logsearch::syntax::parse(&text);
                    }
                    "promql" => run_promql(&rt, &engine, &text),
                    _ => run_sql(&rt, &engine, &text),
                }
                replayed += 1;
            }
        }
    }
    assert!(
        replayed >= 12,
        "corpus under {} has {replayed} files",
        root.display()
    );
    // The corpus holds valid queries: they must parse.
    for q in ["error", "\"connection refused\" AND service:payment"] {
        assert!(crate::logsearch::syntax::parse(q).is_ok(), "{q}");
    }
}
