//! Outlier detection (DestinationRule `outlierDetection`) as Envoy's detector: a pure state
//! machine over one cluster's endpoints with the clock passed in. Consecutive 5xx (and, in
//! their own count, gateway errors 502/503/504 and connection failures) eject an endpoint at
//! once for `baseEjectionTime` × the times it has been ejected (at most 300 s, or the base if
//! longer); the interval's sweep brings it back when its time is up and lowers the multiplier
//! of endpoints that stayed healthy. At most `maxEjectionPercent` of the endpoints are ejected,
//! but the first ejection is always allowed. Below `minHealthPercent` healthy, the cluster
//! panics and uses every endpoint (0, Istio's default, never panics).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use crate::snapshot::OutlierDetection as Config;

/// How one try ended, as the detector sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    /// No response: connect failure, reset, timeout.
    LocalFailure,
}

/// Why an endpoint was ejected (Envoy's `ejections_*` kinds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Consecutive5xx,
    ConsecutiveGateway,
    ConsecutiveLocal,
}

#[derive(Clone, Debug, Default)]
struct Host {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_local: u32,
    /// Times ejected, lowered by one at each sweep it stays healthy.
    multiplier: u32,
    ejected_until: Option<Instant>,
}

/// Counters Envoy's `/stats` shows under `outlier_detection.`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub ejections_enforced_total: u64,
    pub ejections_overflow: u64,
    pub ejections_enforced_consecutive_5xx: u64,
    pub ejections_enforced_consecutive_gateway_failure: u64,
    pub ejections_enforced_consecutive_local_origin_failure: u64,
}

#[derive(Debug)]
pub struct Detector {
    pub config: Config,
    hosts: HashMap<SocketAddr, Host>,
    next_sweep: Option<Instant>,
    pub counters: Counters,
}

impl Detector {
    pub fn new(config: Config) -> Detector {
        Detector { config, hosts: HashMap::new(), next_sweep: None, counters: Counters::default() }
    }

    /// Keeps the endpoints in `addrs` (a new snapshot's), with their state.
    pub fn retain(&mut self, addrs: &[SocketAddr]) {
        self.hosts.retain(|a, _| addrs.contains(a));
    }

    /// Records how a try to `addr` ended; `Some(reason)` when it ejected the endpoint.
    pub fn record(&mut self, addr: SocketAddr, outcome: Outcome, total: usize, now: Instant) -> Option<Reason> {
        self.sweep(now);
        let c = self.config;
        let host = self.hosts.entry(addr).or_default();
        if host.ejected_until.is_some() {
            return None;
        }
        let (five, gateway, local) = match outcome {
            Outcome::Status(s) if s >= 500 => (true, matches!(s, 502..=504), false),
            Outcome::Status(_) => (false, false, false),
            // A connection failure is a gateway error; unsplit, it is also a 5xx (Envoy maps it to 503).
            Outcome::LocalFailure if c.split_local => (false, false, true),
            Outcome::LocalFailure => (true, true, false),
        };
        let bump = |n: &mut u32, hit: bool| *n = if hit { *n + 1 } else { 0 };
        bump(&mut host.consecutive_5xx, five);
        bump(&mut host.consecutive_gateway, gateway);
        if c.split_local {
            bump(&mut host.consecutive_local, local);
        }
        let reason = if c.consecutive_5xx > 0 && host.consecutive_5xx >= c.consecutive_5xx {
            Reason::Consecutive5xx
        } else if c.consecutive_gateway > 0 && host.consecutive_gateway >= c.consecutive_gateway {
            Reason::ConsecutiveGateway
        } else if c.split_local && c.consecutive_local > 0 && host.consecutive_local >= c.consecutive_local {
            Reason::ConsecutiveLocal
        } else {
            return None;
        };
        host.consecutive_5xx = 0;
        host.consecutive_gateway = 0;
        host.consecutive_local = 0;
        let ejected = self.ejected(now);
        let allowed = ejected == 0 || ((ejected + 1) * 100) as u64 <= u64::from(c.max_ejection_percent) * total as u64;
        if !allowed {
            self.counters.ejections_overflow += 1;
            return None;
        }
        let host = self.hosts.get_mut(&addr).expect("inserted above");
        host.multiplier += 1;
        let base = Duration::from_millis(c.base_ejection_ms);
        let cap = base.max(Duration::from_secs(300));
        host.ejected_until = Some(now + (base * host.multiplier).min(cap));
        self.counters.ejections_enforced_total += 1;
        match reason {
            Reason::Consecutive5xx => self.counters.ejections_enforced_consecutive_5xx += 1,
            Reason::ConsecutiveGateway => self.counters.ejections_enforced_consecutive_gateway_failure += 1,
            Reason::ConsecutiveLocal => self.counters.ejections_enforced_consecutive_local_origin_failure += 1,
        }
        Some(reason)
    }

    /// The interval's sweep, for every interval that has passed: endpoints whose time is up
    /// come back; healthy ones see their multiplier lowered.
    pub fn sweep(&mut self, now: Instant) {
        let interval = Duration::from_millis(self.config.interval_ms.max(1));
        let mut next = *self.next_sweep.get_or_insert(now + interval);
        while next <= now {
            for host in self.hosts.values_mut() {
                match host.ejected_until {
                    Some(until) if until <= next => host.ejected_until = None,
                    Some(_) => {}
                    None => host.multiplier = host.multiplier.saturating_sub(1),
                }
            }
            next += interval;
        }
        self.next_sweep = Some(next);
    }

    pub fn ejected_addrs(&self) -> Vec<SocketAddr> {
        self.hosts.iter().filter(|(_, h)| h.ejected_until.is_some()).map(|(a, _)| *a).collect()
    }

    pub fn is_ejected(&self, addr: &SocketAddr) -> bool {
        self.hosts.get(addr).is_some_and(|h| h.ejected_until.is_some())
    }

    /// Endpoints ejected now (`outlier_detection.ejections_active`).
    pub fn ejected(&self, _now: Instant) -> usize {
        self.hosts.values().filter(|h| h.ejected_until.is_some()).count()
    }

    /// Too few healthy endpoints (below `minHealthPercent`): the cluster uses them all.
    pub fn panics(&self, total: usize, now: Instant) -> bool {
        let healthy = total.saturating_sub(self.ejected(now));
        total > 0 && (healthy * 100) < self.config.min_health_percent as usize * total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    fn cfg(c5xx: u32, max_pct: u32) -> Config {
        Config {
            consecutive_5xx: c5xx,
            interval_ms: 1_000,
            base_ejection_ms: 3_000,
            max_ejection_percent: max_pct,
            ..Config::default()
        }
    }

    #[test]
    fn consecutive_errors_eject_and_a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut d = Detector::new(cfg(3, 100));
        let (a, b) = (addr(1), addr(2));
        for _ in 0..2 {
            assert_eq!(d.record(a, Outcome::Status(500), 2, t0), None);
        }
        assert_eq!(d.record(a, Outcome::Status(200), 2, t0), None, "a success resets the run");
        for _ in 0..2 {
            d.record(a, Outcome::Status(503), 2, t0);
        }
        assert_eq!(
            d.record(a, Outcome::LocalFailure, 2, t0),
            Some(Reason::Consecutive5xx),
            "a connect failure counts as a 5xx"
        );
        assert!(d.is_ejected(&a) && !d.is_ejected(&b));
        assert_eq!(d.counters.ejections_enforced_consecutive_5xx, 1);
        assert_eq!(d.record(a, Outcome::Status(500), 2, t0), None, "an ejected endpoint is not counted");
    }

    #[test]
    fn ejection_time_grows_with_each_ejection_and_the_sweep_brings_it_back() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut d = Detector::new(cfg(1, 100));
        let a = addr(1);
        d.record(a, Outcome::Status(500), 1, t0);
        d.sweep(t0 + s(2));
        assert!(d.is_ejected(&a), "3 s base");
        d.sweep(t0 + s(3));
        assert!(!d.is_ejected(&a), "back at the sweep after its time");
        d.record(a, Outcome::Status(500), 1, t0 + s(3));
        d.sweep(t0 + s(8));
        assert!(d.is_ejected(&a), "second ejection: 2 × 3 s");
        d.sweep(t0 + s(9));
        assert!(!d.is_ejected(&a));
        // Healthy sweeps lower the multiplier again: after two, a third error ejects for 3 s.
        d.sweep(t0 + s(11));
        d.record(a, Outcome::Status(500), 1, t0 + s(11));
        d.sweep(t0 + s(14));
        assert!(!d.is_ejected(&a));
    }

    #[test]
    fn max_ejection_percent_bounds_ejections_but_the_first_is_always_allowed() {
        let t0 = Instant::now();
        let mut d = Detector::new(cfg(1, 10));
        assert_eq!(
            d.record(addr(1), Outcome::Status(500), 2, t0),
            Some(Reason::Consecutive5xx),
            "the first, although 50% > 10%"
        );
        assert_eq!(d.record(addr(2), Outcome::Status(500), 2, t0), None);
        assert_eq!(d.counters.ejections_overflow, 1);
        let mut all = Detector::new(cfg(1, 100));
        all.record(addr(1), Outcome::Status(500), 2, t0);
        assert!(all.record(addr(2), Outcome::Status(500), 2, t0).is_some());
        assert!(!all.panics(2, t0), "minHealthPercent 0 never panics");
        all.config.min_health_percent = 50;
        assert!(all.panics(2, t0));
    }

    #[test]
    fn gateway_errors_and_split_local_failures_have_their_own_counts() {
        let t0 = Instant::now();
        let mut d = Detector::new(Config { consecutive_5xx: 0, consecutive_gateway: 2, ..cfg(0, 100) });
        d.record(addr(1), Outcome::Status(500), 1, t0);
        assert_eq!(d.record(addr(1), Outcome::Status(502), 1, t0), None, "500 is not a gateway error");
        assert_eq!(d.record(addr(1), Outcome::Status(504), 1, t0), Some(Reason::ConsecutiveGateway));
        let mut split = Detector::new(Config { split_local: true, consecutive_local: 2, ..cfg(5, 100) });
        split.record(addr(1), Outcome::LocalFailure, 1, t0);
        assert_eq!(split.record(addr(1), Outcome::LocalFailure, 1, t0), Some(Reason::ConsecutiveLocal));
    }
}
