//! Batchnorm's per-channel statistics of a batch, in one read.

use super::{BLOCK_ROWS, PARALLEL_MIN, RUN_ROWS};
use rayon::prelude::*;

/// Count, mean and sum of squared deviations from the mean (`M2`) per
/// channel, in f64: the statistics of a set of rows that two sets combine
/// exactly (Chan, Golub and LeVeque 1979), so runs and blocks can be
/// summarized separately and merged in a fixed order.
struct Moments {
    count: f64,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

impl Moments {
    fn empty(c: usize) -> Self {
        Moments {
            count: 0.0,
            mean: vec![0.0; c],
            m2: vec![0.0; c],
        }
    }

    /// Adds a set of `n` rows with means `mean` and deviations `m2`:
    /// `M2 = M2_a + M2_b + delta^2 n_a n_b / n` with `delta` the difference
    /// of the two means.
    fn merge(&mut self, n: f64, mean: impl Iterator<Item = f64>, m2: impl Iterator<Item = f64>) {
        let total = self.count + n;
        let weight = n / total;
        let cross = self.count * n / total;
        for ((m, s), (mb, sb)) in self
            .mean
            .iter_mut()
            .zip(self.m2.iter_mut())
            .zip(mean.zip(m2))
        {
            let delta = mb - *m;
            *m += delta * weight;
            *s += sb + delta * delta * cross;
        }
        self.count = total;
    }
}

/// The moments of rows `rows` of `x`, a run at a time: the first read sums
/// the run to a provisional centre `c0` (its f32 mean), the second, from
/// cache, sums `x - c0` and `(x - c0)^2`; then `mean = c0 + d1 / n` and
/// `M2 = d2 - d1^2 / n` (the shifted-data formula: exact whatever `c0` is,
/// and free of cancellation because `c0` is close to the mean).
fn moments_of_rows(x: &[f32], c: usize, rows: std::ops::Range<usize>) -> Moments {
    let mut moments = Moments::empty(c);
    let (mut centre, mut d1, mut d2) = (vec![0.0f32; c], vec![0.0f32; c], vec![0.0f32; c]);
    for r0 in rows.clone().step_by(RUN_ROWS) {
        let run = &x[r0 * c..(r0 + RUN_ROWS).min(rows.end) * c];
        let n = (run.len() / c) as f32;
        centre.fill(0.0);
        for row in run.chunks_exact(c) {
            centre.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
        }
        centre.iter_mut().for_each(|s| *s /= n);
        d1.fill(0.0);
        d2.fill(0.0);
        for row in run.chunks_exact(c) {
            for i in 0..c {
                let d = row[i] - centre[i];
                d1[i] += d;
                d2[i] += d * d;
            }
        }
        let n = n as f64;
        let mean = centre
            .iter()
            .zip(&d1)
            .map(|(&c0, &s)| c0 as f64 + s as f64 / n);
        let m2 = d1
            .iter()
            .zip(&d2)
            .map(|(&s, &q)| q as f64 - (s as f64).powi(2) / n);
        moments.merge(n, mean, m2);
    }
    moments
}

/// Per-channel mean and biased variance (`sum((x - mean)^2) / rows`) in one
/// read of `x`: each run of rows is centred on its own mean while it is in
/// cache, and the runs' moments are merged exactly. (The one-pass
/// `E[x^2] - mean^2` would cancel catastrophically when `|mean| >> sigma`.)
pub fn mean_and_variance(x: &[f32], c: usize) -> (Vec<f32>, Vec<f32>) {
    assert!(
        c > 0 && x.len().is_multiple_of(c),
        "batch norm: {} values are not rows of {c}",
        x.len()
    );
    let rows = x.len() / c;
    let block = |b: usize| moments_of_rows(x, c, b * BLOCK_ROWS..((b + 1) * BLOCK_ROWS).min(rows));
    let blocks = rows.div_ceil(BLOCK_ROWS);
    let partials: Vec<Moments> = if x.len() < PARALLEL_MIN {
        (0..blocks).map(block).collect()
    } else {
        (0..blocks).into_par_iter().map(block).collect()
    };
    let mut total = Moments::empty(c);
    for p in partials {
        total.merge(p.count, p.mean.into_iter(), p.m2.into_iter());
    }
    let n = total.count.max(1.0);
    (
        total.mean.iter().map(|&m| m as f32).collect(),
        total.m2.iter().map(|&s| (s / n) as f32).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch_norm::test_data as data;

    #[test]
    fn statistics_match_f64_and_survive_a_large_mean() {
        for &(rows, c) in &[(1, 3), (33, 5), (4096, 64), (16384, 7)] {
            let x = data(rows, c);
            let (mean, var) = mean_and_variance(&x, c);
            for ch in 0..c {
                let v: Vec<f64> = x.iter().skip(ch).step_by(c).map(|&v| v as f64).collect();
                let m = v.iter().sum::<f64>() / rows as f64;
                let s = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / rows as f64;
                // The mean is ~55 and the spread ~3: a one-pass formula would
                // lose ~3 digits here; the two-pass one keeps f32 precision.
                assert!(
                    (mean[ch] as f64 - m).abs() <= 1e-6 * m.abs(),
                    "{rows}x{c} mean"
                );
                assert!(
                    (var[ch] as f64 - s).abs() <= 1e-5 * s.max(1e-3),
                    "{rows}x{c} var {} vs {s}",
                    var[ch]
                );
            }
        }
    }

    #[test]
    fn reductions_do_not_depend_on_the_thread_count() {
        let x = data(20000, 16);
        let serial = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let a = serial.install(|| mean_and_variance(&x, 16));
        let b = mean_and_variance(&x, 16);
        assert_eq!(a, b);
    }
}
