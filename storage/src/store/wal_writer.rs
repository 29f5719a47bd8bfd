//! The WAL writer thread: the one writer of the write-ahead log. It takes every append
//! waiting in its bounded queue, writes their records in one write and one `fdatasync`
//! (group commit), then puts the rows in the head and acknowledges them; an append is
//! acknowledged only after the fsync of its group returned. A rotation (asked by a flush)
//! starts a new WAL segment and freezes the head in one step with respect to appends.

use std::sync::Arc;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::Inner;
use crate::budget::Reservation;
use crate::error::{Error, Result};
use crate::schema::Signal;
use crate::wal::Log;

pub(super) enum Command {
    Append {
        signal: Signal,
        batch: RecordBatch,
        /// Given back if the command is dropped before its rows reach the head.
        reservation: Reservation,
        record: Vec<u8>,
        done: oneshot::Sender<Result<()>>,
    },
    Rotate {
        done: oneshot::Sender<Result<u64>>,
    },
}

/// How many appends may wait for the WAL writer.
pub(super) const COMMAND_QUEUE: usize = if cfg!(test) { 64 } else { 4096 };

/// The WAL writer thread: group commit of every queued append, and rotation on request.
pub(super) fn run(inner: Arc<Inner>, mut log: Log, mut rx: mpsc::Receiver<Command>) {
    let mut group: Vec<Command> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < 8192 {
            match rx.try_recv() {
                Ok(cmd) => group.push(cmd),
                Err(_) => break,
            }
        }
        let mut appends = Vec::new();
        for cmd in group.drain(..) {
            match cmd {
                Command::Append { .. } => appends.push(cmd),
                Command::Rotate { done } => {
                    commit(&inner, &mut log, std::mem::take(&mut appends));
                    let _ = done.send(Ok(rotate(&inner, &mut log)));
                }
            }
        }
        commit(&inner, &mut log, appends);
    }
    debug!("WAL writer stopped.");
}

/// Starts a new segment and freezes the head, atomically with respect to appends.
fn rotate(inner: &Inner, log: &mut Log) -> u64 {
    let upto = log.rotate();
    inner.state.write().head.freeze();
    upto
}

fn commit(inner: &Inner, log: &mut Log, appends: Vec<Command>) {
    if appends.is_empty() {
        return;
    }
    let total: usize = appends
        .iter()
        .map(|c| match c {
            Command::Append { record, .. } => record.len(),
            Command::Rotate { .. } => 0,
        })
        .sum();
    let mut buf = Vec::with_capacity(total);
    for c in &appends {
        if let Command::Append { record, .. } = c {
            buf.extend_from_slice(record);
        }
    }
    let started = Instant::now();
    let result = log.append(&buf);
    inner
        .metrics
        .wal_fsync_seconds
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(()) => {
            inner.metrics.wal_fsyncs.inc();
            inner.metrics.wal_bytes.inc_by(buf.len() as u64);
            let mut dones = Vec::with_capacity(appends.len());
            let mut to_index = Vec::new();
            {
                let mut state = inner.state.write();
                for c in appends {
                    if let Command::Append {
                        signal,
                        batch,
                        reservation,
                        done,
                        ..
                    } = c
                    {
                        inner
                            .metrics
                            .rows_written
                            .get_or_create(&vec![("signal", signal.name())])
                            .inc_by(batch.num_rows() as u64);
                        let bytes = reservation.into_head();
                        if signal == Signal::Logs {
                            let seq = state.head.push(signal, batch.clone(), bytes);
                            to_index.push((seq, batch));
                        } else {
                            state.head.push(signal, batch, bytes);
                        }
                        dones.push(done);
                    }
                }
            }
            // Outside the state lock: the index queue may make this thread wait.
            for (seq, batch) in to_index {
                inner.head_index.add(seq, batch);
            }
            for done in dones {
                let _ = done.send(Ok(()));
            }
        }
        Err(error) => {
            warn!(%error, "WAL write failed; the exports in this group are refused.");
            let message = error.to_string();
            let os = match &error {
                Error::Io { source, .. } => source.raw_os_error(),
                _ => None,
            };
            for c in appends {
                if let Command::Append { done, .. } = c {
                    let source = match os {
                        Some(code) => std::io::Error::from_raw_os_error(code),
                        None => std::io::Error::other(message.clone()),
                    };
                    let _ = done.send(Err(Error::Io {
                        op: "append to WAL",
                        path: inner.wal_dir.clone(),
                        source,
                    }));
                }
            }
        }
    }
}
