//! A latency histogram in microseconds: exact below 256 µs, then 128 buckets per power of two
//! (under 0.8% error), fixed size (36 KB), so a long run costs no more memory than a short one.
//! One per load worker, merged at the end; pure, no clock.

const EXACT: u64 = 256;
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Octaves above the exact range: up to 2^40 µs (12 days).
const OCTAVES: usize = 33;
const BUCKETS: usize = EXACT as usize + OCTAVES * SUB as usize;

#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    counts: Vec<u64>,
    pub count: u64,
    pub min: u64,
    pub max: u64,
    sum: f64,
    sum_squares: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; BUCKETS], count: 0, min: u64::MAX, max: 0, sum: 0.0, sum_squares: 0.0 }
    }
}

fn index(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let octave = 63 - v.leading_zeros(); // ≥ 8
    let sub = (v >> (octave - SUB_BITS)) - SUB; // 0..SUB
    (EXACT + u64::from(octave - 8) * SUB + sub).min(BUCKETS as u64 - 1) as usize
}

/// The smallest and largest value of bucket `i`.
fn bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < EXACT {
        return (i, i);
    }
    let octave = (i - EXACT) / SUB + 8;
    let sub = (i - EXACT) % SUB;
    let width = 1u64 << (octave - u64::from(SUB_BITS));
    let low = (SUB + sub) * width;
    (low, low + width - 1)
}

impl Histogram {
    pub fn record(&mut self, micros: u64) {
        self.counts[index(micros)] += 1;
        self.count += 1;
        self.min = self.min.min(micros);
        self.max = self.max.max(micros);
        let v = micros as f64;
        self.sum += v;
        self.sum_squares += v * v;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        self.sum_squares += other.sum_squares;
    }

    /// Mean in µs (0 when empty).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Population standard deviation in µs.
    pub fn stddev(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let m = self.mean();
        (self.sum_squares / self.count as f64 - m * m).max(0.0).sqrt()
    }

    /// The value at `percentile` (0–100) in µs: the middle of the bucket that holds it, kept
    /// within the recorded min and max. 0 when empty.
    pub fn percentile(&self, percentile: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        if percentile >= 100.0 {
            return self.max;
        }
        let rank = ((percentile / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, hi) = bounds(i);
                return (lo + (hi - lo) / 2).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// Non-empty buckets as (representative value in µs, count), in order: what a coarser
    /// table (fortio's ranges) is rebuilt from.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, c)| {
            let (lo, hi) = bounds(i);
            ((lo + (hi - lo) / 2).clamp(self.min, self.max), *c)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_range_without_gaps() {
        let mut next = 0;
        for i in 0..BUCKETS {
            let (lo, hi) = bounds(i);
            assert_eq!(lo, next, "bucket {i}");
            assert_eq!(index(lo), i);
            assert_eq!(index(hi), i);
            next = hi + 1;
        }
    }

    #[test]
    fn percentiles_are_within_one_percent() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v * 10); // 10 µs .. 100 ms, uniform
        }
        for (p, want) in [(50.0, 50_000.0), (90.0, 90_000.0), (99.0, 99_000.0), (99.9, 99_900.0)] {
            let got = h.percentile(p) as f64;
            assert!((got - want).abs() / want < 0.01, "p{p}: {got} vs {want}");
        }
        assert_eq!(h.percentile(100.0), 100_000);
        assert_eq!(h.percentile(0.0), 10);
        assert!((h.mean() - 50_005.0).abs() < 0.5);
        assert!((h.stddev() - 28_867.5).abs() < 5.0, "{}", h.stddev());
    }

    #[test]
    fn merged_halves_equal_the_whole() {
        let (mut a, mut b, mut whole) = (Histogram::default(), Histogram::default(), Histogram::default());
        for v in 0..5000u64 {
            let x = v * v % 77_777;
            if v % 2 == 0 { &mut a } else { &mut b }.record(x);
            whole.record(x);
        }
        a.merge(&b);
        assert_eq!(a, whole);
        let empty = Histogram::default();
        assert_eq!(empty.percentile(50.0), 0);
        assert_eq!(empty.buckets().count(), 0);
    }
}
