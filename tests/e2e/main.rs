//! End-to-end tests: the real `periscope` binary, driven by real clients (the
//! OpenTelemetry Rust SDK, tonic, reqwest) and read back by SQL and the `parquet` crate.

mod alerting;
mod auth;
mod bad_input;
mod browser;
mod compaction;
mod crash;
mod disk_full;
mod files;
mod gateway;
mod limits;
mod logs;
mod metrics;
mod otel_sdk;
mod overload;
mod promql;
mod retention;
mod sql_api;
mod support;
mod tls;
mod traces;
mod ui;
