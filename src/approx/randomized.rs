// SPDX-License-Identifier: MIT OR Apache-2.0
//! Randomized finite differences: [`RandomizedFdm`] and its presets [`Spsa`], [`Rdsa`] and
//! [`GaussianSmoothing`], constructors of a `RandomizedFdm` with other defaults.
#![allow(
    clippy::new_ret_no_self,
    reason = "a preset's `new` is a constructor of the type it presets"
)]

use super::probe::Sample;
use super::sampling::{evaluate, Call, Kind, Sampler};
use super::{entropy_seed, Estimate, Formula};
use crate::checkpoint::{unflat, State};
use crate::kernels::{accumulate_masked, axpy, fill, scale, Direction, Mask};
use crate::{Distribution, Error, Gpu, Params, Result};

/// Gradient estimation by randomized finite differences (torchzero's `RandomizedFDM`):
///
/// g = (1/S) Σ_s D_s · u_s,  D_s = the [`Formula`]'s estimate of ∇f(x)·u_s from
/// f(x + k·h·u_s),
///
/// with u_s = z(seed, step, sample s, ·) drawn from the [`Distribution`] (unit variance per
/// element; no normalisation by the dimension), so E\[g\] = ∇f(x) + O(h^order) for every
/// distribution. Defaults (torchzero's): h = 1e-3, n_samples = 1, formula = Central,
/// distribution = Rademacher, pre_generate = true, beta = 0, seed = random (from the OS),
/// target = Closure.
///
/// - **Directions.** Sample s of a call uses `Direction { distribution, seed, step, sample }`
///   with `step` the step counter ([`pre_step`](super::GradApproximator::pre_step) adds one) and
///   `sample = s` when `pre_generate` is true, so every call within a step (a line search,
///   Newton-CG) sees the same directions; with `pre_generate = false` the c-th call of the step
///   uses `sample = c·S + s`, new directions each call. Nothing is stored either way:
///   "pre-generation" is only the choice of Philox counter.
/// - **Direction momentum** `beta > 0` (from torchzero's documentation): sample s perturbs
///   along v_s ← β·v_s + (1 − β)·u_s (v_s = u_s at the first draw), updated once per new draw
///   (per step with `pre_generate`, per call without). This stores the S directions v_s: S·n
///   floats of GPU memory ([`state_bytes`](super::GradApproximator::state_bytes)), and the gradient is
///   accumulated with one `axpy` per sample instead of the single-pass `accumulate`.
/// - **Evaluations** per call: m·S, plus one for f₀ when the formula uses it (m = points of
///   the formula: Central 2, Forward 1, Central4 4, Forward5 4). With an objective that
///   batches ([`Objective::has_batch`](crate::Objective::has_batch)) all m·S points go to one `loss_batch` call (not with
///   `beta > 0`, whose directions are not Philox ones).
/// - **torchzero's count differs.** torchzero 0.4.4's closure target evaluates f(x) once more
///   after every central-difference estimate (3 evaluations per SPSA step, not 2); zograd
///   evaluates f(x) only when the formula or a later module needs it, deliberately.
/// - **Restoring**: in place (drift of a few ulp, see [`crate::approx`]) or, with
///   `exact_restore(true)`, by copy from one saved copy of x (n floats).
///
/// References: J. C. Spall, "Multivariate stochastic approximation using a simultaneous
/// perturbation gradient approximation", IEEE TAC 37 (1992); Y. Nesterov, V. Spokoiny, "Random
/// gradient-free minimization of convex functions", Found. Comput. Math. 17 (2017).
///
/// # Errors
/// `approximate` returns [`Error::InvalidArgument`] for h ≤ 0 or non-finite, `n_samples = 0`,
/// beta outside [0, 1], or `grad` of another shape or device than `params`;
/// [`Error::NonFiniteLoss`] for a NaN or infinite loss (unless
/// [`allow_non_finite`](Sampler::allow_non_finite)); the objective's errors. The parameters are
/// restored first.
///
/// # Example
/// ```
/// use zograd::approx::{Distribution, Formula, GradApproximator, RandomizedFdm};
/// use zograd::Params;
/// # fn main() -> zograd::Result<()> {
/// let gpu = zograd::Gpu::new()?;
/// let mut x = Params::from_slices(&gpu, &[&[1.0f32; 100][..]])?;
/// let mut g = x.zeros_like()?;
/// let mut loss = |p: &Params| -> zograd::Result<f32> { Ok(p.to_vec()?.iter().map(|v| v * v).sum()) };
/// let mut est = RandomizedFdm::new()
///     .formula(Formula::Forward)
///     .distribution(Distribution::Gaussian)
///     .n_samples(8)
///     .seed(7);
/// est.pre_step();
/// let e = est.approximate(&gpu, &mut x, &mut loss, &mut g)?;
/// assert_eq!(e.evaluations, 9); // f₀ once, then one point per sample
/// assert!(e.loss.is_some());
/// # Ok(()) }
/// ```
pub type RandomizedFdm = Sampler<RandomizedKind>;

/// What a [`RandomizedFdm`] adds to the [`Sampler`] core: the direction momentum β and its
/// stored directions.
#[derive(Debug, Default)]
pub struct RandomizedKind {
    beta: f32,
    momentum: Option<Momentum>,
}

/// The stored directions of the direction momentum.
#[derive(Debug)]
struct Momentum {
    directions: Vec<Params>,
    /// (step, first sample) of the last draw folded in.
    drawn: Option<(u32, u32)>,
}

impl Default for RandomizedFdm {
    fn default() -> Self {
        Self::new()
    }
}

impl RandomizedFdm {
    /// torchzero's defaults: h = 1e-3, one sample, Central, Rademacher, pre-generated, no
    /// momentum, a seed from OS entropy.
    #[must_use]
    pub fn new() -> Self {
        Sampler::with(
            RandomizedKind::default(),
            Distribution::Rademacher,
            entropy_seed(),
        )
    }

    /// The finite-difference formula.
    #[must_use]
    pub fn formula(mut self, formula: Formula) -> Self {
        self.set.formula = formula;
        self
    }

    /// The estimator itself: kept from when the presets were wrapper types
    /// (`Spsa::new().into_inner()` still compiles and gives the same `RandomizedFdm`).
    pub fn into_inner(self) -> Self {
        self
    }

    /// Direction momentum β ∈ [0, 1] (0 = off; see the type's documentation); costs S·n floats
    /// of GPU memory.
    #[must_use]
    pub fn beta(mut self, beta: f32) -> Self {
        self.kind.beta = beta;
        self
    }
}

impl Kind for RandomizedKind {
    const NAME: &'static str = "RandomizedFdm";

    fn config(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("beta".into(), self.beta.into());
        m
    }

    /// The stored directions of `beta > 0` (tensors `direction.s`) and which draw was folded
    /// in last (counter `drawn`).
    fn save(&self, state: &mut State) -> Result<()> {
        let drawn = self.momentum.as_ref().and_then(|m| m.drawn);
        if let serde_json::Value::Object(c) = &mut state.counters {
            c.insert(
                "drawn".into(),
                serde_json::json!(drawn.map(|(t, s)| [t, s])),
            );
        }
        if let Some(m) = &self.momentum {
            for (s, v) in m.directions.iter().enumerate() {
                state.tensors.push((format!("direction.{s}"), v.to_vec()?));
            }
        }
        Ok(())
    }

    fn load(&mut self, gpu: &Gpu, shape: &[u64], state: &State) -> Result<()> {
        let drawn = match state.counters.get("drawn") {
            Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value::<(u32, u32)>(v.clone()).map_err(|_| {
                    Error::invalid("checkpoint: RandomizedFdm's `drawn` is malformed")
                })?,
            ),
            None => {
                return Err(Error::invalid(
                    "checkpoint: RandomizedFdm's counter `drawn` is missing",
                ))
            }
        };
        let count = state.tensors.len();
        let mut directions = Vec::with_capacity(count);
        for s in 0..count {
            let name = format!("direction.{s}");
            let data = state.tensor(&name).ok_or_else(|| {
                Error::invalid(format!(
                    "checkpoint: RandomizedFdm's tensor `{name}` is missing"
                ))
            })?;
            directions.push(unflat(gpu, shape, data, &name)?);
        }
        self.momentum = (count > 0).then_some(Momentum { directions, drawn });
        Ok(())
    }

    fn run(s: &mut Sampler<Self>, mut call: Call<'_>, grad: &mut Params) -> Result<Estimate> {
        let beta = s.kind.beta;
        if !(0.0..=1.0).contains(&beta) {
            return Err(Error::invalid(format!(
                "beta: must be in [0, 1], got {beta}"
            )));
        }
        if beta > 0.0 && !s.mask_for(call.params)?.frozen_buffers().is_empty() {
            return Err(Error::invalid(format!(
                "freeze: not available with beta = {beta} > 0 (the stored directions move x by \
                 axpy over every buffer, frozen ones included)"
            )));
        }
        let dirs = s.begin(&mut call, Some(grad), true)?;
        if beta > 0.0 {
            s.kind.draw_momentum(call.params, &dirs, &s.mask)?;
        } else {
            s.kind.momentum = None;
        }
        let h = s.set.h;
        let plans: Vec<Sample<'_>> = match &s.kind.momentum {
            Some(m) => m
                .directions
                .iter()
                .zip(&dirs)
                .map(|(v, d)| Sample::stored(v, *d, h))
                .collect(),
            None => dirs.iter().map(|d| Sample::new(*d, &s.mask, h)).collect(),
        };
        let diffs = evaluate(&s.set, &mut s.saved, &plans, &mut call, false)?;
        match &s.kind.momentum {
            Some(m) => {
                let inv_s = 1.0 / f64::from(s.set.n_samples);
                let coeffs: Vec<f32> = diffs
                    .derivatives
                    .iter()
                    .map(|d| (d * inv_s) as f32)
                    .collect();
                if !s.set.allow_non_finite || coeffs.iter().all(|c| c.is_finite()) {
                    fill(grad, 0.0)?;
                    for (v, c) in m.directions.iter().zip(&coeffs) {
                        axpy(grad, *c, v)?;
                    }
                } else {
                    // allow_non_finite (axpy takes finite factors only): on the host.
                    let mut g = vec![0.0f32; grad.len() as usize];
                    for (v, c) in m.directions.iter().zip(&coeffs) {
                        for (gi, vi) in g.iter_mut().zip(v.to_vec()?) {
                            *gi += c * vi;
                        }
                    }
                    grad.write(&g)?;
                }
            }
            None => s.write(grad, &s.terms(&dirs, &diffs.derivatives))?,
        }
        Ok(diffs.estimate)
    }

    /// The stored directions (`beta > 0`), once allocated.
    fn state_bytes(&self) -> u64 {
        self.momentum
            .as_ref()
            .map_or(0, |m| m.directions.iter().map(Params::owned_bytes).sum())
    }
}

impl RandomizedKind {
    /// Folds the draw `dirs` into the stored directions unless already done.
    fn draw_momentum(&mut self, params: &Params, dirs: &[Direction], mask: &Mask) -> Result<()> {
        let fits = self.momentum.as_ref().is_some_and(|m| {
            m.directions.len() == dirs.len()
                && m.directions
                    .iter()
                    .all(|v| v.gpu().same(params.gpu()) && v.same_shape(params))
        });
        if !fits {
            self.momentum = None;
            let directions = (0..dirs.len())
                .map(|_| params.zeros_like())
                .collect::<Result<Vec<_>>>()?;
            self.momentum = Some(Momentum {
                directions,
                drawn: None,
            });
        }
        let m = self.momentum.as_mut().expect("momentum buffers exist");
        let key = (dirs[0].step, dirs[0].sample);
        if m.drawn == Some(key) {
            return Ok(());
        }
        let first = m.drawn.is_none();
        for (v, d) in m.directions.iter_mut().zip(dirs) {
            let keep = if first {
                fill(v, 0.0)?;
                1.0
            } else {
                scale(v, self.beta)?;
                1.0 - self.beta
            };
            accumulate_masked(v, d.distribution, d.seed, d.step, &[(d.sample, keep)], mask)?;
        }
        m.drawn = Some(key);
        Ok(())
    }
}

/// Simultaneous perturbation stochastic approximation: [`RandomizedFdm`] with its defaults
/// (Central formula, Rademacher directions, h = 1e-3, one sample):
/// g = (1/S) Σ_s (f(x + h u_s) − f(x − h u_s))/(2h) · u_s, 2S evaluations per call.
///
/// Reference: J. C. Spall, "Multivariate stochastic approximation using a simultaneous
/// perturbation gradient approximation", IEEE TAC 37 (1992); Y. Chen, "Theoretical study and
/// comparison of SPSA and RDSA algorithms", arXiv:2107.12771 (2021).
///
/// # Errors
/// As [`RandomizedFdm`]: bad settings or shapes → [`Error::InvalidArgument`], a NaN loss →
/// [`Error::NonFiniteLoss`], the objective's errors; the parameters are restored first.
///
/// # Example
/// ```
/// use zograd::approx::{GradApproximator, Spsa};
/// use zograd::Params;
/// # fn main() -> zograd::Result<()> {
/// let gpu = zograd::Gpu::new()?;
/// let mut x = Params::from_slices(&gpu, &[&[0.5f32; 64][..]])?;
/// let mut g = x.zeros_like()?;
/// let mut loss = |p: &Params| -> zograd::Result<f32> { Ok(p.to_vec()?.iter().map(|v| v * v).sum()) };
/// let mut spsa = Spsa::new().n_samples(4).seed(3);
/// spsa.pre_step();
/// let e = spsa.approximate(&gpu, &mut x, &mut loss, &mut g)?;
/// assert_eq!((e.evaluations, e.loss), (8, None));
/// # Ok(()) }
/// ```
///
/// `Spsa` has no values: [`Spsa::new`] is a [`RandomizedFdm`] with these defaults, so every
/// setter and every [`GradApproximator`](super::GradApproximator) method is `RandomizedFdm`'s own.
#[derive(Debug)]
pub enum Spsa {}

impl Spsa {
    /// torchzero's SPSA defaults: h = 1e-3, one sample, Central, Rademacher, random seed.
    #[must_use]
    pub fn new() -> RandomizedFdm {
        RandomizedFdm::new()
    }
}

/// Random-direction stochastic approximation: [`RandomizedFdm`] with Gaussian directions
/// (Central formula, h = 1e-3, one sample): g = (1/S) Σ_s D_s u_s with u_s ~ N(0, I),
/// 2S evaluations per call.
///
/// Reference: Y. Chen, "Theoretical study and comparison of SPSA and RDSA algorithms",
/// arXiv:2107.12771 (2021).
///
/// # Errors
/// As [`RandomizedFdm`].
///
/// # Example
/// ```
/// use zograd::approx::{GradApproximator, Rdsa};
/// use zograd::Params;
/// # fn main() -> zograd::Result<()> {
/// let gpu = zograd::Gpu::new()?;
/// let mut x = Params::from_slices(&gpu, &[&[0.5f32; 64][..]])?;
/// let mut g = x.zeros_like()?;
/// let mut loss = |p: &Params| -> zograd::Result<f32> { Ok(p.to_vec()?.iter().map(|v| v * v).sum()) };
/// let e = Rdsa::new().seed(3).approximate(&gpu, &mut x, &mut loss, &mut g)?;
/// assert_eq!(e.evaluations, 2);
/// # Ok(()) }
/// ```
///
/// `Rdsa` has no values: [`Rdsa::new`] is a [`RandomizedFdm`] with these defaults, so every
/// setter and every [`GradApproximator`](super::GradApproximator) method is `RandomizedFdm`'s own.
#[derive(Debug)]
pub enum Rdsa {}

impl Rdsa {
    /// torchzero's RDSA defaults: h = 1e-3, one sample, Central, Gaussian, random seed.
    #[must_use]
    pub fn new() -> RandomizedFdm {
        RandomizedFdm::new().distribution(Distribution::Gaussian)
    }
}

/// Gaussian smoothing: [`RandomizedFdm`] with many Gaussian samples, the Forward formula and a
/// larger step (h = 1e-2, 100 samples):
/// g = (1/S) Σ_s (f(x + h u_s) − f(x))/h · u_s, the gradient of the smoothed
/// f_h(x) = E\[f(x + h u)\] (up to O(h)); S + 1 evaluations per call.
///
/// Reference: Y. Nesterov, V. Spokoiny, "Random gradient-free minimization of convex
/// functions", Found. Comput. Math. 17 (2017).
///
/// # Errors
/// As [`RandomizedFdm`].
///
/// # Example
/// ```
/// use zograd::approx::{GaussianSmoothing, GradApproximator};
/// use zograd::Params;
/// # fn main() -> zograd::Result<()> {
/// let gpu = zograd::Gpu::new()?;
/// let mut x = Params::from_slices(&gpu, &[&[0.5f32; 64][..]])?;
/// let mut g = x.zeros_like()?;
/// let mut loss = |p: &Params| -> zograd::Result<f32> { Ok(p.to_vec()?.iter().map(|v| v * v).sum()) };
/// let e = GaussianSmoothing::new().seed(3).approximate(&gpu, &mut x, &mut loss, &mut g)?;
/// assert_eq!(e.evaluations, 101);
/// # Ok(()) }
/// ```
///
/// `GaussianSmoothing` has no values: [`GaussianSmoothing::new`] is a [`RandomizedFdm`] with these defaults, so every
/// setter and every [`GradApproximator`](super::GradApproximator) method is `RandomizedFdm`'s own.
#[derive(Debug)]
pub enum GaussianSmoothing {}

impl GaussianSmoothing {
    /// torchzero's Gaussian smoothing defaults: h = 1e-2, 100 samples, Forward, Gaussian, random seed.
    #[must_use]
    pub fn new() -> RandomizedFdm {
        RandomizedFdm::new()
            .h(1e-2)
            .n_samples(100)
            .formula(Formula::Forward)
            .distribution(Distribution::Gaussian)
    }
}
