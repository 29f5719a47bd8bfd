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

/// mimalloc's `allow_thp` option (its index in mimalloc 3's `mi_option_e`).
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 37;

/// How long mimalloc keeps freed memory before giving it back to the OS, in ms.
/// At 0 every page freed was given back at once with an `madvise` whose TLB shootdown
/// interrupted every core: a third of the server's CPU at 100,000 remote-written series
/// (a hash set freed per series was enough). 100 ms keeps memory for the next request.
const PURGE_DELAY_MS: std::os::raw::c_long = 100;

/// Makes mimalloc give freed memory back to the OS soon rather than after a second: a
/// flush frees a whole chunk of rows at a time, and resident memory has to stay under
/// the memory budget (keeping it for 250 ms with transparent huge pages on took the
/// overload test to 245 MiB of its 256). Transparent huge pages are turned off for the process: memory given back
/// and taken again came back as 2 MiB pages the kernel zeroed whole, a quarter of the
/// server's CPU during ingest. `MIMALLOC_PURGE_DELAY` and `MIMALLOC_ALLOW_THP` in the
/// environment still win.
fn return_freed_memory_promptly() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option; called at start, before other threads.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: as above.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0) };
        // mimalloc reads `allow_thp` when it starts, before `main`: turn huge pages off
        // for the process here too, or its regions still fault in 2 MiB pages (a
        // profile of remote-write ingest spent 40 % of the server's CPU zeroing them).
        // SAFETY: prctl with integer arguments only; it changes this process's flags.
        #[cfg(target_os = "linux")]
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
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
