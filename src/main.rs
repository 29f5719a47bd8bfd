//! The `periscope` binary: parses the command line and wires the crates together.

mod alerts;
mod auth;
mod client;
mod config;
mod demo;
mod gateway;
mod http_serve;
mod incoming;
mod logging;
mod server;
mod tls;

use clap::{Parser, Subcommand};

/// mimalloc: the ingest path allocates many small strings per span (protobuf decoding)
/// and glibc's allocator spent a quarter of the server's CPU on them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (its index in mimalloc 3's `mi_option_e`).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed memory before giving it back to the OS, in ms.
///
/// At 0 (given back at once) every export's buffers came back from the kernel as fresh
/// zeroed pages, transparent huge pages 2 MiB at a time: zeroing them was a quarter of
/// the server's CPU during ingest. Held for a second, freed memory is reused by the next
/// exports and the next flush instead, and what a flush frees is still back with the OS
/// a second later, so resident memory stays under the memory budget.
const PURGE_DELAY_MS: std::os::raw::c_long = 1000;

/// Sets mimalloc's purge delay (see [`PURGE_DELAY_MS`]); `MIMALLOC_PURGE_DELAY` in the
/// environment still wins.
fn return_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option; called at start, before other threads.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

/// Periscope: a telemetry backend for microservice architectures.
#[derive(Debug, Parser)]
#[command(name = "periscope", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: OTLP receivers, storage, query APIs.
    Serve(config::ServeArgs),
    /// Run the server with a simulated shop sending it live telemetry (start here).
    Demo(demo::DemoArgs),
    /// Run the reverse proxy with the agent embedded (API gateway or mesh proxy).
    Gateway(gateway::GatewayArgs),
    /// Make access tokens.
    #[command(subcommand)]
    Token(auth::TokenCommand),
    /// Run a SQL query against a running server and print the result.
    Sql(client::SqlArgs),
    /// Work with alert rule files.
    #[command(subcommand)]
    Rules(alerts::RulesCommand),
}

fn main() -> anyhow::Result<()> {
    return_freed_memory_promptly();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => {
            let settings = config::Settings::resolve(args)?;
            logging::init_logging(&settings.log, "info", settings.json_logs, None);
            settings.warn_deprecated_keys();
            runtime.block_on(server::serve(settings))
        }
        Command::Demo(args) => runtime.block_on(demo::run(args)),
        Command::Gateway(args) => {
            logging::init_logging(&args.log, "info", false, None);
            runtime.block_on(gateway::run(args))
        }
        Command::Token(cmd) => auth::run(cmd),
        Command::Sql(args) => runtime.block_on(client::run(args)),
        Command::Rules(cmd) => {
            if !runtime.block_on(alerts::run(cmd))? {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
