// SPDX-License-Identifier: MIT OR Apache-2.0
//! Armijo backtracking line search along the update.

use serde_json::json;

use super::checkpoint::check_module;
use super::{Context, Transform};
use crate::checkpoint::State;
use crate::kernels::{dot, scale};
use crate::{Error, Gpu, Result};

/// Armijo backtracking (torchzero's `Backtracking`, with its rules and defaults): tries steps
/// `t = t₀, t₀·β, t₀·β², …` (at most `max_iter`) along `−update` and returns the first with
///
/// `f(x − t·update) < f(x) + c·t·min(s, 0)`, with `s = −g·update`
///
/// the directional derivative along `−update` from the estimated gradient g (strict: a step
/// that does not decrease f is never accepted, also when `update` is not a descent direction,
/// s ≥ 0); then `update ← t·update`. Two more rules, as torchzero:
///
/// - **an earlier step that decreased f**: when a trial is worse than the previous trial and
///   the previous one decreased f (without passing the test), the previous step is returned;
/// - **adaptive start** ([`adaptive`](Backtracking::adaptive), default true): t₀ = init·σ, where
///   the scale σ is 1 after a successful search and is multiplied by β^max_iter after a failed
///   one, so the next search goes on shrinking from where the failed one stopped. Without it,
///   every search starts from init.
///
/// With a noisy random gradient estimate a failed search often says more about the sample than
/// about the step size; `adaptive(false)` can then work better (examples/newton_cg.rs).
///
/// If no trial passes, the step is 0 (the update is zeroed), as torchzero does. A trial whose
/// loss is NaN or infinite counts as failed (the search shrinks the step and the trial does not
/// count as the "previous trial"); a non-finite f(x) is an [`Error::NonFiniteLoss`].
///
/// Costs one evaluation per trial, plus one for f(x) when the approximator did not evaluate it,
/// and one dot product read back. The parameters are moved in place for each trial and moved
/// back, also when the objective fails or panics: by copy, bit-exactly, when the approximator
/// restores exactly ([`Context::saved`](super::Context::saved)), otherwise by the opposite move
/// (drift of f32 rounding, as the estimators').
///
/// # Differences from torchzero
///
/// - The test is evaluated in f64 from the f32 losses (torchzero: in the parameters' dtype).
/// - When σ has fallen to 2·`f32::MIN_POSITIVE` or below, torchzero sets σ ← 2·init·σ, which
///   keeps every later trial step below f32 resolution (its comment says it means to restart
///   from a large step); zograd restarts from σ = 1.
/// - The earlier step is returned as the earlier trial's `t` (torchzero: `t/β`, the same value up
///   to rounding).
/// - Only the `armijo` condition is offered (torchzero also has `decrease` and others).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backtracking {
    init: f32,
    beta: f32,
    c: f32,
    max_iter: u32,
    adaptive: bool,
    /// σ, the scale of the next search's first step.
    init_scale: f64,
    last_step: Option<f32>,
    /// (σ, last step) saved by `checkpoint`.
    saved: Option<(f64, Option<f32>)>,
}

impl Backtracking {
    /// torchzero's defaults: init = 1, β = 0.5, c = 1e-4, max_iter = 10, adaptive.
    #[must_use]
    pub fn new() -> Self {
        Self {
            init: 1.0,
            beta: 0.5,
            c: 1e-4,
            max_iter: 10,
            adaptive: true,
            init_scale: 1.0,
            last_step: None,
            saved: None,
        }
    }

    /// The first step size tried (> 0), before the adaptive scale.
    #[must_use]
    pub fn init(mut self, init: f32) -> Self {
        self.init = init;
        self
    }

    /// The shrink factor, in (0, 1).
    #[must_use]
    pub fn beta(mut self, beta: f32) -> Self {
        self.beta = beta;
        self
    }

    /// The sufficient-decrease constant, in (0, 1).
    #[must_use]
    pub fn c(mut self, c: f32) -> Self {
        self.c = c;
        self
    }

    /// The most trials per step (≥ 1).
    #[must_use]
    pub fn max_iter(mut self, max_iter: u32) -> Self {
        self.max_iter = max_iter;
        self
    }

    /// Whether a failed search makes the next one start from its last step size times β
    /// (default true, as torchzero); `false` starts every search from `init`.
    #[must_use]
    pub fn adaptive(mut self, adaptive: bool) -> Self {
        self.adaptive = adaptive;
        self
    }

    /// The step size accepted at the last step (0 when none passed).
    #[must_use]
    pub fn last_step(&self) -> Option<f32> {
        self.last_step
    }

    fn first_step(&self) -> f64 {
        if self.adaptive {
            f64::from(self.init) * self.init_scale
        } else {
            f64::from(self.init)
        }
    }
}

impl Default for Backtracking {
    fn default() -> Self {
        Self::new()
    }
}

impl Backtracking {
    fn config(&self) -> serde_json::Value {
        json!({
            "init": self.init,
            "beta": self.beta,
            "c": self.c,
            "max_iter": self.max_iter,
            "adaptive": self.adaptive,
        })
    }
}

impl Transform for Backtracking {
    /// The settings and the search state: the adaptive scale σ and the last step.
    fn save_state(&self) -> Result<Option<State>> {
        let mut st = State::new("Backtracking", self.config());
        st.counters = json!({ "init_scale": self.init_scale, "last_step": self.last_step });
        Ok(Some(st))
    }
    fn load_state(&mut self, _gpu: &Gpu, _shape: &[u64], state: &State) -> Result<()> {
        check_module("Backtracking", &self.config(), state)?;
        let scale = state.counter_f64("init_scale")?.ok_or_else(|| {
            Error::invalid("checkpoint: Backtracking's counter `init_scale` is null")
        })?;
        let last = state.counter_f64("last_step")?.map(|t| t as f32);
        self.init_scale = scale;
        self.last_step = last;
        self.saved = None;
        Ok(())
    }
    fn name(&self) -> &'static str {
        "Backtracking"
    }

    fn validate(&self) -> Result<()> {
        let bad = |name: &str, v: f32, range: &str| {
            Err(Error::invalid(format!("{name}: must be {range}, got {v}")))
        };
        if !(self.init.is_finite() && self.init > 0.0) {
            return bad("init", self.init, "finite and positive");
        }
        if !(self.beta > 0.0 && self.beta < 1.0) {
            return bad("beta", self.beta, "in (0, 1)");
        }
        if !(self.c > 0.0 && self.c < 1.0) {
            return bad("c", self.c, "in (0, 1)");
        }
        if self.max_iter == 0 {
            return Err(Error::invalid("max_iter: must be at least 1, got 0"));
        }
        Ok(())
    }

    fn needs_grad(&self) -> bool {
        true
    }

    fn evaluates(&self) -> bool {
        true
    }

    fn checkpoint(&mut self) -> Result<()> {
        self.saved = Some((self.init_scale, self.last_step));
        Ok(())
    }

    fn rollback(&mut self) -> Result<()> {
        if let Some((scale, last)) = self.saved.take() {
            self.init_scale = scale;
            self.last_step = last;
        }
        Ok(())
    }

    fn apply(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        let g = ctx.grad.ok_or_else(|| {
            Error::invalid("grad: Backtracking needs the gradient, and Context::grad is None")
        })?;
        let f0 = f64::from(super::loss_at_x(ctx)?);
        // The directional derivative along −update.
        let slope = -dot(g, ctx.update)?;
        let (beta, c) = (f64::from(self.beta), f64::from(self.c));
        let first = self.first_step();
        let mut t = first;
        let mut prev: Option<(f64, f64)> = None;
        let mut accepted = None;
        for _ in 0..self.max_iter {
            let f = f64::from(super::loss_shifted(ctx, -(t as f32))?);
            if !f.is_finite() {
                t *= beta;
                continue;
            }
            if let Some((t_prev, f_prev)) = prev {
                if f > f_prev && f_prev < f0 {
                    accepted = Some(t_prev);
                    break;
                }
            }
            prev = Some((t, f));
            if f < f0 + c * t * slope.min(0.0) {
                accepted = Some(t);
                break;
            }
            t *= beta;
        }
        match accepted {
            Some(_) => self.init_scale = 1.0,
            None if self.adaptive => {
                self.init_scale = if self.init_scale <= 2.0 * f64::from(f32::MIN_POSITIVE) {
                    1.0
                } else {
                    self.init_scale * beta.powf(f64::from(self.max_iter))
                };
            }
            None => {}
        }
        let step = accepted.unwrap_or(0.0) as f32;
        self.last_step = Some(step);
        scale(ctx.update, step)
    }
}
