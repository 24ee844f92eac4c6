// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`Fdm`]: the finite-difference gradient, one element at a time.

use super::probe::unperturbed_loss;
use super::{
    check_batch_len, check_buffers, check_h, check_value, Coordinate, Estimate, Evaluation,
    Formula, GradApproximator, Objective, Target,
};
use crate::checkpoint::{difference, State};
use crate::kernels::Mask;
use crate::restore::{Move, Restore};
use crate::{Error, Gpu, Params, Result};

/// The finite-difference gradient (torchzero's `FDM`): for every element i in global order,
///
/// g_i = D_i, the [`Formula`]'s estimate of ∂f/∂x_i from f(x + k·h·e_i)
///
/// (Central by default: (f(x + h e_i) − f(x − h e_i))/(2h)).
///
/// x is downloaded once; each point is made by writing the single element
/// `x_i + k·h` (computed in f64, rounded once to f32) with [`Params::write_at`] — no pass over
/// the other n − 1 elements — and the original `x_i` is written back after the element's last
/// point, so the parameters are restored **exactly** (`exact_restore` has nothing to add). One
/// scalar is read back per evaluation; the gradient is uploaded once at the end. With an
/// objective that batches ([`Objective::has_batch`]) the points go to
/// [`Objective::loss_batch_coords`] in batches of `batch_size` points, and x is never written.
///
/// Evaluations per call: m·n, plus one for f₀ when the formula uses it (Central 2n, Forward
/// n + 1, Forward3 2n + 1, Central4 4n, Forward5 4n + 1). `loss` is f₀ for formulas that use it;
/// `loss_approx` is f₀, or for Central / Central4 the value f(x + h e_{n−1}) of the last element
/// (as torchzero). torchzero 0.4.4's closure target evaluates f(x) once more after the gradient
/// (2n + 1 with Central); zograd only when the formula or a later module needs it, deliberately.
/// Defaults (torchzero's): h = 1e-3, formula = Central, target = Closure.
///
/// Every point goes to [`Objective::loss_at`] (or [`Objective::loss_batch_coords_at`]) with its
/// [`Evaluation`]: `sample` is the element's global index, `step` the step counter (advanced by
/// [`pre_step`](GradApproximator::pre_step)), `seed` the [`seed`](Fdm::seed), so the points of
/// one element share a common-random-numbers seed that changes from element to element and from
/// step to step.
///
/// Reference: J. Nocedal, S. J. Wright, *Numerical Optimization*, 2nd ed., Springer 2006, §8.1
/// (finite-difference derivative approximations).
///
/// # Errors
/// `approximate` returns [`Error::InvalidArgument`] for h ≤ 0 or non-finite, `batch_size = 0`,
/// `grad` of another shape or device, or buffers that cannot be read or written from the host
/// (adopted buffers without `COPY_SRC` / `COPY_DST`); [`Error::NonFiniteLoss`] for a NaN or
/// infinite loss (unless [`allow_non_finite`](Fdm::allow_non_finite)); the objective's errors.
/// The element being probed is written back first.
///
/// # Example
/// ```
/// use zograd::approx::{Fdm, Formula, GradApproximator};
/// use zograd::Params;
/// # fn main() -> zograd::Result<()> {
/// let gpu = zograd::Gpu::new()?;
/// let mut x = Params::from_slices(&gpu, &[&[1.0f32, 2.0][..], &[3.0f32][..]])?;
/// let mut g = x.zeros_like()?;
/// let mut loss = |p: &Params| -> zograd::Result<f32> { Ok(p.to_vec()?.iter().map(|v| v * v).sum()) };
/// let e = Fdm::new().formula(Formula::Forward).approximate(&gpu, &mut x, &mut loss, &mut g)?;
/// assert_eq!(e.evaluations, 4); // n + 1
/// let g = g.to_vec()?;
/// assert!((g[2] - 6.0).abs() < 1e-2);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Fdm {
    h: f32,
    formula: Formula,
    batch_size: u32,
    allow_non_finite: bool,
    target: Target,
    seed: u64,
    step: u32,
    /// The step counter before the last `pre_step`, for `abort_step`.
    undo: Option<u32>,
    /// The frozen buffers ([`Fdm::freeze`]).
    freeze: Vec<usize>,
}

impl Default for Fdm {
    fn default() -> Self {
        Self::new()
    }
}

impl Fdm {
    /// torchzero's defaults: h = 1e-3, Central; batches of 4096 points for batching objectives.
    #[must_use]
    pub fn new() -> Self {
        Self {
            h: 1e-3,
            formula: Formula::Central,
            batch_size: 4096,
            allow_non_finite: false,
            target: Target::Closure,
            seed: 0,
            step: 0,
            undo: None,
            freeze: Vec::new(),
        }
    }

    /// The seed of the points' [`Evaluation`]s (default 0), from which their
    /// [`crn_seed`](Evaluation::crn_seed) is derived; the estimate itself is deterministic.
    /// Give two `Fdm`s that evaluate the same noisy objective different seeds to give them
    /// independent noise.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The step counter (0 until the first [`pre_step`](GradApproximator::pre_step)).
    #[must_use]
    pub fn current_step(&self) -> u32 {
        self.step
    }

    /// The finite-difference step h (checked at use: finite and > 0).
    #[must_use]
    pub fn h(mut self, h: f32) -> Self {
        self.h = h;
        self
    }

    /// The finite-difference formula.
    #[must_use]
    pub fn formula(mut self, formula: Formula) -> Self {
        self.formula = formula;
        self
    }

    /// Points per [`Objective::loss_batch_coords`] call (checked at use: ≥ 1).
    #[must_use]
    pub fn batch_size(mut self, points: u32) -> Self {
        self.batch_size = points;
        self
    }

    /// A no-op, accepted for uniformity with the other estimators: Fdm always restores exactly
    /// (it writes each element's original value back), whatever `exact` is, so it has none of
    /// the in-place drift documented at [`Sampler::exact_restore`](super::Sampler::exact_restore)
    /// and [`restores_exactly`](GradApproximator::restores_exactly) is always true.
    #[must_use]
    pub fn exact_restore(self, exact: bool) -> Self {
        let _ = exact;
        self
    }

    /// Where the estimate goes in an optimiser chain.
    #[must_use]
    pub fn target(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    /// Propagate a NaN or infinite loss into the gradient instead of failing with
    /// [`Error::NonFiniteLoss`] (the default, `false`): the affected elements of the gradient
    /// become NaN or ±∞, and the chain that consumes them must handle it.
    #[must_use]
    pub fn allow_non_finite(mut self, allow: bool) -> Self {
        self.allow_non_finite = allow;
        self
    }

    /// Freeze the buffers `buffers` (indices into [`Params::buffer_lens`]): their elements are
    /// neither evaluated nor written, and the gradient is exactly 0 there (the evaluation count
    /// drops by theirs). Checked at use as for the random estimators
    /// ([`Sampler::freeze`](super::Sampler::freeze)).
    #[must_use]
    pub fn freeze(mut self, buffers: &[usize]) -> Self {
        self.freeze = buffers.to_vec();
        self
    }

    fn run(
        &mut self,
        gpu: &Gpu,
        params: &mut Params,
        objective: &mut dyn Objective,
        grad: &mut Params,
        known_f0: Option<f32>,
    ) -> Result<Estimate> {
        check_h(self.h)?;
        if self.batch_size == 0 {
            return Err(Error::invalid("batch_size: must be at least 1, got 0"));
        }
        check_buffers(gpu, params, grad)?;
        let mask = if self.freeze.is_empty() {
            Mask::all()
        } else {
            Mask::new(params, &self.freeze, 1.0)?
        };
        let formula = self.formula;
        let offsets = formula.offsets();
        let m = offsets.len();
        let x0 = params.to_vec()?;
        let allow = self.allow_non_finite;
        let (seed, step) = (self.seed, self.step);
        let center = Evaluation::unperturbed(seed, step);
        let (f0, mut evaluations) =
            unperturbed_loss(formula, allow, known_f0, objective, params, &center)?;
        let at = |i: usize, j: usize| Evaluation::new(seed, step, i as u64, j as u32, offsets[j]);
        let h = f64::from(self.h);
        // With scales (Params::set_scales) element i moves by k·h·sᵢ: the estimate is in y-units.
        let scales = params.scales().map(<[f32]>::to_vec);
        let step_of = |i: usize| h * scales.as_ref().map_or(1.0, |s| f64::from(s[i]));
        let point = |i: usize, k: i32| (f64::from(x0[i]) + f64::from(k) * step_of(i)) as f32;
        let mut g = vec![0.0f32; x0.len()];
        let mut last_row = vec![0.0f64; m];
        let mut row = vec![0.0f64; m];
        // The elements evaluated: those outside the frozen buffers.
        let active: Vec<usize> = (0..x0.len())
            .filter(|&i| !mask.is_frozen(i as u64))
            .collect();
        if objective.has_batch() {
            let total = active.len() * m;
            let batch = self.batch_size as usize;
            let mut start = 0;
            let mut chunk = Vec::with_capacity(batch.min(total));
            let mut ids = Vec::with_capacity(batch.min(total));
            while start < total {
                let end = (start + batch).min(total);
                chunk.clear();
                ids.clear();
                ids.extend((start..end).map(|p| at(active[p / m], p % m)));
                chunk.extend((start..end).map(|p| {
                    let (i, j) = (active[p / m], p % m);
                    Coordinate {
                        index: i as u64,
                        value: point(i, offsets[j]),
                        original: x0[i],
                    }
                }));
                let values = objective.scoped_loss_batch_coords_at(params, &chunk, &ids)?;
                check_batch_len("loss_batch_coords", values.len(), chunk.len())?;
                evaluations = evaluations.saturating_add(values.len() as u32);
                for (p, v) in (start..end).zip(values) {
                    let (i, j) = (active[p / m], p % m);
                    row[j] = f64::from(check_value(v, allow, || element_point(offsets[j], i))?);
                    if j + 1 == m {
                        g[i] = formula.combine(f0.map(f64::from), &row, h)? as f32;
                        last_row.copy_from_slice(&row);
                    }
                }
                start = end;
            }
        } else {
            let mut guard = Restore::new(params);
            for &i in &active {
                let index = i as u64;
                for (j, &k) in offsets.iter().enumerate() {
                    let back = Move::Write(index, x0[i]);
                    guard.away(Move::Write(index, point(i, k)), back)?;
                    let v = objective.scoped_loss_at(guard.params(), &at(i, j))?;
                    evaluations = evaluations.saturating_add(1);
                    row[j] = f64::from(check_value(v, allow, || element_point(k, i))?);
                }
                guard.home()?;
                g[i] = formula.combine(f0.map(f64::from), &row, h)? as f32;
                last_row.copy_from_slice(&row);
            }
        }
        grad.write(&g)?;
        Ok(Estimate {
            loss: f0,
            loss_approx: f0.or(Some(last_row[formula.approx_point()] as f32)),
            evaluations,
        })
    }
}

fn element_point(k: i32, i: usize) -> String {
    format!("f(x + {k}·h·e_i) of element {i}")
}

impl Fdm {
    /// The settings as a checkpoint's `config`.
    fn config(&self) -> serde_json::Value {
        let mut m = serde_json::json!({
            "h": self.h,
            "formula": format!("{:?}", self.formula),
            "batch_size": self.batch_size,
            "allow_non_finite": self.allow_non_finite,
            "target": format!("{:?}", self.target),
        });
        if !self.freeze.is_empty() {
            let mut frozen = self.freeze.clone();
            frozen.sort_unstable();
            frozen.dedup();
            m["freeze"] = serde_json::json!(frozen);
        }
        m
    }
}

impl GradApproximator for Fdm {
    /// Advances the step counter (the `step` of the points' [`Evaluation`]s).
    fn pre_step(&mut self) {
        self.undo = Some(self.step);
        self.step = self.step.wrapping_add(1);
    }

    /// Back to the step counter before the last `pre_step`.
    fn abort_step(&mut self) {
        if let Some(step) = self.undo.take() {
            self.step = step;
        }
    }

    /// The settings, the seed and the step counter; Fdm has no buffers (the estimate is
    /// deterministic, the counters name its evaluations).
    fn save_state(&self) -> Result<Option<State>> {
        let mut state = State::new("Fdm", self.config());
        state.counters = serde_json::json!({
            "seed": self.seed,
            "step": self.step,
            "undo": self.undo,
        });
        Ok(Some(state))
    }

    fn load_state(&mut self, gpu: &Gpu, shape: &[u64], state: &State) -> Result<()> {
        let _ = (gpu, shape);
        if state.name != "Fdm" {
            return Err(Error::invalid(format!(
                "approximator: the checkpoint's is {}, this one is Fdm",
                state.name
            )));
        }
        if let Some(diff) = difference(&self.config(), &state.config) {
            return Err(Error::invalid(format!("approximator (Fdm): {diff}")));
        }
        // A checkpoint written before Fdm had counters has none: step 0, this seed.
        if state.counters.is_null() {
            self.step = 0;
            self.undo = None;
            return Ok(());
        }
        let seed = state.counter_u64("seed")?;
        let step = u32::try_from(state.counter_u64("step")?)
            .map_err(|_| Error::invalid("checkpoint: Fdm's `step` exceeds u32"))?;
        let undo = match state.counters.get("undo") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|u| u32::try_from(u).ok())
                    .ok_or_else(|| Error::invalid("checkpoint: Fdm's `undo` is malformed"))?,
            ),
        };
        self.seed = seed;
        self.step = step;
        self.undo = undo;
        Ok(())
    }

    fn approximate(
        &mut self,
        gpu: &Gpu,
        params: &mut Params,
        objective: &mut dyn Objective,
        grad: &mut Params,
    ) -> Result<Estimate> {
        self.run(gpu, params, objective, grad, None)
    }

    fn approximate_with_loss(
        &mut self,
        gpu: &Gpu,
        params: &mut Params,
        objective: &mut dyn Objective,
        grad: &mut Params,
        loss: f32,
    ) -> Result<Estimate> {
        self.run(gpu, params, objective, grad, Some(loss))
    }

    fn current_target(&self) -> Target {
        self.target
    }

    /// True: every element is written back to its original value.
    fn restores_exactly(&self) -> bool {
        true
    }
}
