// SPDX-License-Identifier: MIT OR Apache-2.0
//! Zeroth-order gradient approximators: torchzero's `grad_approximation` module with the
//! parameters on the GPU.
//!
//! | estimator | what it estimates | evaluations per call (f₀ not known) | GPU state |
//! |---|---|---|---|
//! | [`Fdm`] | g_i = D along e_i for every element | m·n (+1 if the formula uses f₀) | none |
//! | [`RandomizedFdm`], [`Spsa`], [`Rdsa`], [`GaussianSmoothing`] | (1/S) Σ D_s u_s | m·S (+1) | none (β > 0: S·n floats) |
//! | [`MeZo`] | (1/S) Σ D_s u_s, directions from (seed, step, s) | m·S (+1) | none |
//! | [`ForwardGradient`] | (1/S) Σ (∇f·u_s) u_s | Central 2S, Forward S + 1, User S JVPs | none (Uniform: n floats) |
//!
//! m is the number of points of the [`Formula`] (Central 2, Forward 1, Central4 4, …), n the
//! number of parameters, S `n_samples`. `exact_restore(true)` adds one copy of x (n floats).
//! torchzero 0.4.4's closure target evaluates f(x) once more after every central-difference
//! estimate (3 evaluations per SPSA or MeZO step, 2n + 1 per FDM gradient, and one more at
//! every Newton-CG Hessian-vector point); zograd evaluates f(x) only when the formula or a
//! module of the chain needs it, and keeps its lower count deliberately.
//!
//! [`RandomizedFdm`], [`MeZo`] and [`ForwardGradient`] are one [`Sampler`] each (settings,
//! counters, restore policy and gradient write in one place) with their own part.
//!
//! # Non-finite losses
//! A NaN or infinite loss is [`Error::NonFiniteLoss`] by default (the parameters restored).
//! With `allow_non_finite(true)` (on every estimator) it propagates instead: the affected
//! coefficients, and so the estimate, are NaN or ±∞, and the chain that consumes them must
//! handle that.
//!
//! Every random estimator computes one coefficient per sample on the host (in f64) and adds
//! all samples to the gradient with ONE [`accumulate`](crate::kernels::accumulate) pass; the
//! directions are regenerated from (seed, step, sample) by Philox wherever they are used and never
//! stored (except for the direction momentum β of [`RandomizedFdm`]).
//!
//! # Restoring the parameters
//! Every `approximate` leaves the parameters as it found them, on success and on every error
//! (and when the objective panics, through a drop guard). By default the random estimators
//! restore in place, like torchzero and MeZO (x + hu − 2hu + hu): each element then differs
//! from its original by a few f32 roundings of x (at most `(Σ|steps|)·ulp(|x_i| + m·h|u_i|)`,
//! typically 0 or 1 ulp of x_i per sample). `exact_restore(true)` keeps one copy of x and
//! restores by copy, bit-exactly. [`Fdm`] always restores exactly (it writes the original value
//! of the element back).
//!
//! # Example
//! ```
//! use zograd::approx::{GradApproximator, Spsa};
//! use zograd::{Gpu, Params};
//! # fn main() -> zograd::Result<()> {
//! let gpu = Gpu::new()?;
//! let mut x = Params::from_slices(&gpu, &[&[1.0f32, -2.0, 0.5][..]])?;
//! let mut g = x.zeros_like()?;
//! let mut loss = |p: &Params| -> zograd::Result<f32> {
//!     Ok(p.to_vec()?.iter().map(|v| v * v).sum())
//! };
//! let mut est = Spsa::new().h(1e-3).n_samples(4).seed(0);
//! est.pre_step();
//! let e = est.approximate(&gpu, &mut x, &mut loss, &mut g)?;
//! assert_eq!(e.evaluations, 8);
//! # Ok(()) }
//! ```

mod fdm;
mod formula;
mod forward_gradient;
mod mezo;
mod probe;
mod randomized;
mod sampling;

pub use fdm::Fdm;
pub use formula::Formula;
pub use forward_gradient::{ForwardGradient, ForwardKind, Jvp};
pub use mezo::{MeZo, MeZoKind};
pub use randomized::{GaussianSmoothing, RandomizedFdm, RandomizedKind, Rdsa, Spsa};
pub use sampling::Sampler;

pub use crate::objective::{Coordinate, Evaluation, LossValue, Objective};
pub use crate::Distribution;

use crate::checkpoint::State;
use crate::restore::check_device;
use crate::{Error, Gpu, Params, Result};

/// What an `approximate` call learned besides the gradient.
///
/// Construct it with a struct literal in your own [`GradApproximator`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Estimate {
    /// f(x) at the unperturbed parameters, if the estimator evaluated it (formulas that use
    /// f₀) or was given it.
    pub loss: Option<f32>,
    /// An approximation of f(x): f₀ when known, otherwise the first perturbed value f(x + h·u)
    /// of the last sample (torchzero's `loss_approx`).
    pub loss_approx: Option<f32>,
    /// Calls into the objective (one per point evaluated, batched points included; one per
    /// JVP).
    pub evaluations: u32,
}

/// Where the estimate goes in an optimiser chain (torchzero's `GradTarget`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Target {
    /// The estimate is the update that flows through the chain.
    Update,
    /// The estimate is stored as the gradient and the chain starts from it.
    Grad,
    /// The estimator is the gradient oracle that later modules (line searches, Newton-CG) call
    /// at whatever points they need; torchzero's default.
    #[default]
    Closure,
}

/// A gradient estimator from loss values only.
///
/// Implement it for your own estimator with the public [`crate::kernels`]; see
/// `examples/custom_approximator.rs` for a one-measurement SPSA in a few dozen lines.
///
/// # Contract
/// `approximate` writes the estimate into `grad` (same shape and device as `params`) and leaves
/// `params` as it found them, also when it returns an error.
///
/// # Example
/// ```
/// use zograd::approx::{Fdm, GradApproximator};
/// use zograd::Params;
/// # fn main() -> zograd::Result<()> {
/// let gpu = zograd::Gpu::new()?;
/// let mut x = Params::from_slices(&gpu, &[&[3.0f32][..]])?;
/// let mut g = x.zeros_like()?;
/// let mut loss = |p: &Params| -> zograd::Result<f32> { Ok(p.to_vec()?[0].powi(2)) };
/// let mut est: Box<dyn GradApproximator> = Box::new(Fdm::new());
/// est.pre_step();
/// est.approximate(&gpu, &mut x, &mut loss, &mut g)?;
/// assert!((g.to_vec()?[0] - 6.0).abs() < 1e-2);
/// # Ok(()) }
/// ```
pub trait GradApproximator {
    /// Called once per optimiser step, before the first `approximate` of the step: advances the
    /// step counter (new random directions) and does any per-step set-up.
    fn pre_step(&mut self) {}

    /// Undoes the last [`pre_step`](GradApproximator::pre_step) and whatever the calls since
    /// advanced (a call counter), after the step failed: the optimiser calls it when a step
    /// returns an error or unwinds from a panic, so that the step retried next draws the same
    /// directions as if the failed one had never run. Default: nothing (an approximator
    /// without per-step counters). Buffers the approximator allocated may stay allocated.
    fn abort_step(&mut self) {}

    /// Estimates the gradient of `objective` at `params` into `grad`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for bad settings or mismatched `params`/`grad`;
    /// [`Error::NonFiniteLoss`] when the loss is NaN or infinite; the objective's own errors;
    /// device errors. `params` are restored before any error is returned.
    fn approximate(
        &mut self,
        gpu: &Gpu,
        params: &mut Params,
        objective: &mut dyn Objective,
        grad: &mut Params,
    ) -> Result<Estimate>;

    /// As [`approximate`](GradApproximator::approximate) when the caller already knows
    /// `loss = f(params)`: formulas that use f₀ take it instead of evaluating it (one evaluation
    /// fewer). The default ignores `loss`.
    ///
    /// # Errors
    /// As [`approximate`](GradApproximator::approximate).
    fn approximate_with_loss(
        &mut self,
        gpu: &Gpu,
        params: &mut Params,
        objective: &mut dyn Objective,
        grad: &mut Params,
        loss: f32,
    ) -> Result<Estimate> {
        let _ = loss;
        self.approximate(gpu, params, objective, grad)
    }

    /// Bytes of GPU buffers the estimator owns now (state, saved copies). 0 by default.
    fn state_bytes(&self) -> u64 {
        0
    }

    /// Whether `approximate` restores the parameters bit-exactly (`exact_restore(true)`, or
    /// [`Fdm`], which writes elements back). The [`Optimizer`](crate::optim::Optimizer) then
    /// also undoes its modules' moves of x (line-search trials, Newton-CG's shifted points) by
    /// copy, so the whole step restores exactly. Default false.
    fn restores_exactly(&self) -> bool {
        false
    }

    /// Where the estimate goes in an optimiser chain (default [`Target::Closure`]).
    fn current_target(&self) -> Target {
        Target::Closure
    }

    /// Whether [`fused_step`](GradApproximator::fused_step) is implemented: the estimator can
    /// fold its last restore of the parameters into the update, so an optimiser whose chain is
    /// only [`Lr`](crate::optim::Lr) and [`WeightDecay`](crate::optim::WeightDecay) needs no
    /// gradient buffer (default false).
    fn can_fuse(&self) -> bool {
        false
    }

    /// The estimator's state for a checkpoint ([`Optimizer::save`](crate::optim::Optimizer::save)):
    /// its name, every setting, its seed and counters and its GPU state buffers. `Ok(None)`, the
    /// default, says the estimator cannot be checkpointed (an optimiser holding it then refuses
    /// to save); implement it with [`load_state`](GradApproximator::load_state) for your own
    /// estimator to make it checkpointable.
    ///
    /// # Errors
    /// Device errors (reading state buffers back).
    fn save_state(&self) -> Result<Option<State>> {
        Ok(None)
    }

    /// Restores a state written by [`save_state`](GradApproximator::save_state) into an
    /// estimator built with the same settings, for parameters of buffer lengths `shape` on
    /// `gpu`. All or nothing: on error the estimator is unchanged. The seed is part of the
    /// state, so an estimator built with a default (random) seed takes the checkpoint's.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming what differs (the name, a setting, a tensor's length);
    /// the default returns [`Error::Unsupported`].
    fn load_state(&mut self, gpu: &Gpu, shape: &[u64], state: &State) -> Result<()> {
        let _ = (gpu, shape, state);
        Err(Error::Unsupported(
            "this approximator cannot be checkpointed (save_state returns None)".into(),
        ))
    }

    /// Estimates the gradient ĝ at `params` and applies `x ← a·x − alpha·ĝ` in place, without a
    /// gradient buffer (the fused MeZO step of [`MeZo`]). Called after
    /// [`pre_step`](GradApproximator::pre_step) by [`Optimizer`](crate::optim::Optimizer) when
    /// [`can_fuse`](GradApproximator::can_fuse) is true.
    ///
    /// # Errors
    /// As [`approximate`](GradApproximator::approximate); the default returns
    /// [`Error::Unsupported`]. On error the parameters are restored and not updated.
    fn fused_step(
        &mut self,
        gpu: &Gpu,
        params: &mut Params,
        objective: &mut dyn Objective,
        a: f32,
        alpha: f32,
    ) -> Result<Estimate> {
        let _ = (gpu, params, objective, a, alpha);
        Err(Error::Unsupported(
            "this approximator has no fused step (can_fuse() is false)".into(),
        ))
    }
}

/// Fails unless `params` and `grad` live on `gpu` and have the same shape.
pub(crate) fn check_buffers(gpu: &Gpu, params: &Params, grad: &Params) -> Result<()> {
    check_device(params, "params", gpu, "the `gpu` argument")?;
    check_device(grad, "grad", gpu, "params")?;
    if !grad.same_shape(params) {
        return Err(Error::invalid(format!(
            "grad: buffer lengths {:?} differ from the parameters' {:?}",
            grad.buffer_lens(),
            params.buffer_lens()
        )));
    }
    Ok(())
}

/// Fails unless the objective's batch method `method` returned one value for each of `points`.
pub(crate) fn check_batch_len(method: &str, values: usize, points: usize) -> Result<()> {
    if values == points {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "objective: {method} returned {values} values for {points} points"
        )))
    }
}

/// Fails unless `h` is finite and positive.
pub(crate) fn check_h(h: f32) -> Result<()> {
    if h.is_finite() && h > 0.0 {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "h: must be finite and positive, got {h}"
        )))
    }
}

/// Fails when `n_samples` is 0.
pub(crate) fn check_samples(n_samples: u32) -> Result<()> {
    if n_samples == 0 {
        Err(Error::invalid("n_samples: must be at least 1, got 0"))
    } else {
        Ok(())
    }
}

/// Fails with [`Error::NonFiniteLoss`] unless `value` is finite.
pub(crate) fn check_loss(value: f32, context: impl FnOnce() -> String) -> Result<f32> {
    check_value(value, false, context)
}

/// [`check_loss`], or `value` unchecked when `allow` (the estimators' `allow_non_finite`).
pub(crate) fn check_value(
    value: f32,
    allow: bool,
    context: impl FnOnce() -> String,
) -> Result<f32> {
    if allow || value.is_finite() {
        Ok(value)
    } else {
        Err(Error::NonFiniteLoss {
            value,
            context: context(),
        })
    }
}

/// A seed from the OS's entropy (through std's randomly keyed `RandomState`), for estimators
/// built without one.
pub(crate) fn entropy_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}
