//! The engine's scheduling and commits, run for real: a real store and query engine
//! evaluate the rules, a recording sink sees every evaluation's series (and when it
//! arrived), and a gate holds one expression's evaluation back to make its group slow.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use periscope_query::{QueryConfig, QueryEngine};
use periscope_storage::{Store, StoreConfig};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{Alerting, now_ms};
use crate::config::{AlertingConfig, AlertingSection};
use crate::metrics::AlertingMetrics;
use crate::rules::RuleExpr;
use crate::schedule::MAX_EVALUATING;
use crate::series::{SeriesSample, SeriesSink};
use crate::source::{Evaluate, Sources};
use crate::state::Instance;

/// Every sample written, with the wall-clock time it arrived (Unix ms).
#[derive(Default)]
struct Recorder {
    samples: Mutex<Vec<(SeriesSample, i64)>>,
}

#[async_trait]
impl SeriesSink for Recorder {
    async fn write(&self, samples: Vec<SeriesSample>) -> Result<(), String> {
        let at = now_ms();
        self.samples
            .lock()
            .extend(samples.into_iter().map(|s| (s, at)));
        Ok(())
    }
}

impl Recorder {
    /// (evaluation time, arrival time) of the samples of series `name`.
    fn times(&self, name: &str) -> Vec<(i64, i64)> {
        self.samples
            .lock()
            .iter()
            .filter(|(s, _)| s.labels.get("__name__").map(String::as_str) == Some(name))
            .map(|(s, at)| (s.timestamp_ms, *at))
            .collect()
    }
}

/// Holds back every evaluation of one PromQL expression until opened.
struct Gate {
    expr: &'static str,
    open: watch::Sender<bool>,
    entered: AtomicUsize,
}

impl Gate {
    fn new(expr: &'static str) -> Arc<Gate> {
        Arc::new(Gate {
            expr,
            open: watch::channel(false).0,
            entered: AtomicUsize::new(0),
        })
    }

    fn entered(&self) -> usize {
        self.entered.load(Ordering::SeqCst)
    }
}

/// The real sources, behind the gate.
struct Gated {
    sources: Sources,
    gate: Arc<Gate>,
}

#[async_trait]
impl Evaluate for Gated {
    async fn eval(&self, expr: &RuleExpr, ts: i64) -> Result<Vec<Instance>, String> {
        if matches!(expr, RuleExpr::PromQL(q) if q == self.gate.expr) {
            self.gate.entered.fetch_add(1, Ordering::SeqCst);
            let mut open = self.gate.open.subscribe();
            let _ = open.wait_for(|o| *o).await;
        }
        self.sources.eval(expr, ts).await
    }
}

/// A running engine over an empty store.
struct Harness {
    alerting: Alerting,
    tasks: JoinSet<()>,
    stop: watch::Sender<bool>,
    sink: Arc<Recorder>,
    metrics: AlertingMetrics,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(rules: &str, gate: &Arc<Gate>) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let rules_file: PathBuf = dir.path().join("rules.yml");
        std::fs::write(&rules_file, rules).expect("rules written");
        let store = Store::open(StoreConfig::new(dir.path().join("data"))).expect("store opens");
        let engine = QueryEngine::new(store.clone(), QueryConfig::default()).expect("engine");
        let sources = Sources { engine, store };
        let config = AlertingConfig::resolve(
            AlertingSection::default(),
            vec![rules_file],
            vec![],
            "http://periscope".into(),
            dir.path().join("alerting"),
        )
        .expect("config");
        let sink = Arc::new(Recorder::default());
        let metrics = AlertingMetrics::default();
        let (stop, stopped) = watch::channel(false);
        let gated = Arc::new(Gated {
            sources: sources.clone(),
            gate: gate.clone(),
        });
        let (alerting, tasks) = Alerting::start_with(
            config,
            sources,
            gated,
            Some(sink.clone()),
            metrics.clone(),
            stopped,
        )
        .await
        .expect("engine starts");
        Harness {
            alerting,
            tasks,
            stop,
            sink,
            metrics,
            _dir: dir,
        }
    }

    /// Skipped ticks of group `name`.
    fn missed(&self, name: &str) -> u64 {
        let view = self.alerting.view();
        let group = view
            .groups
            .iter()
            .find(|g| g.group.name == name)
            .expect("the group exists");
        self.metrics
            .iterations_missed
            .get_or_create(&vec![("rule_group", group.metric_name())])
            .get()
    }

    async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Waits (up to 10 s) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const SLOW_AND_FAST: &str = "groups:
- name: slow
  interval: 200ms
  rules:
  - record: slow_value
    expr: vector(2)
- name: fast
  interval: 50ms
  rules:
  - record: fast_value
    expr: vector(1)
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_group_holds_up_no_other_group_and_skips_the_ticks_it_missed() {
    let gate = Gate::new("vector(2)");
    let h = Harness::start(SLOW_AND_FAST, &gate).await;
    until("the slow group's first evaluation", || gate.entered() == 1).await;
    let held_from = now_ms();
    // The fast group keeps to its 50 ms ticks while the slow one is held: evaluated one
    // group after the other, it would not be evaluated at all until the gate opens.
    let fast_since = |from: i64| {
        h.sink
            .times("fast_value")
            .iter()
            .filter(|(_, at)| *at >= from)
            .count()
    };
    until(
        "twenty fast evaluations while the slow group is held",
        || fast_since(held_from) >= 20,
    )
    .await;
    let fast = h.sink.times("fast_value");
    for pair in fast.windows(2) {
        let step = pair[1].0 - pair[0].0;
        assert!(
            step > 0 && step % 50 == 0,
            "evaluation times off the group's ticks: {fast:?}"
        );
    }
    assert!(h.sink.times("slow_value").is_empty());
    assert_eq!(gate.entered(), 1, "a group evaluated twice at once");

    gate.open.send_replace(true);
    let released = now_ms();
    until(
        "two evaluations of the slow group after its release",
        || h.sink.times("slow_value").len() >= 3,
    )
    .await;
    let slow: Vec<i64> = h
        .sink
        .times("slow_value")
        .iter()
        .map(|(ts, _)| *ts)
        .collect();
    // The held evaluation, then the latest due tick and the ones after it: none of the
    // ticks that passed meanwhile is evaluated late, and all stay on the 200 ms ticks.
    assert!(slow.len() >= 2, "{slow:?}");
    assert!(slow[0] <= held_from, "{slow:?}");
    for ts in &slow[1..] {
        assert!(
            *ts > released - 200,
            "a skipped tick was evaluated late: {slow:?}, released at {released}"
        );
        assert_eq!((ts - slow[0]) % 200, 0, "off the group's ticks: {slow:?}");
    }
    // The ticks between the held one and the first after the release were skipped and
    // counted.
    let skipped = (slow[1] - slow[0]) / 200 - 1;
    let missed = h.missed("slow");
    assert!(skipped >= 3, "held for {} ms only", released - held_from);
    // Later evaluations may skip ticks too on a loaded machine, never more than passed.
    assert!(
        missed >= skipped as u64,
        "missed {missed}, skipped {skipped}: {slow:?}"
    );
    assert!(
        missed as i64 <= (now_ms() - slow[0]) / 200,
        "missed {missed}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_than_max_evaluating_groups_evaluate_at_once() {
    let gate = Gate::new("vector(9)");
    let mut rules = String::from("groups:\n");
    let groups = MAX_EVALUATING + 2;
    for i in 0..groups {
        rules.push_str(&format!(
            "- name: g{i}\n  interval: 100ms\n  rules:\n  - record: g{i}_value\n    expr: vector(9)\n"
        ));
    }
    let h = Harness::start(&rules, &gate).await;
    until("the first evaluations", || gate.entered() == MAX_EVALUATING).await;
    // Nothing more starts while every slot is taken: a bound on an absence needs a
    // stretch of time (three of the groups' 100 ms ticks).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gate.entered(), MAX_EVALUATING);
    gate.open.send_replace(true);
    // The groups that waited for a slot get it.
    until("every group's evaluation", || {
        (0..groups).all(|i| !h.sink.times(&format!("g{i}_value")).is_empty())
    })
    .await;
    h.stop().await;
}

#[tokio::test]
async fn the_journal_is_written_off_the_async_worker_while_evaluations_go_on() {
    // A current-thread runtime: if the journal's write and fsync ran on its one worker,
    // nothing else could run until they were done.
    let gate = Gate::new("never evaluated");
    let h = Harness::start(
        "groups:\n- name: fast\n  interval: 50ms\n  rules:\n  - record: fast_value\n    expr: vector(1)\n",
        &gate,
    )
    .await;
    let progress = Arc::new(AtomicU64::new(0));
    let ticker = tokio::spawn({
        let progress = progress.clone();
        async move {
            loop {
                progress.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    // One append is held 400 ms; what the runtime did meanwhile is measured.
    let armed = Arc::new(AtomicBool::new(true));
    let seen: Arc<Mutex<Option<(u64, usize)>>> = Arc::default();
    h.alerting.outbox().before_append({
        let (progress, seen, sink) = (progress.clone(), seen.clone(), h.sink.clone());
        move || {
            if !armed.swap(false, Ordering::SeqCst) {
                return;
            }
            let ticks = progress.load(Ordering::SeqCst);
            let evaluations = sink.times("fast_value").len();
            std::thread::sleep(Duration::from_millis(400));
            *seen.lock() = Some((
                progress.load(Ordering::SeqCst) - ticks,
                sink.times("fast_value").len() - evaluations,
            ));
        }
    });
    until("a held commit", || seen.lock().is_some()).await;
    let (ticks, evaluations) = seen.lock().unwrap_or_default();
    assert!(
        ticks >= 10,
        "another task ran {ticks} times during a 400 ms commit"
    );
    assert!(
        evaluations >= 2,
        "the group was evaluated {evaluations} times during a 400 ms commit"
    );
    ticker.abort();
    h.stop().await;
}
