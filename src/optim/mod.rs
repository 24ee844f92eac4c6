// SPDX-License-Identifier: MIT OR Apache-2.0
//! Optimisers: a gradient approximator followed by a chain of modules, as torchzero writes
//! `tz.Optimizer(params, tz.m.SPSA(), tz.m.HeavyBall(0.9), tz.m.LR(1e-3))` (see
//! ARCHITECTURE.md, "The optimiser chain").
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
//! The approximator's [`Target`] says what the chain may do with it:
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
//! **Failed steps leave no trace.** When [`Optimizer::step`] fails — the objective's error, a
//! non-finite loss, a device error — or the objective panics (the panic propagates), the
//! parameters are restored (bit-exactly when the approximator
//! [`restores_exactly`](GradApproximator::restores_exactly)), and the step counters
//! ([`GradApproximator::abort_step`]) and the state of the modules before a module that
//! [`evaluates`](Transform::evaluates) the objective ([`Transform::checkpoint`] /
//! [`Transform::rollback`]) are as before the call: the next step does what the failed one
//! would have done.
//!
//! **Fused MeZO step.** When the approximator can fuse (see
//! [`GradApproximator::fused_step`]: [`MeZo`](crate::approx::MeZo)) and every module is [`Lr`]
//! or [`WeightDecay`], the last restore of the parameters and the update are one kernel,
//! `x ← (1 − β)·x − α·ĝ` with ĝ regenerated from the seeds, and no gradient buffer exists:
//! [`Optimizer::state_bytes`] is 0. [`Project`] (box bounds) keeps the chain fused: it clamps x
//! right after the fused update.

mod average;
mod backtracking;
mod blocking;
mod checkpoint;
mod modules;
mod newton_cg;
mod project;
mod run;
mod schedule;

pub use crate::schedule::Schedule;
pub use backtracking::Backtracking;
pub use blocking::Blocking;
pub use modules::{Adam, ClipNorm, EmaInit, HeavyBall, Lr, Sign, WeightDecay};
pub use newton_cg::{Hvp, NewtonCg};
pub use project::Project;
pub use run::{Control, Run, Stop, Summary};

use std::fmt;
use std::panic::{self, AssertUnwindSafe};

use crate::approx::{Estimate, GradApproximator, Target};
use crate::checkpoint::State;
use crate::kernels::{axpy, copy};
use crate::restore::{check_device, saved_copy, Move, Restore};
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
    /// A copy of x taken at the start of the chain, when the approximator restores exactly
    /// ([`GradApproximator::restores_exactly`]) and a module of the chain
    /// [`evaluates`](Transform::evaluates) the objective: a module that moves x puts it back by
    /// copying this (bit-exact) instead of by the opposite move. `None` otherwise.
    pub saved: Option<&'a Params>,
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
pub trait Transform: Send + fmt::Debug + std::any::Any {
    /// A short name for messages.
    fn name(&self) -> &'static str;

    /// Checks the hyper-parameters (called at every step, before anything is evaluated).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the hyper-parameter and its value.
    fn validate(&self) -> Result<()> {
        Ok(())
    }

    /// Checks the module's requirements on the parameters (called at every step, before
    /// anything is evaluated; default: none). [`Project`] needs bounds.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming what the parameters lack.
    fn check_params(&self, params: &Params) -> Result<()> {
        let _ = params;
        Ok(())
    }

    /// Acts on the parameters after the optimiser applied the update (`x ← x − update`, or the
    /// fused MeZO step), for every module in chain order; default: nothing. [`Project`] clamps x
    /// into its bounds here.
    ///
    /// # Errors
    /// Device errors (the step then fails with x already updated).
    fn after_update(&mut self, params: &mut Params) -> Result<()> {
        let _ = params;
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

    /// Whether `apply` evaluates the objective or calls the approximator ([`Backtracking`],
    /// [`NewtonCg`]), and so may fail with the objective's error (or panic) after earlier
    /// modules of the chain have changed their state. Default false.
    fn evaluates(&self) -> bool {
        false
    }

    /// Saves the state the next [`apply`](Transform::apply) will change, for
    /// [`rollback`](Transform::rollback). The optimiser calls it just before `apply` when a
    /// later module of the chain [`evaluates`](Transform::evaluates). Default: nothing to save
    /// (a module without state across steps).
    ///
    /// # Errors
    /// Device errors (the step then fails before `apply`).
    fn checkpoint(&mut self) -> Result<()> {
        Ok(())
    }

    /// Puts back the state saved by the last [`checkpoint`](Transform::checkpoint), after a
    /// later module failed (error or panic), so that the failed step leaves no trace. Default:
    /// nothing.
    ///
    /// # Errors
    /// Device errors.
    fn rollback(&mut self) -> Result<()> {
        Ok(())
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

    /// The module's state for a checkpoint ([`Optimizer::save`]): its hyper-parameters, its
    /// counters and its GPU state buffers. `Ok(None)`, the default, says the module cannot be
    /// checkpointed (the optimiser then refuses to save); implement it with
    /// [`load_state`](Transform::load_state) for your own module.
    ///
    /// # Errors
    /// Device errors (reading state buffers back).
    fn save_state(&self) -> Result<Option<State>> {
        Ok(None)
    }

    /// Restores a state written by [`save_state`](Transform::save_state) into a module built
    /// with the same hyper-parameters, for parameters of buffer lengths `shape` on `gpu`. All or
    /// nothing: on error the module is unchanged.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming what differs; the default returns
    /// [`Error::Unsupported`].
    fn load_state(&mut self, gpu: &Gpu, shape: &[u64], state: &State) -> Result<()> {
        let _ = (gpu, shape, state);
        Err(Error::Unsupported(format!(
            "{} cannot be checkpointed (save_state returns None)",
            self.name()
        )))
    }

    /// The module's effect on `u = α·g + β·x`, if it is that simple ([`Lr`], [`WeightDecay`]).
    fn fusion(&self) -> Option<Fusion> {
        None
    }

    /// [`fusion`](Transform::fusion) at step `step` (from 1), for a module whose factor
    /// follows a schedule ([`Lr::scheduled`]). Default: `fusion()`.
    fn fusion_at(&self, step: u64) -> Option<Fusion> {
        let _ = step;
        self.fusion()
    }
}

/// What one [`Optimizer::step`] did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepReport {
    /// f(x) at the step's start point, when the step evaluated it: formulas that use f₀, line
    /// searches, [`Optimizer::measure_loss`], or the first step of
    /// [`Optimizer::blocking`] with a given tolerance (its reference f(x₀)). `None` for a central estimate without any of
    /// these (it never evaluates f at x itself).
    pub loss: Option<f32>,
    /// An approximation of f(x) before the step: [`loss`](StepReport::loss) when known, else
    /// the loss at one of the estimate's perturbed points (for a central difference f(x + h·u)
    /// of the last sample, which can be far from f(x) while h or the curvature is large). For
    /// logging f(x) itself, turn on [`Optimizer::measure_loss`].
    pub loss_approx: Option<f32>,
    /// Objective evaluations the step made.
    pub evaluations: u32,
    /// The step's number, from 1.
    pub step: u64,
    /// Whether the update was kept: always true, except with [`Optimizer::blocking`], where a
    /// step whose proposed point raised the loss by more than the tolerance is rejected and x
    /// is as before the step (bit-identical).
    pub accepted: bool,
    /// f at the proposed point x_new, when [`Optimizer::blocking`] evaluated it (every step
    /// with blocking); `None` otherwise.
    pub loss_proposed: Option<f32>,
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
    /// x at the start of the chain, for exact restoration by evaluating modules.
    snapshot: Option<Params>,
    step: u64,
    fuse: bool,
    checkpoints: bool,
    /// Whether the running step has called the approximator's `pre_step`.
    pre_stepped: bool,
    /// Modules checkpointed in the running step, in order.
    checkpointed: Vec<usize>,
    /// Whether each step evaluates f(x) at its start point ([`Optimizer::measure_loss`]).
    measure_loss: bool,
    /// Iterate averaging ([`Optimizer::average_from`]).
    averaging: Option<average::Averaging>,
    /// Conservative steps ([`Optimizer::blocking`]).
    blocking: Option<blocking::BlockingState>,
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
        check_device(params, "params", gpu, "the `gpu` argument")?;
        Ok(Self {
            gpu: gpu.clone(),
            approximator: Box::new(approximator),
            modules: Vec::new(),
            shape: params.buffer_lens().to_vec(),
            update: None,
            grad: None,
            snapshot: None,
            step: 0,
            fuse: true,
            checkpoints: true,
            pre_stepped: false,
            checkpointed: Vec::new(),
            measure_loss: false,
            averaging: None,
            blocking: None,
        })
    }

    /// Whether each step first evaluates f(x) at its start point, for logging (default false):
    /// [`StepReport::loss`] and [`StepReport::loss_approx`] are then that value, and
    /// [`StepReport::evaluations`] counts it. It costs one evaluation per step, except that an
    /// unfused estimator whose formula uses f₀ (a forward or backward difference) takes the
    /// measured value instead of evaluating f₀ itself, and a line search reuses it. The
    /// measured value is checked like the estimator's own f₀ (its `allow_non_finite` setting)
    /// on the unfused path; the fused MeZO step reports it as measured.
    #[must_use]
    pub fn measure_loss(mut self, measure: bool) -> Self {
        self.measure_loss = measure;
        self
    }

    /// Whether to use the fused MeZO step when the chain allows it (default true). `false`
    /// runs the same chain unfused, with a gradient buffer: for comparison and tests.
    #[must_use]
    pub fn fuse(mut self, fuse: bool) -> Self {
        self.fuse = fuse;
        self
    }

    /// Whether to checkpoint the state of modules that run before a module which
    /// [`evaluates`](Transform::evaluates) the objective (default true), so that a step failing
    /// in, say, [`Backtracking`] leaves [`HeavyBall`]'s velocity or [`Adam`]'s moments as they
    /// were. It costs one copy of each such state buffer per step, and the copies' memory
    /// (counted in [`state_bytes`](Optimizer::state_bytes)). `false` saves both; a failed step
    /// then still restores the parameters and the step counters, but the state of those modules
    /// has advanced.
    #[must_use]
    pub fn checkpoints(mut self, checkpoints: bool) -> Self {
        self.checkpoints = checkpoints;
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

    /// The approximator, to change its settings between steps (they are part of a
    /// checkpoint's configuration, which [`load`](Optimizer::load) compares).
    pub fn approximator_mut(&mut self) -> &mut (dyn GradApproximator + Send) {
        &mut *self.approximator
    }

    /// The module at `position` in the chain (from 0) if it is a `T`.
    #[must_use]
    pub fn module<T: Transform>(&self, position: usize) -> Option<&T> {
        let m: &dyn std::any::Any = &**self.modules.get(position)?;
        m.downcast_ref()
    }

    /// The module at `position` in the chain (from 0) if it is a `T`, to change it between
    /// steps (e.g. `*opt.module_mut::<Lr>(1).unwrap() = Lr::new(1e-4)`); its hyper-parameters
    /// are part of a checkpoint's configuration, which [`load`](Optimizer::load) compares.
    pub fn module_mut<T: Transform>(&mut self, position: usize) -> Option<&mut T> {
        let m: &mut dyn std::any::Any = &mut **self.modules.get_mut(position)?;
        m.downcast_mut()
    }

    /// Bytes of the n-sized GPU buffers the optimiser owns: the update and gradient buffers,
    /// the snapshot of x for exact restoration (and for [`blocking`](Optimizer::blocking)), the
    /// modules' state (checkpoints included) and the approximator's. 0 for the fused MeZO step
    /// without blocking (with blocking: the one copy of x).
    #[must_use]
    pub fn state_bytes(&self) -> u64 {
        let own = [&self.update, &self.grad, &self.snapshot]
            .iter()
            .filter_map(|b| b.as_ref())
            .map(Params::owned_bytes)
            .sum::<u64>();
        own + self.modules.iter().map(|m| m.state_bytes()).sum::<u64>()
            + self.approximator.state_bytes()
    }

    /// The fused step's (β, α) when every module is [`Lr`], [`WeightDecay`] or [`Project`]
    /// (whose fusion is the identity) and the approximator can fuse: the chain maps u = g to u = α·g + β·x.
    fn fusion(&self) -> Option<(f32, f32)> {
        if !self.fuse || !self.approximator.can_fuse() {
            return None;
        }
        let (mut alpha, mut beta) = (1.0f64, 0.0f64);
        for m in &self.modules {
            match m.fusion_at(self.step + 1)? {
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
    /// A step is all or nothing. When it fails — an error from the objective, a non-finite
    /// loss, a bad setting, a device error — or the objective panics (the panic propagates to
    /// the caller), the parameters are restored before the error is returned (bit-exactly when
    /// the approximator [`restores_exactly`](GradApproximator::restores_exactly), otherwise
    /// within the in-place drift documented in [`crate::approx`]); the step counter, the
    /// approximator's counters ([`GradApproximator::abort_step`]) and, with
    /// [`checkpoints`](Optimizer::checkpoints), the modules' state are as before the call, so
    /// the next step does what the failed one would have done. Only a lost device
    /// ([`Error::DeviceLost`]) loses the parameters with it.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a module's bad hyper-parameter or parameters of another
    /// shape or device; the approximator's and the objective's errors; device errors.
    pub fn step(
        &mut self,
        params: &mut Params,
        objective: &mut dyn Objective,
    ) -> Result<StepReport> {
        check_device(params, "params", &self.gpu, "the optimiser's")?;
        if params.buffer_lens() != self.shape.as_slice() {
            return Err(Error::invalid(format!(
                "params: buffer lengths {:?} differ from the optimiser's {:?}",
                params.buffer_lens(),
                self.shape
            )));
        }
        let target = self.approximator.current_target();
        if let Some(b) = &self.blocking {
            b.setting.validate()?;
        }
        for m in &self.modules {
            m.validate()?;
            m.check_params(params)?;
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
        self.pre_stepped = false;
        self.checkpointed.clear();
        // Blocking's calibration and reference, put back if the step fails.
        let blocking = self.blocking.clone();
        // The parameters are put back by the estimators' and modules' own guards while the
        // error returns or the panic unwinds; what is left to undo here is the counters and
        // the modules' state.
        match panic::catch_unwind(AssertUnwindSafe(|| {
            self.step_body(params, objective, target)
        })) {
            Ok(Ok(report)) => {
                // The caller may evaluate an objective of its own between steps, with its own
                // submissions: nothing of this step stays pending (only zograd's own objectives
                // let the fused update ride in the next step's first submission).
                if !objective.zograd_own(crate::objective::sealed::Own) {
                    if let Err(e) = params.gpu().flush() {
                        self.abort();
                        return Err(e);
                    }
                }
                self.step = report.step;
                self.checkpointed.clear();
                self.fold_average(params, report.step)?;
                Ok(report)
            }
            Ok(Err(e)) => {
                self.abort();
                self.blocking = blocking;
                Err(e)
            }
            Err(payload) => {
                self.abort();
                self.blocking = blocking;
                panic::resume_unwind(payload)
            }
        }
    }

    /// Undoes what a failed step changed besides the parameters.
    fn abort(&mut self) {
        if std::mem::take(&mut self.pre_stepped) {
            self.approximator.abort_step();
        }
        for k in std::mem::take(&mut self.checkpointed).into_iter().rev() {
            // Best effort: the step already reports an error (a failing rollback means the
            // device itself failed).
            let _ = self.modules[k].rollback();
        }
    }

    /// The body of [`step`](Optimizer::step); leaves `self.step` alone.
    fn step_body(
        &mut self,
        params: &mut Params,
        objective: &mut dyn Objective,
        target: Target,
    ) -> Result<StepReport> {
        let step = self.step + 1;
        // Blocking: a copy of x from before the estimate (a rejected step is copied back, so
        // even the in-place drift of the estimate is undone), the calibration of the first
        // step, and f(x₀) when no reference is known yet.
        let mut calibrations = 0;
        let mut first_reference = false;
        if let Some(b) = self.blocking.as_mut() {
            saved_copy(true, &mut self.snapshot, params)?;
            calibrations = b.calibrate(objective, params)?;
            first_reference = b.needs_reference();
        }
        let measured = if self.measure_loss || first_reference {
            let f = objective.scoped_loss(params)?;
            if first_reference {
                crate::approx::check_loss(f, || "f(x₀), the blocking reference".into())?;
            }
            Some(f)
        } else {
            None
        };
        let counted = u32::from(measured.is_some()).saturating_add(calibrations);
        if let Some((beta, alpha)) = self.fusion() {
            self.approximator.pre_step();
            self.pre_stepped = true;
            let mut est =
                self.approximator
                    .fused_step(&self.gpu, params, objective, 1.0 - beta, alpha)?;
            if measured.is_some() {
                est.loss_approx = measured;
            }
            let evaluations = est.evaluations.saturating_add(counted);
            for m in &mut self.modules {
                m.after_update(params)?;
            }
            let mut rep = report(&est, measured.or(est.loss), evaluations, step);
            self.decide(params, objective, &mut rep)?;
            return Ok(rep);
        }
        let update = ensure_like(&mut self.update, params)?;
        self.approximator.pre_step();
        self.pre_stepped = true;
        let mut est: Estimate = match measured {
            Some(f) => self
                .approximator
                .approximate_with_loss(&self.gpu, params, objective, update, f)?,
            None => self
                .approximator
                .approximate(&self.gpu, params, objective, update)?,
        };
        if measured.is_some() {
            est.loss = measured;
            est.loss_approx = measured;
        }
        est.evaluations = est.evaluations.saturating_add(counted);
        let grad = if self.modules.iter().any(|m| m.needs_grad()) {
            let g = ensure_like(&mut self.grad, params)?;
            copy(g, update)?;
            Some(&*g)
        } else {
            None
        };
        let last_evaluating = self.modules.iter().rposition(|m| m.evaluates());
        let exact = last_evaluating.is_some() && self.approximator.restores_exactly();
        let blocking = self.blocking.is_some();
        let saved = if blocking {
            // Taken before the estimate; equal to x now when the estimator restores exactly.
            self.snapshot.as_ref().filter(|_| exact)
        } else {
            saved_copy(exact, &mut self.snapshot, params)?
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
            saved,
        };
        for (k, m) in self.modules.iter_mut().enumerate() {
            // Blocking evaluates after every module and rolls them all back on a rejection.
            if self.checkpoints && (blocking || last_evaluating.is_some_and(|j| k < j)) {
                m.checkpoint()?;
                self.checkpointed.push(k);
            }
            m.apply(&mut ctx)?;
        }
        let (loss, evaluations) = (ctx.loss, ctx.evaluations);
        axpy(ctx.params, -1.0, ctx.update)?;
        for m in &mut self.modules {
            m.after_update(params)?;
        }
        let mut rep = report(&est, loss, evaluations, step);
        self.decide(params, objective, &mut rep)?;
        Ok(rep)
    }

    /// With blocking, accepts or rejects the step just applied to `params` (x copied back
    /// from the snapshot and the checkpointed modules rolled back on a rejection); nothing
    /// without.
    fn decide(
        &mut self,
        params: &mut Params,
        objective: &mut dyn Objective,
        rep: &mut StepReport,
    ) -> Result<()> {
        let Some(b) = self.blocking.as_mut() else {
            return Ok(());
        };
        let before = self
            .snapshot
            .as_ref()
            .ok_or_else(|| Error::invalid("blocking: no copy of x (internal)"))?;
        b.decide(params, objective, before, rep)?;
        if !rep.accepted {
            for k in std::mem::take(&mut self.checkpointed).into_iter().rev() {
                self.modules[k].rollback()?;
            }
        }
        Ok(())
    }
}

fn report(est: &Estimate, loss: Option<f32>, evaluations: u32, step: u64) -> StepReport {
    StepReport {
        loss,
        loss_approx: est.loss_approx.or(loss),
        evaluations,
        step,
        accepted: true,
        loss_proposed: None,
    }
}

pub(crate) use crate::params::ensure_like;

/// The parameters moved by `t·v`, held by a [`Restore`] guard that moves them back (by copy
/// from `saved`, a copy of the unmoved parameters, bit-exact, when given; else by `−t·v`) on
/// [`finish`](Restore::finish), on an early return and while a panic unwinds.
pub(crate) fn shifted<'a>(
    params: &'a mut Params,
    t: f32,
    v: &'a Params,
    saved: Option<&'a Params>,
) -> Result<Restore<'a, 'a>> {
    let back = saved.map_or(Move::Axpy(v, -t), Move::Copy);
    Restore::moved(params, Move::Axpy(v, t), back)
}

/// f(x): known from the estimate, or evaluated now (one evaluation, counted).
pub(crate) fn loss_at_x(ctx: &mut Context<'_>) -> Result<f32> {
    if let Some(f) = ctx.loss {
        return Ok(f);
    }
    let f = ctx.objective.scoped_loss(ctx.params)?;
    ctx.evaluations += 1;
    let f = crate::approx::check_loss(f, || "f(x) for the line search".into())?;
    ctx.loss = Some(f);
    Ok(f)
}

/// f(x + t·update), with x moved back afterwards (also on error or panic); counted.
pub(crate) fn loss_shifted(ctx: &mut Context<'_>, t: f32) -> Result<f32> {
    let mut shifted = shifted(ctx.params, t, ctx.update, ctx.saved)?;
    let f = ctx.objective.scoped_loss(shifted.params());
    shifted.finish()?;
    ctx.evaluations += 1;
    f
}
