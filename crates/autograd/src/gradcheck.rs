//! Gradient checking by central finite differences.
//!
//! For a function `f` of some input tensors, the check contracts the output
//! with a fixed random tensor `r` into the scalar `L = sum(r * f(x))`, takes
//! the analytic `dL/dx` from one backward pass seeded with `r`, and compares
//! it, element by element, with `(L(x + h e_i) - L(x - h e_i)) / 2h`.
//!
//! Everything runs in f32, so the step and tolerances are chosen for it: `L`
//! is accumulated in f64 from f32 outputs whose relative rounding is ~1e-7,
//! so with `h = 1e-2` the rounding noise in a difference quotient is ~1e-5 of
//! the output scale, and the truncation error of the central difference,
//! `h^2 f''' / 6`, ~1e-5 for the smooth ops here. A tolerance of 1e-2
//! relative (plus 1e-3 of the input's largest gradient, for elements whose
//! true gradient is near zero) sits two orders of magnitude above both, and
//! far below any real mistake in a backward (a wrong term is an O(1) error).
//!
//! Where the true gradient is tiny (batchnorm over two rows, say), rounding is
//! all a difference quotient can see, so the slack also includes a noise
//! floor: `4 eps_f32 ||r * y|| / h`, four times the rounding error expected
//! from summing the outputs' independent f32 roundings.
//!
//! ReLU and max pool are not differentiable at their kinks. Where the two
//! one-sided differences disagree, the step straddled a kink and that element
//! is skipped when the check is told to expect kinks; one that skips more than a quarter of its elements fails.

use crate::graph::{Graph, Mode, Var};
use crate::params::ParamStore;
use tensor::Tensor;

/// Step and tolerances of a check (see the module docs for the defaults).
#[derive(Clone, Copy, Debug)]
pub struct GradCheck {
    pub step: f32,
    pub rtol: f64,
    /// Absolute slack, as a fraction of the input's largest analytic gradient.
    pub atol: f64,
    /// Elements checked per input (a deterministic sample when larger).
    pub max_elements: usize,
    /// Batchnorm mode while checking: batch statistics or moving ones.
    pub training: bool,
    /// Skip elements whose step straddles a kink (for functions with ReLU or
    /// max pool); smooth functions are checked at every element.
    pub skip_kinks: bool,
}

impl Default for GradCheck {
    fn default() -> Self {
        GradCheck {
            step: 1e-2,
            rtol: 1e-2,
            atol: 1e-3,
            max_elements: 48,
            training: true,
            skip_kinks: false,
        }
    }
}

/// What a passing check looked at.
#[derive(Debug)]
pub struct GradReport {
    pub checked: usize,
    pub skipped_at_kinks: usize,
    pub max_rel_error: f64,
}

/// Deterministic pseudo-random numbers in [-1, 1) (splitmix64).
fn random_values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

impl GradCheck {
    /// Checks `f`'s backward with respect to every input in `inputs`.
    /// `params` may hold parameters `f` reads through [`Graph::param`]
    /// (they are not perturbed; pass them as inputs to check them).
    pub fn run(
        &self,
        params: &ParamStore,
        inputs: &[Tensor],
        f: impl Fn(&mut Graph, &[Var]) -> Var,
    ) -> Result<GradReport, String> {
        // Ops write their outputs into unzeroed buffers; poisoned, any
        // element an op forgets to write is NaN and fails the check.
        tensor::buffer_pool::poison_recycled(true);
        // Analytic: one backward pass seeded with r.
        let mut g = Graph::new(
            params,
            Mode {
                record: true,
                training: self.training,
                layer_outputs: false,
            },
        );
        let vars: Vec<Var> = inputs.iter().map(|t| g.leaf(t.clone(), true)).collect();
        let out = f(&mut g, &vars);
        let r =
            Tensor::from_vec(g.value(out).shape(), random_values(g.value(out).numel(), 7)).unwrap();
        if let Some(j) = g.value(out).data().iter().position(|v| !v.is_finite()) {
            return Err(format!("output element {j} is {}", g.value(out).data()[j]));
        }
        let grads = g.backward_with(out, r.clone());

        // Numeric: L(x) = sum(r * f(x)) with no tape.
        let weighted = |xs: &[Tensor]| -> Vec<f64> {
            let mode = Mode {
                record: false,
                training: self.training,
                layer_outputs: false,
            };
            let mut g = Graph::new(params, mode);
            let vars: Vec<Var> = xs.iter().map(|t| g.leaf(t.clone(), false)).collect();
            let out = f(&mut g, &vars);
            let y = g.value(out).data();
            y.iter()
                .zip(r.data())
                .map(|(&y, &r)| y as f64 * r as f64)
                .collect()
        };
        let loss = |xs: &[Tensor]| -> f64 { weighted(xs).iter().sum() };

        let mut report = GradReport {
            checked: 0,
            skipped_at_kinks: 0,
            max_rel_error: 0.0,
        };
        let h = self.step;
        let mut xs = inputs.to_vec();
        let l0 = loss(&xs);
        let out_norm = weighted(&xs).iter().map(|v| v * v).sum::<f64>().sqrt();
        let noise_floor = 4.0 * f32::EPSILON as f64 * out_norm / h as f64;
        for (i, v) in vars.iter().enumerate() {
            let zeros = Tensor::zeros(inputs[i].shape());
            let analytic = grads.leaf(*v).unwrap_or(&zeros);
            let max_grad = analytic
                .data()
                .iter()
                .fold(0.0f64, |m, &g| m.max(g.abs() as f64));
            let n = inputs[i].numel();
            let picks: Vec<usize> = if n <= self.max_elements {
                (0..n).collect()
            } else {
                random_values(self.max_elements, 1000 + i as u64)
                    .iter()
                    .map(|u| (((u + 1.0) / 2.0) * n as f32) as usize % n)
                    .collect()
            };
            for j in picks {
                let x0 = xs[i].data()[j];
                xs[i].data_mut()[j] = x0 + h;
                let lp = loss(&xs);
                xs[i].data_mut()[j] = x0 - h;
                let lm = loss(&xs);
                xs[i].data_mut()[j] = x0;
                let numeric = (lp - lm) / (2.0 * h as f64);
                let a = analytic.data()[j] as f64;
                let scale = numeric.abs().max(a.abs());
                let slack = self.atol * max_grad + noise_floor;
                let one_sided_gap = ((lp - l0) - (l0 - lm)).abs() / h as f64;
                if self.skip_kinks && one_sided_gap > 0.1 * scale + 10.0 * slack {
                    report.skipped_at_kinks += 1;
                    continue;
                }
                report.checked += 1;
                let err = (a - numeric).abs();
                report.max_rel_error = report.max_rel_error.max(err / (scale + slack));
                // A NaN on either side fails too.
                if err.is_nan() || err > self.rtol * scale + slack {
                    return Err(format!(
                        "input {i} {:?}, element {j}: analytic {a:.6e} vs numeric {numeric:.6e} (|diff| {err:.3e})",
                        inputs[i].shape()
                    ));
                }
            }
        }
        if report.skipped_at_kinks * 4 > report.checked + report.skipped_at_kinks {
            return Err(format!("too many elements at kinks: {report:?}"));
        }
        Ok(report)
    }
}

/// Checks one op the way every op here is checked: its forward output
/// (without a tape) against `reference`, a naive computation on the
/// inputs (usually a [`tensor::reference`] function), to `atol` + `rtol`
/// relative; then its backward against finite differences with `check`.
/// Panics with the first values and the largest difference on a mismatch.
pub fn check_op(
    what: &str,
    check: GradCheck,
    inputs: &[Tensor],
    op: impl Fn(&mut Graph, &[Var]) -> Var,
    reference: impl Fn(&[Tensor]) -> Vec<f32>,
    (atol, rtol): (f32, f32),
) {
    let params = ParamStore::new();
    let mode = Mode {
        record: false,
        training: check.training,
        layer_outputs: false,
    };
    let mut g = Graph::new(&params, mode);
    let vars: Vec<Var> = inputs.iter().map(|t| g.leaf(t.clone(), false)).collect();
    let out = op(&mut g, &vars);
    let want = reference(inputs);
    tensor::testing::check_tensor(
        &format!("{what} forward"),
        g.value(out).data(),
        &want,
        atol,
        rtol,
    );
    if let Err(e) = check.run(&params, inputs, op) {
        panic!("{what} backward: gradient check failed: {e}");
    }
}

/// What one run of a function under a tape produced: its output and the
/// gradient of every input for a fixed output gradient.
fn output_and_gradients(
    mode: Mode,
    inputs: &[Tensor],
    f: &dyn Fn(&mut Graph, &[Var]) -> Var,
) -> (Tensor, Vec<Tensor>) {
    let params = ParamStore::new();
    let mut g = Graph::new(&params, mode);
    let vars: Vec<Var> = inputs.iter().map(|t| g.leaf(t.clone(), true)).collect();
    let out = f(&mut g, &vars);
    let value = g.value(out).clone();
    let seed = Tensor::from_vec(value.shape(), random_values(value.numel(), 9)).unwrap();
    let grads = g.backward_with(out, seed);
    let d = vars
        .iter()
        .zip(inputs)
        .map(|(v, x)| {
            grads
                .leaf(*v)
                .cloned()
                .unwrap_or_else(|| Tensor::zeros(x.shape()))
        })
        .collect();
    (value, d)
}

/// Asserts that a fused op computes what the ops it stands for compute
/// one by one: the same output bit for bit (a fused op does each f32
/// operation of its parts, in their order), and the same input gradients
/// to `grad_tol` (its backward may sum in another order). Runs under a tape
/// in `mode` (with `mode.record` forced on).
pub fn assert_fused_equals_composed(
    what: &str,
    mode: Mode,
    inputs: &[Tensor],
    fused: impl Fn(&mut Graph, &[Var]) -> Var,
    composed: impl Fn(&mut Graph, &[Var]) -> Var,
    grad_tol: f32,
) {
    tensor::buffer_pool::poison_recycled(true);
    let mode = Mode {
        record: true,
        ..mode
    };
    let (y_fused, d_fused) = output_and_gradients(mode, inputs, &fused);
    let (y_parts, d_parts) = output_and_gradients(mode, inputs, &composed);
    assert_eq!(y_fused.shape(), y_parts.shape(), "{what}: output shapes");
    tensor::testing::check_tensor(
        &format!("{what}: output"),
        y_fused.data(),
        y_parts.data(),
        0.0,
        0.0,
    );
    for (i, (a, b)) in d_fused.iter().zip(&d_parts).enumerate() {
        tensor::testing::check_tensor(
            &format!("{what}: gradient of input {i}"),
            a.data(),
            b.data(),
            grad_tol,
            0.0,
        );
    }
}
