//! The store's background tasks: the flusher (flush by size or age, retention, deletion
//! of dropped files once their grace period is over, and a last flush at shutdown) and
//! the compactor it starts, which runs compaction rounds on a timer.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tracing::warn;

use super::Store;

impl Store {
    /// Whether the head is due for a flush (by size or by age).
    fn flush_due(&self) -> bool {
        let state = self.inner.state.read();
        let cfg = &self.inner.config;
        state.head.active_bytes() >= cfg.flush_bytes
            // Under pressure, flush early so ingest is refused only while a flush runs.
            || self.buffered_bytes() >= cfg.max_buffered_bytes / 2
            || state
                .head
                .oldest_active()
                .is_some_and(|t| t.elapsed() >= cfg.flush_interval)
    }

    /// Runs compaction rounds every [`CompactionConfig::interval`] until `shutdown`
    /// resolves; a merge running then is given up.
    async fn run_compactor(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let interval = self.inner.config.compaction.interval;
        if interval.is_zero() {
            return;
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            self.compact().await;
        }
    }

    /// Runs flushes by size and age, and retention, until `shutdown` resolves, then
    /// flushes once more.
    pub async fn run_flusher(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let compactor = tokio::spawn(self.clone().run_compactor(shutdown.clone()));
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_retention: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            if self.flush_due()
                && let Err(error) = self.flush().await
            {
                warn!(%error, "Flush failed, will retry.");
            }
            if last_retention.is_none_or(|t| t.elapsed() >= self.inner.config.retention_interval) {
                last_retention = Some(Instant::now());
                if let Err(error) = self.apply_retention().await {
                    warn!(%error, "Applying retention failed, will retry.");
                }
                // Made again once what retention dropped is deleted; not more often,
                // since a try on a full disk holds its free space for a moment.
                if self.inner.doomed.is_empty() {
                    self.inner.reserve.ensure();
                }
            }
            self.delete_doomed();
        }
        self.inner.stopping.store(true, Ordering::Relaxed);
        let _ = compactor.await;
        if let Err(error) = self.flush().await {
            warn!(%error, "Final flush at shutdown failed; the WAL keeps the rows for the next start.");
        }
    }
}
