// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`MeZo`]: memory-efficient zeroth-order estimation (directions regenerated, never stored).

use super::probe::Sample;
use super::sampling::{evaluate, Call, Fused, Kind, Sampler};
use super::{Estimate, Formula, Objective};
use crate::kernels::Direction;
use crate::restore::{Move, Restore};
use crate::{Distribution, Error, Gpu, Params, Result};

/// MeZO (Malladi et al. 2023): the randomized finite-difference estimate
///
/// g = (1/S) Σ_s D_s · z_s,  D_s = the [`Formula`]'s estimate of ∇f(x)·z_s (Central by default:
/// (f(x + h z_s) − f(x − h z_s))/(2h)),
///
/// where the perturbation z_s of step t, sample s is regenerated from (seed, t, s) by Philox at
/// every use — perturb, restore, accumulate, and a fused update in the optimiser — and never
/// stored: the estimator owns **no n-sized buffer** ([`state_bytes`](super::GradApproximator::state_bytes)
/// is 0) unless `exact_restore(true)` asks for one saved copy of x. Two runs with the same seed
/// and steps are bit-identical. By default (`pre_generate(true)`) every call within a step uses
/// the same directions, as torchzero, whose perturbation functions are fixed per step;
/// [`pre_step`](super::GradApproximator::pre_step) moves to the next step.
///
/// Defaults (torchzero's): h = 1e-3, n_samples = 1, formula = Central, distribution =
/// Rademacher, seed = 0, target = Closure. Evaluations per call: m·S (+1 for f₀ with one-sided
/// formulas), 2S with Central; torchzero 0.4.4's closure target evaluates f(x) once more after
/// every central-difference estimate (3 per step), zograd only when the formula or a later
/// module needs it, deliberately. Unlike torchzero's MeZO, a uniform perturbation is h·U(−√3, √3)
/// (ARCHITECTURE.md, "torchzero differences").
///
/// Reference: S. Malladi, T. Gao, E. Nichani, A. Damian, J. D. Lee, D. Chen, S. Arora,
/// "Fine-tuning language models with just forward passes", NeurIPS 2023, arXiv:2305.17333.
///
/// # Errors
/// `approximate` returns [`crate::Error::InvalidArgument`] for h ≤ 0 or non-finite,
/// `n_samples = 0` or `grad` of another shape or device; [`crate::Error::NonFiniteLoss`] for a
/// NaN or infinite loss (unless [`allow_non_finite`](Sampler::allow_non_finite)); the
/// objective's errors. The parameters are restored first.
///
/// # Example
/// ```
/// use zograd::approx::{GradApproximator, MeZo};
/// use zograd::Params;
/// # fn main() -> zograd::Result<()> {
/// let gpu = zograd::Gpu::new()?;
/// let mut x = Params::from_slices(&gpu, &[&[0.25f32; 4096][..]])?;
/// let mut g = x.zeros_like()?;
/// let mut loss = |p: &Params| -> zograd::Result<f32> { Ok(p.to_vec()?.iter().map(|v| v * v).sum()) };
/// let mut mezo = MeZo::new().seed(42);
/// mezo.pre_step();
/// let e = mezo.approximate(&gpu, &mut x, &mut loss, &mut g)?;
/// assert_eq!(e.evaluations, 2);
/// assert_eq!(mezo.state_bytes(), 0);
/// # Ok(()) }
/// ```
pub type MeZo = Sampler<MeZoKind>;

/// What a [`MeZo`] adds to the [`Sampler`] core: nothing but its fused step.
#[derive(Debug)]
pub struct MeZoKind;

impl Default for MeZo {
    fn default() -> Self {
        Self::new()
    }
}

/// The estimate, the gradient's terms `(sample, D_s/S)`, and where x was left along the last
/// sample (0 when restored) in units of that sample's step (h, or less when shrunk to keep its
/// points inside the parameters' bounds).
type Terms = (Estimate, Vec<(u32, f32)>, i32, f32);

impl MeZo {
    /// torchzero's defaults: h = 1e-3, one sample, Central, Rademacher, seed 0.
    #[must_use]
    pub fn new() -> Self {
        Sampler::with(MeZoKind, Distribution::Rademacher, 0)
    }

    /// The finite-difference formula.
    #[must_use]
    pub fn formula(mut self, formula: Formula) -> Self {
        self.set.formula = formula;
        self
    }

    /// The perturbation of sample `sample` of the current step.
    #[must_use]
    pub fn direction(&self, sample: u32) -> Direction {
        self.direction_of(sample)
    }

    /// The finite-difference step h.
    #[must_use]
    pub fn step_size(&self) -> f32 {
        self.set.h
    }

    /// Evaluates the formula along every sample and returns the estimate and the terms
    /// `(sample, D_s/S)` of the gradient `g = Σ terms_s · z(seed, step, sample_s)`, without
    /// writing any gradient buffer: a caller can apply them straight to x
    /// (`accumulate(x, distribution, seed, step, [(s, −lr·c)])` is a MeZO SGD step with no
    /// n-sized buffer at all). `loss` is f(x) when known. x is restored before returning.
    ///
    /// # Errors
    /// As [`GradApproximator::approximate`](super::GradApproximator::approximate).
    pub fn estimate_terms(
        &mut self,
        gpu: &Gpu,
        params: &mut Params,
        objective: &mut dyn Objective,
        loss: Option<f32>,
    ) -> Result<(Estimate, Vec<(u32, f32)>)> {
        let mut call = Call::new(gpu, params, objective, loss);
        let (estimate, terms, _, _) = self.sample_terms(&mut call, None, false)?;
        Ok((estimate, terms))
    }

    /// [`estimate_terms`](MeZo::estimate_terms), checking `grad` against `params` when given;
    /// with `keep_last` (and in-place restoration) x is left along the last sample, at
    /// x₀ + k·h·z_last, and k is returned.
    fn sample_terms(
        &mut self,
        call: &mut Call<'_>,
        grad: Option<&Params>,
        keep_last: bool,
    ) -> Result<Terms> {
        let dirs = self.begin(call, grad, true)?;
        let plans: Vec<Sample<'_>> = dirs
            .iter()
            .map(|d| Sample::new(*d, &self.mask, self.set.h))
            .collect();
        let diffs = evaluate(&self.set, &mut self.saved, &plans, call, keep_last)?;
        let terms = self.terms(&dirs, &diffs.derivatives);
        Ok((diffs.estimate, terms, diffs.left_at, diffs.left_unit))
    }

    /// The fused MeZO step of [`Kind::fused_step`].
    fn fused(&mut self, mut call: Call<'_>, a: f32, alpha: f32) -> Result<Estimate> {
        if !(a.is_finite() && alpha.is_finite()) {
            return Err(Error::invalid(format!(
                "a, alpha: the fused update's factors must be finite, got {a} and {alpha}"
            )));
        }
        let (estimate, mut terms, left_at, h) = self.sample_terms(&mut call, None, true)?;
        let last = terms.len() - 1;
        let last_dir = self.direction_of(terms[last].0);
        // x = x₀ + left_at·h·z_last now: a·x₀ = a·x − a·left_at·h·z_last. Until the update has
        // been applied, the guard puts x back on an error.
        let mut guard = Restore::new(call.params);
        if left_at != 0 {
            guard.arm(Move::PerturbMasked(
                last_dir,
                -(left_at as f32) * h,
                &self.mask,
            ));
        }
        let restore = -f64::from(a) * f64::from(left_at) * f64::from(h);
        for (k, (_, c)) in terms.iter_mut().enumerate() {
            let mut coeff = -f64::from(alpha) * f64::from(*c);
            if k == last {
                coeff += restore;
            }
            *c = coeff as f32;
        }
        // Left pending (`gpu/pending.rs`): it joins the next evaluation's submission.
        crate::gpu::pending::defer(|| self.scale_accumulate(guard.params(), a, &terms))?;
        guard.keep();
        if !call.objective.zograd_own(crate::objective::sealed::Own) {
            // Only zograd's own objectives let the update join the next evaluation.
            call.gpu.flush()?;
        }
        Ok(estimate)
    }
}

impl Kind for MeZoKind {
    const NAME: &'static str = "MeZo";

    fn run(s: &mut Sampler<Self>, mut call: Call<'_>, grad: &mut Params) -> Result<Estimate> {
        let (estimate, terms, _, _) = s.sample_terms(&mut call, Some(grad), false)?;
        s.write(grad, &terms)?;
        Ok(estimate)
    }

    /// True: MeZO's last restore and the update are one kernel.
    fn can_fuse() -> bool {
        true
    }

    /// The fused MeZO step: the samples are evaluated in place as in `approximate`, but the
    /// parameters are not moved back after the last one; one
    /// [`scale_accumulate`](crate::kernels::scale_accumulate) pass then restores, decays and
    /// updates them, `x ← a·x − alpha·(1/S)·Σ D_s z_s`, regenerating every z from its seed. No
    /// n-sized buffer exists (with `exact_restore`, only the saved copy).
    fn fused_step(s: &mut Sampler<Self>, call: Call<'_>, a: f32, alpha: f32) -> Fused {
        Some(s.fused(call, a, alpha))
    }
}
