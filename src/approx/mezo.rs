// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`MeZo`]: memory-efficient zeroth-order estimation (directions regenerated, never stored).

use super::probe::{differences, Along, Sample};
use super::{
    check_buffers, check_h, check_samples, Estimate, Formula, GradApproximator, Objective, Target,
};
use crate::kernels::{accumulate, copy, fill, Direction};
use crate::{Distribution, Gpu, Params, Result};

/// MeZO (Malladi et al. 2023): the randomized finite-difference estimate
///
/// g = (1/S) Σ_s D_s · z_s,  D_s = the [`Formula`]'s estimate of ∇f(x)·z_s (Central by default:
/// (f(x + h z_s) − f(x − h z_s))/(2h)),
///
/// where the perturbation z_s of step t, sample s is regenerated from (seed, t, s) by Philox at
/// every use — perturb, restore, accumulate, and a fused update in the optimiser — and never
/// stored: the estimator owns **no n-sized buffer** ([`state_bytes`](GradApproximator::state_bytes)
/// is 0) unless `exact_restore(true)` asks for one saved copy of x. Two runs with the same seed
/// and steps are bit-identical. Every call within a step uses the same directions (as torchzero,
/// whose perturbation functions are fixed per step); [`pre_step`](GradApproximator::pre_step)
/// moves to the next step.
///
/// Defaults (torchzero's): h = 1e-3, n_samples = 1, formula = Central, distribution =
/// Rademacher, seed = 0, target = Closure. Evaluations per call: m·S (+1 for f₀ with one-sided
/// formulas), 2S with Central. Unlike torchzero's MeZO, a uniform perturbation is h·U(−√3, √3)
/// (SPEC.md §6).
///
/// Reference: S. Malladi, T. Gao, E. Nichani, A. Damian, J. D. Lee, D. Chen, S. Arora,
/// "Fine-tuning language models with just forward passes", NeurIPS 2023, arXiv:2305.17333.
///
/// # Errors
/// `approximate` returns [`crate::Error::InvalidArgument`] for h ≤ 0 or non-finite,
/// `n_samples = 0` or `grad` of another shape or device; [`crate::Error::NonFiniteLoss`] for a
/// NaN or infinite loss; the objective's errors. The parameters are restored first.
///
/// # Example
/// ```no_run
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
#[derive(Debug)]
pub struct MeZo {
    h: f32,
    n_samples: u32,
    formula: Formula,
    distribution: Distribution,
    seed: u64,
    exact_restore: bool,
    target: Target,
    step: u32,
    /// The step counter before the last `pre_step`, for `abort_step`.
    undo: Option<u32>,
    saved: Option<Params>,
}

impl Default for MeZo {
    fn default() -> Self {
        Self::new()
    }
}

/// The estimate, the gradient's terms `(sample, D_s/S)`, and where x was left along the last
/// sample (0 when restored).
type Terms = (Estimate, Vec<(u32, f32)>, i32);

impl MeZo {
    /// torchzero's defaults: h = 1e-3, one sample, Central, Rademacher, seed 0.
    #[must_use]
    pub fn new() -> Self {
        Self {
            h: 1e-3,
            n_samples: 1,
            formula: Formula::Central,
            distribution: Distribution::Rademacher,
            seed: 0,
            exact_restore: false,
            target: Target::Closure,
            step: 0,
            undo: None,
            saved: None,
        }
    }

    builders!(h: f32, n_samples: u32, formula: Formula, distribution: Distribution, seed: u64, exact_restore: bool, target: Target);

    /// The perturbation of sample `sample` of the current step.
    #[must_use]
    pub fn direction(&self, sample: u32) -> Direction {
        Direction {
            distribution: self.distribution,
            seed: self.seed,
            step: self.step,
            sample,
        }
    }

    /// The finite-difference step h.
    #[must_use]
    pub fn step_size(&self) -> f32 {
        self.h
    }

    /// Evaluates the formula along every sample and returns the estimate and the terms
    /// `(sample, D_s/S)` of the gradient `g = Σ terms_s · z(seed, step, sample_s)`, without
    /// writing any gradient buffer: a caller can apply them straight to x
    /// (`accumulate(x, distribution, seed, step, [(s, −lr·c)])` is a MeZO SGD step with no
    /// n-sized buffer at all). `loss` is f(x) when known. x is restored before returning.
    ///
    /// # Errors
    /// As [`GradApproximator::approximate`].
    pub fn estimate_terms(
        &mut self,
        gpu: &Gpu,
        params: &mut Params,
        objective: &mut dyn Objective,
        loss: Option<f32>,
    ) -> Result<(Estimate, Vec<(u32, f32)>)> {
        let (estimate, terms, _) = self.terms(gpu, params, objective, loss, false)?;
        Ok((estimate, terms))
    }

    /// [`estimate_terms`](MeZo::estimate_terms); with `keep_last` (and in-place restoration) x is
    /// left along the last sample, at x₀ + k·h·z_last, and k is returned.
    fn terms(
        &mut self,
        gpu: &Gpu,
        params: &mut Params,
        objective: &mut dyn Objective,
        loss: Option<f32>,
        keep_last: bool,
    ) -> Result<Terms> {
        check_h(self.h)?;
        check_samples(self.n_samples)?;
        if !params.gpu().same(gpu) {
            return Err(crate::Error::invalid(format!(
                "params: live on another Gpu ({}) than the `gpu` argument ({})",
                params.gpu().label(),
                gpu.label()
            )));
        }
        let samples: Vec<u32> = (0..self.n_samples).collect();
        if self.distribution == Distribution::Sphere {
            gpu.sphere_norms(self.seed, self.step, &samples, params.len())?;
        }
        let saved = if self.exact_restore {
            let s = crate::params::ensure_like(&mut self.saved, params)?;
            copy(s, params)?;
            Some(&*s)
        } else {
            self.saved = None;
            None
        };
        let plans: Vec<Sample<'_>> = samples
            .iter()
            .map(|s| Sample {
                along: Along::Philox(Direction {
                    distribution: self.distribution,
                    seed: self.seed,
                    step: self.step,
                    sample: *s,
                }),
                unit: self.h,
                post: 1.0,
            })
            .collect();
        let diffs = differences(
            self.formula,
            self.h,
            &plans,
            params,
            saved,
            objective,
            loss,
            keep_last,
        )?;
        let inv_s = 1.0 / f64::from(self.n_samples);
        let terms = samples
            .iter()
            .zip(&diffs.derivatives)
            .map(|(s, d)| (*s, (d * inv_s) as f32))
            .collect();
        Ok((diffs.estimate, terms, diffs.left_at))
    }

    fn run(
        &mut self,
        gpu: &Gpu,
        params: &mut Params,
        objective: &mut dyn Objective,
        grad: &mut Params,
        loss: Option<f32>,
    ) -> Result<Estimate> {
        check_h(self.h)?;
        check_samples(self.n_samples)?;
        check_buffers(gpu, params, grad)?;
        let (estimate, terms) = self.estimate_terms(gpu, params, objective, loss)?;
        fill(grad, 0.0)?;
        accumulate(grad, self.distribution, self.seed, self.step, &terms)?;
        Ok(estimate)
    }
}

impl GradApproximator for MeZo {
    /// Moves to the next step: new perturbations (seed, step + 1, s).
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

    approximate_via_run!();

    /// True: MeZO's last restore and the update are one kernel.
    fn can_fuse(&self) -> bool {
        true
    }

    /// The fused MeZO step: the samples are evaluated in place as in `approximate`, but the
    /// parameters are not moved back after the last one; one
    /// [`scale_accumulate`](crate::kernels::scale_accumulate) pass then restores, decays and
    /// updates them, `x ← a·x − alpha·(1/S)·Σ D_s z_s`, regenerating every z from its seed. No
    /// n-sized buffer exists (with `exact_restore`, only the saved copy).
    fn fused_step(
        &mut self,
        gpu: &Gpu,
        params: &mut Params,
        objective: &mut dyn Objective,
        a: f32,
        alpha: f32,
    ) -> Result<Estimate> {
        if !(a.is_finite() && alpha.is_finite()) {
            return Err(crate::Error::invalid(format!(
                "a, alpha: the fused update's factors must be finite, got {a} and {alpha}"
            )));
        }
        let (estimate, mut terms, left_at) = self.terms(gpu, params, objective, None, true)?;
        // x = x₀ + left_at·h·z_last now: a·x₀ = a·x − a·left_at·h·z_last.
        let restore = -(a as f64) * f64::from(left_at) * f64::from(self.h);
        let last = terms.len() - 1;
        for (k, (_, c)) in terms.iter_mut().enumerate() {
            let mut coeff = -f64::from(alpha) * f64::from(*c);
            if k == last {
                coeff += restore;
            }
            *c = coeff as f32;
        }
        let applied = crate::kernels::scale_accumulate(
            params,
            a,
            self.distribution,
            self.seed,
            self.step,
            &terms,
        );
        if applied.is_err() && left_at != 0 {
            // Put x back before reporting the device error.
            let _ = crate::kernels::perturb(
                params,
                &self.direction(terms[last].0),
                -(left_at as f32) * self.h,
            );
        }
        applied?;
        Ok(estimate)
    }

    /// 0, or n·4 bytes with `exact_restore(true)` once the copy exists.
    fn state_bytes(&self) -> u64 {
        self.saved.as_ref().map_or(0, Params::owned_bytes)
    }

    fn restores_exactly(&self) -> bool {
        self.exact_restore
    }
}
