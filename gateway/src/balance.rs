//! Upstream pools: targets with health and in-flight counts, and the two balancing
//! policies.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use crate::config::{Balance, UpstreamConfig};

/// One target of a pool.
#[derive(Debug)]
pub struct Target {
    /// `host:port`.
    pub addr: String,
    /// Eligible for traffic (health checks clear it).
    pub healthy: AtomicBool,
    /// Requests in flight.
    pub outstanding: AtomicUsize,
    /// Consecutive failed probes.
    pub(crate) failures: AtomicU32,
    /// Consecutive successful probes.
    pub(crate) successes: AtomicU32,
}

/// A pool of equivalent targets.
#[derive(Debug)]
pub struct Pool {
    /// Name from the config.
    pub name: String,
    /// Targets in config order.
    pub targets: Vec<Target>,
    policy: Balance,
    next: AtomicUsize,
}

/// Counts a request in flight on a target until dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Target);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pool {
    /// A pool with every target healthy.
    pub fn new(config: &UpstreamConfig) -> Pool {
        Pool {
            name: config.name.get_ref().clone(),
            targets: config
                .targets
                .iter()
                .map(|addr| Target {
                    addr: addr.clone(),
                    healthy: AtomicBool::new(true),
                    outstanding: AtomicUsize::new(0),
                    failures: AtomicU32::new(0),
                    successes: AtomicU32::new(0),
                })
                .collect(),
            policy: config.balance,
            next: AtomicUsize::new(0),
        }
    }

    /// Picks a healthy target, preferring one not in `tried` (a retry goes elsewhere when
    /// it can). `None` when no target is healthy.
    pub fn pick(&self, tried: &[usize]) -> Option<usize> {
        let n = self.targets.len();
        let healthy = |i: &usize| self.targets[*i].healthy.load(Ordering::Relaxed);
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let order = (0..n).map(|k| (start + k) % n);
        let fresh: Vec<usize> = order
            .clone()
            .filter(healthy)
            .filter(|i| !tried.contains(i))
            .collect();
        let candidates = if fresh.is_empty() {
            order.filter(healthy).collect()
        } else {
            fresh
        };
        match self.policy {
            Balance::RoundRobin => candidates.first().copied(),
            // Ties go to the first in rotation order, so equal loads still spread.
            Balance::LeastOutstanding => candidates
                .iter()
                .copied()
                .min_by_key(|i| self.targets[*i].outstanding.load(Ordering::Relaxed)),
        }
    }

    /// Marks a request in flight on target `i`.
    pub fn start(&self, i: usize) -> InFlight<'_> {
        let t = &self.targets[i];
        t.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(policy: Balance, n: usize) -> Pool {
        let cfg: UpstreamConfig = toml::from_str(&format!(
            "name = \"p\"\ntargets = [{}]\n",
            (0..n)
                .map(|i| format!("\"127.0.0.1:{}\"", 9000 + i))
                .collect::<Vec<_>>()
                .join(",")
        ))
        .expect("config");
        Pool {
            policy,
            ..Pool::new(&cfg)
        }
    }

    #[test]
    fn round_robin_cycles_and_skips_unhealthy() {
        let p = pool(Balance::RoundRobin, 3);
        let picks: Vec<_> = (0..6).filter_map(|_| p.pick(&[])).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        p.targets[1].healthy.store(false, Ordering::Relaxed);
        let picks: Vec<_> = (0..4).filter_map(|_| p.pick(&[])).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        for t in &p.targets {
            t.healthy.store(false, Ordering::Relaxed);
        }
        assert_eq!(p.pick(&[]), None);
    }

    #[test]
    fn retries_prefer_an_untried_target() {
        let p = pool(Balance::RoundRobin, 2);
        for _ in 0..4 {
            assert_eq!(p.pick(&[0]), Some(1));
        }
        // Only one target left: it is used again rather than failing.
        p.targets[1].healthy.store(false, Ordering::Relaxed);
        assert_eq!(p.pick(&[0]), Some(0));
    }

    #[test]
    fn least_outstanding_avoids_the_busy_target() {
        let p = pool(Balance::LeastOutstanding, 3);
        let _a = p.start(0);
        let _b = p.start(0);
        let _c = p.start(2);
        for _ in 0..5 {
            assert_eq!(p.pick(&[]), Some(1));
        }
        drop(_a);
        drop(_b);
        let _d = p.start(1);
        assert_eq!(p.pick(&[]), Some(0));
    }
}
