//! Alerting wiring: the sink that stores `ALERTS` and recorded series through the ingest
//! path, and `periscope rules check`.

use std::path::PathBuf;

use async_trait::async_trait;
use clap::{Args, Subcommand};
use periscope_alerting::{SeriesSample, SeriesSink, Sources};
use periscope_collector::Ingest;
use periscope_collector::remote_write::{Label, Sample, TimeSeries, WriteRequest, to_otlp};
use periscope_query::{QueryConfig, QueryEngine};
use periscope_storage::{Store, StoreConfig};

/// Stores samples as remote-written series: their labels are Prometheus's already.
pub struct IngestSink(pub Ingest);

#[async_trait]
impl SeriesSink for IngestSink {
    async fn write(&self, samples: Vec<SeriesSample>) -> Result<(), String> {
        let request = WriteRequest {
            timeseries: samples
                .into_iter()
                .map(|s| TimeSeries {
                    labels: s
                        .labels
                        .into_iter()
                        .map(|(name, value)| Label { name, value })
                        .collect(),
                    samples: vec![Sample {
                        value: s.value,
                        timestamp: s.timestamp_ms,
                    }],
                    exemplars: Vec::new(),
                    histograms: Vec::new(),
                })
                .collect(),
            metadata: Vec::new(),
        };
        let export = to_otlp(&request)?;
        self.0
            .export(&export)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// `periscope rules ...`
#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Check rule files offline: YAML, fields, PromQL, SQL (against Periscope's
    /// tables), log queries and templates. Exits 1 when any file has a problem.
    Check(CheckArgs),
}

/// Arguments of `periscope rules check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Rule files.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Runs a `rules` command; `Ok(false)` when a file has problems.
pub async fn run(cmd: RulesCommand) -> anyhow::Result<bool> {
    let RulesCommand::Check(args) = cmd;
    // SQL rules are planned against the real tables, in an empty scratch store.
    let scratch = tempfile::tempdir()?;
    let store = Store::open(StoreConfig::new(scratch.path()))?;
    let engine = QueryEngine::new(store.clone(), QueryConfig::default())?;
    let sources = Sources { engine, store };
    let mut ok = true;
    for file in &args.files {
        println!("Checking {}", file.display());
        match periscope_alerting::load(std::slice::from_ref(file), &sources).await {
            Ok(groups) => {
                let n: usize = groups.iter().map(|g| g.rules.len()).sum();
                println!("  SUCCESS: {n} rules found");
            }
            Err(problems) => {
                ok = false;
                println!("  FAILED:");
                for p in &problems.0 {
                    println!("{p}");
                }
            }
        }
    }
    Ok(ok)
}
