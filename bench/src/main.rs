//! `periscope-bench`: Periscope's benchmarks, beside the product and not inside it. Each
//! subcommand starts the real `periscope` binary (see [`harness`]), sends it realistic
//! telemetry and prints what it costs: throughput, server CPU per item from /proc, bytes
//! on disk, query latency. docs/performance.md quotes their figures.
//!
//! ```text
//! cargo build --release
//! cargo run --release -p periscope-bench -- ingest --spans 1000000
//! ```

mod agent;
mod harness;
mod ingest;
mod logs;
mod metrics;
mod remote_write;
mod traces;
mod ui;

use clap::{Parser, Subcommand};

/// The benchmarks ran inside the `periscope` binary before they had a crate of their own;
/// the same allocator keeps the load generator's cost, and so every figure, unchanged.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (its index in mimalloc 3's `mi_option_e`).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Measure Periscope: each benchmark starts the `periscope` binary built beside this one.
#[derive(Debug, Parser)]
#[command(name = "periscope-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Ingest throughput, CPU per span and bytes per span over OTLP/gRPC.
    Ingest(ingest::IngestArgs),
    /// Log ingest with indexing, search latency against `rg`, and bytes on disk.
    Logs(logs::LogsArgs),
    /// Trace-by-id, trace search, service graph and RED latency over millions of spans.
    Traces(traces::TracesArgs),
    /// Remote-write ingest, bytes per sample and PromQL latency, side by side with a real
    /// Prometheus.
    Metrics(metrics::MetricsArgs),
    /// Server render time of the heaviest UI pages: a 10,000-span trace, a 200-service
    /// map, a log search with 1,000 hits.
    Ui(ui::UiArgs),
    /// The agent's cost in a gateway: CPU per request and throughput with the agent on
    /// and off, side by side.
    Agent(agent::AgentArgs),
}

fn main() -> anyhow::Result<()> {
    // As the `periscope` binary does (see its main.rs): freed memory goes back at once.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option; called at start, before other threads.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli.command))
}

/// Runs a benchmark.
async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Ingest(args) => ingest::run(args).await,
        BenchCommand::Logs(args) => logs::run(args).await,
        BenchCommand::Traces(args) => traces::run(args).await,
        BenchCommand::Metrics(args) => metrics::run(args).await,
        BenchCommand::Ui(args) => ui::run(args).await,
        BenchCommand::Agent(args) => agent::run(args).await,
    }
}
