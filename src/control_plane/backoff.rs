//! Restarts with back-off, as the kubelet's CrashLoopBackOff: the pods the local runner
//! supervises and the addons the control plane runs wait this long before starting again.

use std::time::Duration;

/// Kubernetes forgets a container's crash history once it has run this long.
const HEALTHY_RESET: Duration = Duration::from_secs(600);

/// The back-off before restart number `crashes` (1-based, counted since the last reset):
/// 1 s doubling to at most 5 min is Kubernetes'; locally it starts at 1 s and stops at 30 s.
pub fn backoff(crashes: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << crashes.min(6))).min(Duration::from_secs(30))
}

/// Crashes counted toward the back-off after a run of `ran`: a run of ten minutes or more
/// starts over, as the kubelet does.
pub fn crashes_after(previous: u32, ran: Duration) -> u32 {
    if ran >= HEALTHY_RESET {
        1
    } else {
        previous + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_starts_over_after_ten_healthy_minutes() {
        let mut crashes = 0;
        let mut waits = vec![];
        for _ in 0..8 {
            crashes = crashes_after(crashes, Duration::from_secs(1));
            waits.push(backoff(crashes).as_secs_f64());
        }
        assert_eq!(waits, [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
        // Eleven healthy minutes, then one more crash: the short wait again.
        crashes = crashes_after(crashes, Duration::from_secs(660));
        assert_eq!(backoff(crashes), Duration::from_secs(1));
        assert_eq!(crashes_after(crashes, Duration::from_secs(599)), 2, "nine minutes is not enough");
    }
}
