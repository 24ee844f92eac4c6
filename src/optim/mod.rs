// SPDX-License-Identifier: MIT OR Apache-2.0
//! Optimisers: a gradient approximator followed by a chain of modules, as torchzero writes
//! `tz.Optimizer(params, tz.m.SPSA(), tz.m.HeavyBall(0.9), tz.m.LR(1e-3))` (SPEC.md §3–§4).
//!
//! ```no_run
//! use zograd::approx::MeZo;
//! use zograd::optim::{HeavyBall, Lr, Optimizer};
//! use zograd::{Gpu, Params};
//! # fn main() -> zograd::Result<()> {
//! let gpu = Gpu::new()?;
//! let mut x = Params::from_slices(&gpu, &[&[1.0f32; 1000][..]])?;
//! let mut loss = |p: &Params| -> zograd::Result<f32> { Ok(p.to_vec()?.iter().map(|v| v * v).sum()) };
//! let mut opt = Optimizer::new(&gpu, &x, MeZo::new().seed(42))?
//!     .then(HeavyBall::new(0.9))
//!     .then(Lr::new(1e-3));
//! for _ in 0..10 {
//!     let report = opt.step(&mut x, &mut loss)?;
//!     println!("step {}: loss {:?} after {} evaluations", report.step, report.loss, report.evaluations);
//! }
//! # Ok(()) }
//! ```
//!
//! A step runs the approximator's `pre_step`, estimates the gradient into the update buffer,
//! passes the update through the modules in order (each an elementwise kernel on its own GPU
//! state, created on the first step), and applies `x ← x − update`. Modules that need the
//! loss or the gradient at other points — [`Backtracking`], [`NewtonCg`] — call the objective
//! and the approximator themselves.
//!
//! The approximator's [`Target`] (SPEC.md §3) says what the chain may do with it:
//!
//! | target | the chain starts from the estimate | the estimate is kept as the gradient ([`Context::grad`]) | the approximator is an oracle at other points ([`Context::approximator`]) |
//! |---|---|---|---|
//! | [`Target::Update`] | yes | no | no |
//! | [`Target::Grad`] | yes | yes | no |
//! | [`Target::Closure`] (default) | yes | yes | yes |
//!
//! So [`Backtracking`] (which needs the gradient for its sufficient-decrease test) needs `Grad`
//! or `Closure`, and [`NewtonCg`] (which estimates gradients at shifted points) needs
//! `Closure`; a chain that asks for more than its approximator's target gives is an
//! [`Error::InvalidArgument`] at the first step, before anything is evaluated.
//!
//! **Fused MeZO step.** When the approximator can fuse (see
//! [`GradApproximator::fused_step`]: [`MeZo`](crate::approx::MeZo)) and every module is [`Lr`]
//! or [`WeightDecay`], the last restore of the parameters and the update are one kernel,
//! `x ← (1 − β)·x − α·ĝ` with ĝ regenerated from the seeds, and no gradient buffer exists:
//! [`Optimizer::state_bytes`] is 0.

mod backtracking;
mod modules;
mod newton_cg;

pub use backtracking::Backtracking;
pub use modules::{Adam, ClipNorm, HeavyBall, Lr, Sign, WeightDecay};
pub use newton_cg::{Hvp, NewtonCg};

use std::fmt;

use crate::approx::{Estimate, GradApproximator, Target};
use crate::kernels::{axpy, copy};
use crate::{Error, Gpu, Objective, Params, Result};

/// How a module acts on an update of the form `u = α·g + β·x` (g the estimate, x the
/// parameters), for the fused step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fusion {
    /// `u ← lr·u`.
    Scale(f32),
    /// `u ← u + wd·x`.
    AddParams(f32),
}

/// What a module sees when it transforms the update.
pub struct Context<'a> {
    /// The device.
    pub gpu: &'a Gpu,
    /// The parameters x at which the step was estimated. A module that moves them (to evaluate
    /// the loss elsewhere) must put them back before it returns, also on error.
    pub params: &'a mut Params,
    /// The update flowing through the chain; the optimiser finally applies `x ← x − update`.
    pub update: &'a mut Params,
    /// The approximator's estimate at x, kept when a module asks for it
    /// ([`Transform::needs_grad`]) and the approximator's target is [`Target::Grad`] or
    /// [`Target::Closure`].
    pub grad: Option<&'a Params>,
    /// The loss.
    pub objective: &'a mut dyn Objective,
    /// The approximator as a gradient oracle at other points (same directions within a step),
    /// when its target is [`Target::Closure`] (torchzero's default).
    pub approximator: Option<&'a mut dyn GradApproximator>,
    /// f(x), when known; a module that evaluates it stores it here.
    pub loss: Option<f32>,
    /// Objective evaluations so far in this step; a module adds its own.
    pub evaluations: u32,
    /// The step number, from 1.
    pub step: u64,
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("loss", &self.loss)
            .field("evaluations", &self.evaluations)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

/// A module of the optimiser chain: transforms the update in place on the GPU, with its own
/// state buffers (optax's `GradientTransformation`, torchzero's module).
pub trait Transform: Send + fmt::Debug {
    /// A short name for messages.
    fn name(&self) -> &'static str;

    /// Checks the hyper-parameters (called at every step, before anything is evaluated).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the hyper-parameter and its value.
    fn validate(&self) -> Result<()> {
        Ok(())
    }

    /// Whether the module reads [`Context::grad`] (the optimiser then keeps a copy of the
    /// estimate, one more n-sized buffer). Such a module needs an approximator whose target is
    /// [`Target::Grad`] or [`Target::Closure`].
    fn needs_grad(&self) -> bool {
        false
    }

    /// Whether the module calls the approximator at other points ([`Context::approximator`]);
    /// it then needs an approximator whose target is [`Target::Closure`].
    fn needs_oracle(&self) -> bool {
        false
    }

    /// Transforms `ctx.update` in place.
    ///
    /// # Errors
    /// Device errors; a module that evaluates the objective passes its errors on (with the
    /// parameters restored).
    fn apply(&mut self, ctx: &mut Context<'_>) -> Result<()>;

    /// Bytes of the GPU buffers the module owns.
    fn state_bytes(&self) -> u64 {
        0
    }

    /// The module's effect on `u = α·g + β·x`, if it is that simple ([`Lr`], [`WeightDecay`]).
    fn fusion(&self) -> Option<Fusion> {
        None
    }
}

/// What one [`Optimizer::step`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// f(x) before the step, when the step evaluated it (formulas that use f₀, line searches).
    pub loss: Option<f32>,
    /// An approximation of f(x) before the step (f₀ if known, else a perturbed value).
    pub loss_approx: Option<f32>,
    /// Objective evaluations the step made.
    pub evaluations: u32,
    /// The step's number, from 1.
    pub step: u64,
}

/// An approximator and a chain of [`Transform`]s; `step` estimates, transforms and applies one
/// update.
pub struct Optimizer {
    gpu: Gpu,
    approximator: Box<dyn GradApproximator + Send>,
    modules: Vec<Box<dyn Transform>>,
    shape: Vec<u64>,
    update: Option<Params>,
    grad: Option<Params>,
    step: u64,
    fuse: bool,
}

impl fmt::Debug for Optimizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Optimizer")
            .field("modules", &self.modules)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl Optimizer {
    /// An optimiser for parameters shaped like `params` (same buffer lengths, on `gpu`) that
    /// estimates gradients with `approximator`. Add modules with [`then`](Optimizer::then);
    /// without any, the update is the estimate itself (a learning rate of 1).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `params` live on another device.
    pub fn new<A: GradApproximator + Send + 'static>(
        gpu: &Gpu,
        params: &Params,
        approximator: A,
    ) -> Result<Self> {
        if !params.gpu().same(gpu) {
            return Err(Error::invalid(
                "params: live on another Gpu than the `gpu` argument",
            ));
        }
        Ok(Self {
            gpu: gpu.clone(),
            approximator: Box::new(approximator),
            modules: Vec::new(),
            shape: params.buffer_lens().to_vec(),
            update: None,
            grad: None,
            step: 0,
            fuse: true,
        })
    }

    /// Whether to use the fused MeZO step when the chain allows it (default true). `false`
    /// runs the same chain unfused, with a gradient buffer: for comparison and tests.
    #[must_use]
    pub fn fuse(mut self, fuse: bool) -> Self {
        self.fuse = fuse;
        self
    }

    /// Appends a module to the chain.
    #[must_use]
    pub fn then<T: Transform + 'static>(mut self, module: T) -> Self {
        self.modules.push(Box::new(module));
        self
    }

    /// Steps taken so far.
    #[must_use]
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The approximator.
    #[must_use]
    pub fn approximator(&self) -> &dyn GradApproximator {
        &*self.approximator
    }

    /// Bytes of the n-sized GPU buffers the optimiser owns: the update and gradient buffers,
    /// the modules' state and the approximator's. 0 for the fused MeZO step.
    #[must_use]
    pub fn state_bytes(&self) -> u64 {
        let own = [&self.update, &self.grad]
            .iter()
            .filter_map(|b| b.as_ref())
            .map(Params::owned_bytes)
            .sum::<u64>();
        own + self.modules.iter().map(|m| m.state_bytes()).sum::<u64>()
            + self.approximator.state_bytes()
    }

    /// The fused step's (β, α) when every module is [`Lr`] or [`WeightDecay`] and the
    /// approximator can fuse: the chain maps u = g to u = α·g + β·x.
    fn fusion(&self) -> Option<(f32, f32)> {
        if !self.fuse || !self.approximator.can_fuse() {
            return None;
        }
        let (mut alpha, mut beta) = (1.0f64, 0.0f64);
        for m in &self.modules {
            match m.fusion()? {
                Fusion::Scale(lr) => {
                    alpha *= f64::from(lr);
                    beta *= f64::from(lr);
                }
                Fusion::AddParams(wd) => beta += f64::from(wd),
            }
        }
        Some((beta as f32, alpha as f32))
    }

    /// One optimisation step: estimate, transform, apply `x ← x − update`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a module's bad hyper-parameter or parameters of another
    /// shape or device; the approximator's and the objective's errors. The parameters are
    /// restored before an error is returned.
    pub fn step(
        &mut self,
        params: &mut Params,
        objective: &mut dyn Objective,
    ) -> Result<StepReport> {
        if !params.gpu().same(&self.gpu) {
            return Err(Error::invalid(
                "params: live on another Gpu than the optimiser's",
            ));
        }
        if params.buffer_lens() != self.shape.as_slice() {
            return Err(Error::invalid(format!(
                "params: buffer lengths {:?} differ from the optimiser's {:?}",
                params.buffer_lens(),
                self.shape
            )));
        }
        let target = self.approximator.current_target();
        for m in &self.modules {
            m.validate()?;
            if m.needs_oracle() && target != Target::Closure {
                return Err(Error::invalid(format!(
                    "target: {} calls the approximator at other points and needs Target::Closure, \
                     the approximator's target is {target:?}",
                    m.name()
                )));
            }
            if m.needs_grad() && target == Target::Update {
                return Err(Error::invalid(format!(
                    "target: {} needs the gradient, which Target::Update does not keep (use \
                     Target::Grad or Target::Closure)",
                    m.name()
                )));
            }
        }
        let step = self.step + 1;
        if let Some((beta, alpha)) = self.fusion() {
            self.approximator.pre_step();
            let est =
                self.approximator
                    .fused_step(&self.gpu, params, objective, 1.0 - beta, alpha)?;
            self.step = step;
            return Ok(report(&est, est.loss, est.evaluations, step));
        }
        let update = ensure_like(&mut self.update, params)?;
        self.approximator.pre_step();
        let est: Estimate = self
            .approximator
            .approximate(&self.gpu, params, objective, update)?;
        let grad = if self.modules.iter().any(|m| m.needs_grad()) {
            let g = ensure_like(&mut self.grad, params)?;
            copy(g, update)?;
            Some(&*g)
        } else {
            None
        };
        let mut ctx = Context {
            gpu: &self.gpu,
            params,
            update,
            grad,
            objective,
            approximator: (target == Target::Closure)
                .then_some(&mut *self.approximator as &mut dyn GradApproximator),
            loss: est.loss,
            evaluations: est.evaluations,
            step,
        };
        for m in &mut self.modules {
            m.apply(&mut ctx)?;
        }
        let (loss, evaluations) = (ctx.loss, ctx.evaluations);
        axpy(ctx.params, -1.0, ctx.update)?;
        self.step = step;
        Ok(report(&est, loss, evaluations, step))
    }
}

fn report(est: &Estimate, loss: Option<f32>, evaluations: u32, step: u64) -> StepReport {
    StepReport {
        loss,
        loss_approx: est.loss_approx.or(loss),
        evaluations,
        step,
    }
}

/// A zeroed buffer shaped like `params` in `slot`, created on first use (and again if the shape
/// or chunking changed).
pub(crate) fn ensure_like<'a>(
    slot: &'a mut Option<Params>,
    params: &Params,
) -> Result<&'a mut Params> {
    let fits = slot.as_ref().is_some_and(|s| {
        s.gpu().same(params.gpu()) && s.same_shape(params) && s.chunk_len() == params.chunk_len()
    });
    if !fits {
        *slot = None;
        let mut s = params.zeros_like()?;
        if s.chunk_len() != params.chunk_len() {
            s.set_max_chunk_len(params.chunk_len())?;
        }
        *slot = Some(s);
    }
    Ok(slot.as_mut().expect("the buffer was just created"))
}

/// Parameters moved by `t·v`, moved back by [`Shifted::restore`] or, if that never runs (an
/// early return or a panic in the objective), on drop.
pub(crate) struct Shifted<'a> {
    params: &'a mut Params,
    t: f32,
    v: &'a Params,
    done: bool,
}

impl<'a> Shifted<'a> {
    pub(crate) fn new(params: &'a mut Params, t: f32, v: &'a Params) -> Result<Self> {
        axpy(params, t, v)?;
        Ok(Self {
            params,
            t,
            v,
            done: false,
        })
    }

    pub(crate) fn params(&mut self) -> &mut Params {
        self.params
    }

    pub(crate) fn restore(mut self) -> Result<()> {
        self.done = true;
        axpy(self.params, -self.t, self.v)
    }
}

impl Drop for Shifted<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Best effort: a failing kernel here has already been reported by the caller's error.
            let _ = axpy(self.params, -self.t, self.v);
        }
    }
}

/// f(x): known from the estimate, or evaluated now (one evaluation, counted).
pub(crate) fn loss_at_x(ctx: &mut Context<'_>) -> Result<f32> {
    if let Some(f) = ctx.loss {
        return Ok(f);
    }
    let f = ctx.objective.loss(ctx.params)?;
    ctx.evaluations += 1;
    let f = crate::approx::check_loss(f, || "f(x) for the line search".into())?;
    ctx.loss = Some(f);
    Ok(f)
}

/// f(x + t·update), with x moved back afterwards (also on error or panic); counted.
pub(crate) fn loss_shifted(ctx: &mut Context<'_>, t: f32) -> Result<f32> {
    let mut shifted = Shifted::new(ctx.params, t, ctx.update)?;
    let f = ctx.objective.loss(shifted.params());
    shifted.restore()?;
    ctx.evaluations += 1;
    f
}
