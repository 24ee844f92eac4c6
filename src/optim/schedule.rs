// SPDX-License-Identifier: MIT OR Apache-2.0
//! The calibrations of [`Schedule`] that need an estimator or a loss: Spall's a from a few
//! gradient estimates, Spall's c from the loss's measured noise.

use crate::approx::GradApproximator;
use crate::kernels::norm;
use crate::schedule::Schedule;
use crate::{Error, Gpu, Objective, Params, Result};

impl Schedule {
    /// Spall's gains with `a` calibrated as Spall recommends (and fishtest does): `estimates`
    /// gradient estimates ĝ at x₀ by `approximator`, their mean RMS magnitude
    /// r = mean_j ‖ĝ_j‖/√n, and a = `first_move`·(1 + A)^0.602 / r, so that the first step
    /// moves each parameter by about `first_move` (RMS); A = 10 % of `planned_steps`.
    ///
    /// **Cost**: `estimates` calls of `approximate` (2 evaluations each for SPSA / MeZO with
    /// the Central formula: see the estimator's table in [`crate::approx`]) and one n-sized
    /// gradient buffer while it runs. Returns the schedule and the evaluations spent. The
    /// approximator's seed and counters are put back afterwards (through
    /// [`save_state`](GradApproximator::save_state) / `load_state`), so the run that follows
    /// draws the directions it would have drawn without the calibration; an approximator that
    /// cannot be checkpointed keeps the counters the estimates advanced. `params` are left as
    /// they were (within the estimator's restore policy).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `estimates` = 0, a `first_move` that is not finite and
    /// positive, or estimates that are all 0; the approximator's and objective's errors.
    pub fn calibrate_spall(
        approximator: &mut dyn GradApproximator,
        gpu: &Gpu,
        params: &mut Params,
        objective: &mut dyn Objective,
        estimates: u32,
        first_move: f64,
        planned_steps: u64,
    ) -> Result<(Self, u64)> {
        if estimates == 0 {
            return Err(Error::invalid("estimates: must be at least 1, got 0"));
        }
        if !(first_move.is_finite() && first_move > 0.0) {
            return Err(Error::invalid(format!(
                "first_move: must be finite and positive, got {first_move}"
            )));
        }
        let saved = approximator.save_state()?;
        let mut grad = params.zeros_like()?;
        let n = params.len() as f64;
        let (mut rms, mut evaluations) = (0.0f64, 0u64);
        let mut result = Ok(());
        for _ in 0..estimates {
            approximator.pre_step();
            match approximator.approximate(gpu, params, objective, &mut grad) {
                Ok(e) => evaluations += u64::from(e.evaluations),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
            match norm(&grad) {
                Ok(g) => rms += g / n.sqrt(),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if let Some(state) = &saved {
            let shape = params.buffer_lens().to_vec();
            approximator.load_state(gpu, &shape, state)?;
        }
        result?;
        let rms = rms / f64::from(estimates);
        if !(rms.is_finite() && rms > 0.0) {
            return Err(Error::invalid(format!(
                "estimates: the gradient estimates' magnitude is {rms}, a cannot be calibrated"
            )));
        }
        let mut s = Self::spall(1.0, planned_steps);
        if let Self::Spall { a, big_a, alpha } = &mut s {
            *a = first_move * (1.0 + *big_a).powf(*alpha) / rms;
        }
        Ok((s, evaluations))
    }

    /// Spall's perturbation sizes h_k = c / k^0.101 ([`Schedule::spall_h`]) with c calibrated
    /// as Spall recommends: the standard deviation of the loss's noise, measured from
    /// `evaluations` repeated evaluations of f at `params` (sample standard deviation, n − 1 in
    /// the denominator). Returns the schedule and the evaluations spent (= `evaluations`);
    /// `params` are not moved.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for fewer than 2 `evaluations`, a non-finite loss, or a loss
    /// without measurable noise (every value equal: choose h yourself, e.g. the estimator's
    /// default); the objective's errors.
    pub fn calibrate_spall_h(
        params: &Params,
        objective: &mut dyn Objective,
        evaluations: u32,
    ) -> Result<(Self, u64)> {
        if evaluations < 2 {
            return Err(Error::invalid(format!(
                "evaluations: must be at least 2 to measure a standard deviation, got {evaluations}"
            )));
        }
        let mut values = Vec::with_capacity(evaluations as usize);
        for _ in 0..evaluations {
            let v = objective.scoped_loss(params)?;
            if !v.is_finite() {
                return Err(Error::NonFiniteLoss {
                    value: v,
                    context: "f(x), measuring the noise for calibrate_spall_h".into(),
                });
            }
            values.push(f64::from(v));
        }
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let var =
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64;
        let sd = var.sqrt();
        if sd.is_nan() || sd <= 0.0 {
            return Err(Error::invalid(format!(
                "objective: {evaluations} evaluations at x all returned {mean}: no noise to                  calibrate c from (choose h yourself)"
            )));
        }
        Ok((Self::spall_h(sd), u64::from(evaluations)))
    }
}
