// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`Optimizer::run`]: stepping until a budget is spent or a stopping rule fires, with an
//! observer, the best iterate kept and periodic checkpoints.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{Optimizer, StepReport};
use crate::approx::{Coordinate, Evaluation};
use crate::kernels::copy;
use crate::kernels::Direction;
use crate::{Error, Objective, Params, Result};

/// Why [`Run::until_done`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stop {
    /// The optimiser's step counter reached [`Run::max_steps`].
    MaxSteps,
    /// The next step could exceed [`Run::max_evaluations`].
    MaxEvaluations,
    /// [`Run::time_limit`] has passed.
    TimeLimit,
    /// The measured loss reached [`Run::target_loss`].
    TargetLoss,
    /// The best loss did not improve by `min_delta` in [`Run::patience`] steps.
    Patience,
    /// The observer asked to stop.
    Observer,
}

/// What the observer of [`Run::observe`] tells the run after each step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Control {
    /// Go on.
    Continue,
    /// Stop after this step ([`Stop::Observer`]).
    Stop,
}

/// What a run did.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Steps taken in this run.
    pub steps: u64,
    /// Steps of this run rejected by [`Optimizer::blocking`] (counted in `steps` too).
    pub rejected: u64,
    /// Objective evaluations in this run (the steps' [`StepReport::evaluations`], plus those of
    /// a step refused by the evaluation budget, see [`Run::max_evaluations`]).
    pub evaluations: u64,
    /// The lowest measured loss of the run (see [`Run::until_done`]) and the optimiser's step
    /// at which it was measured (the loss of x before that step).
    pub best: Option<(f32, u64)>,
    /// The last step's report.
    pub last: Option<StepReport>,
    /// Why the run stopped.
    pub stop: Stop,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
}

/// The observer's type.
type Observer<'r> = Box<dyn FnMut(&StepReport) -> Control + 'r>;

/// A run of an [`Optimizer`]: made by [`Optimizer::run`], configured by the methods below,
/// started by [`until_done`](Run::until_done). Without any rule it runs until the observer
/// stops it or a step fails.
pub struct Run<'r> {
    opt: &'r mut Optimizer,
    max_steps: Option<u64>,
    max_evaluations: Option<u64>,
    time_limit: Option<Duration>,
    target_loss: Option<f32>,
    patience: Option<(u64, f32)>,
    observer: Option<Observer<'r>>,
    keep_best: bool,
    checkpoint: Option<(u64, PathBuf, PathBuf)>,
    best_params: Option<Params>,
}

impl fmt::Debug for Run<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run")
            .field("max_steps", &self.max_steps)
            .field("max_evaluations", &self.max_evaluations)
            .field("time_limit", &self.time_limit)
            .field("target_loss", &self.target_loss)
            .field("patience", &self.patience)
            .field("keep_best", &self.keep_best)
            .field("checkpoint", &self.checkpoint)
            .finish_non_exhaustive()
    }
}

/// The error a [`Budgeted`] objective returns once the budget is spent.
#[derive(Debug)]
struct BudgetSpent;

impl fmt::Display for BudgetSpent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("max_evaluations: the evaluation budget is spent")
    }
}

impl std::error::Error for BudgetSpent {}

/// The objective with a count of evaluations that refuses any past `limit`.
struct Budgeted<'o> {
    inner: &'o mut dyn Objective,
    used: u64,
    limit: Option<u64>,
}

impl Budgeted<'_> {
    fn take(&mut self, k: u64) -> Result<()> {
        if self.limit.is_some_and(|l| self.used + k > l) {
            return Err(Error::Objective(Box::new(BudgetSpent)));
        }
        self.used += k;
        Ok(())
    }
}

impl Objective for Budgeted<'_> {
    fn loss(&mut self, params: &Params) -> Result<f32> {
        self.take(1)?;
        self.inner.loss(params)
    }
    fn loss_at(&mut self, params: &Params, at: &Evaluation) -> Result<f32> {
        self.take(1)?;
        self.inner.loss_at(params, at)
    }
    fn has_batch(&self) -> bool {
        self.inner.has_batch()
    }
    fn loss_batch_at(
        &mut self,
        params: &mut Params,
        points: &[(Direction, f32)],
        at: &[Evaluation],
    ) -> Result<Vec<f32>> {
        self.take(points.len() as u64)?;
        self.inner.loss_batch_at(params, points, at)
    }
    fn loss_batch_coords_at(
        &mut self,
        params: &mut Params,
        points: &[Coordinate],
        at: &[Evaluation],
    ) -> Result<Vec<f32>> {
        self.take(points.len() as u64)?;
        self.inner.loss_batch_coords_at(params, points, at)
    }
    fn loss_batch(&mut self, params: &mut Params, points: &[(Direction, f32)]) -> Result<Vec<f32>> {
        self.take(points.len() as u64)?;
        self.inner.loss_batch(params, points)
    }
    fn loss_batch_coords(
        &mut self,
        params: &mut Params,
        points: &[Coordinate],
    ) -> Result<Vec<f32>> {
        self.take(points.len() as u64)?;
        self.inner.loss_batch_coords(params, points)
    }
    fn jvp(&mut self, params: &Params, dir: &Direction) -> Result<f32> {
        self.take(1)?;
        self.inner.jvp(params, dir)
    }
    fn zograd_own(&self, own: crate::objective::sealed::Own) -> bool {
        self.inner.zograd_own(own)
    }
}

fn is_budget(e: &Error) -> bool {
    matches!(e, Error::Objective(b) if b.is::<BudgetSpent>())
}

impl Optimizer {
    /// A [`Run`]: steps until a budget is spent or a stopping rule fires.
    ///
    /// ```no_run
    /// # use zograd::{approx::MeZo, optim::{Lr, Optimizer}, Gpu, Params};
    /// # fn main() -> zograd::Result<()> {
    /// # let gpu = Gpu::new()?;
    /// # let mut x = Params::from_slices(&gpu, &[&[1.0f32; 100][..]])?;
    /// # let mut loss = |p: &Params| -> zograd::Result<f32> { Ok(p.to_vec()?.iter().map(|v| v * v).sum()) };
    /// let mut opt = Optimizer::new(&gpu, &x, MeZo::new().seed(1))?.then(Lr::new(1e-3));
    /// let summary = opt
    ///     .run()
    ///     .max_steps(10_000)
    ///     .max_evaluations(15_000)
    ///     .target_loss(1e-3)
    ///     .checkpoint_every(100, "opt.safetensors", "x.safetensors")
    ///     .until_done(&mut x, &mut loss)?;
    /// println!("{:?} after {} steps", summary.stop, summary.steps);
    /// # Ok(()) }
    /// ```
    pub fn run(&mut self) -> Run<'_> {
        Run {
            opt: self,
            max_steps: None,
            max_evaluations: None,
            time_limit: None,
            target_loss: None,
            patience: None,
            observer: None,
            keep_best: false,
            checkpoint: None,
            best_params: None,
        }
    }
}

impl<'r> Run<'r> {
    /// Stop when the optimiser's step counter ([`Optimizer::steps`], which a checkpoint
    /// restores) reaches `steps`: a resumed run ends where the uninterrupted one would.
    #[must_use]
    pub fn max_steps(mut self, steps: u64) -> Self {
        self.max_steps = Some(steps);
        self
    }

    /// Spend at most `evaluations` objective evaluations in this run (batched points and JVPs
    /// count one each), never more. A step is **not started** when the most evaluations any
    /// step of this run has used would exceed what is left (for estimators with a fixed cost
    /// per step, e.g. SPSA or MeZO, this is exact). A step whose cost varies (a line search)
    /// and would pass the budget is refused at the evaluation that would pass it: it fails as
    /// any failed step does (parameters restored, counters and module state rolled back, see
    /// [`Optimizer::step`]), its evaluations are counted in [`Summary::evaluations`], and the
    /// run stops with [`Stop::MaxEvaluations`].
    #[must_use]
    pub fn max_evaluations(mut self, evaluations: u64) -> Self {
        self.max_evaluations = Some(evaluations);
        self
    }

    /// Start no step once `limit` of wall-clock time has passed since the run began.
    #[must_use]
    pub fn time_limit(mut self, limit: Duration) -> Self {
        self.time_limit = Some(limit);
        self
    }

    /// Stop after a step whose measured loss is at most `target`.
    #[must_use]
    pub fn target_loss(mut self, target: f32) -> Self {
        self.target_loss = Some(target);
        self
    }

    /// Stop when `steps` consecutive steps have measured no loss below `reference − min_delta`
    /// (`min_delta` ≥ 0), where the reference is the last loss that passed this test (the
    /// first measured loss to begin with): improvements by less than `min_delta` do not
    /// reset the count (Keras' `EarlyStopping` rule).
    #[must_use]
    pub fn patience(mut self, steps: u64, min_delta: f32) -> Self {
        self.patience = Some((steps, min_delta));
        self
    }

    /// Calls `observer` after every step with its report; [`Control::Stop`] ends the run.
    #[must_use]
    pub fn observe(mut self, observer: impl FnMut(&StepReport) -> Control + 'r) -> Self {
        self.observer = Some(Box::new(observer));
        self
    }

    /// Keep a copy of the x with the lowest measured loss, readable after the run with
    /// [`best_params`](Run::best_params) (and copied back with
    /// [`kernels::copy`](crate::kernels::copy) if wanted). Costs two more n-sized buffers
    /// (the best x and x before the running step) and one copy of x per step.
    #[must_use]
    pub fn keep_best(mut self, keep: bool) -> Self {
        self.keep_best = keep;
        self
    }

    /// Every `steps` steps (of the optimiser's counter), save the optimiser to `optimizer`
    /// and the parameters to `params` ([`Optimizer::save`], [`Params::save`]; atomic writes).
    #[must_use]
    pub fn checkpoint_every(
        mut self,
        steps: u64,
        optimizer: impl Into<PathBuf>,
        params: impl Into<PathBuf>,
    ) -> Self {
        self.checkpoint = Some((steps, optimizer.into(), params.into()));
        self
    }

    /// The best parameters kept by [`keep_best`](Run::keep_best), after
    /// [`until_done`](Run::until_done).
    pub fn best_params(&mut self) -> Option<&Params> {
        self.best_params.as_ref()
    }

    fn check(&self) -> Result<()> {
        if let Some((steps, delta)) = self.patience {
            if steps == 0 || !(delta.is_finite() && delta >= 0.0) {
                return Err(Error::invalid(format!(
                    "patience: needs steps ≥ 1 and a finite min_delta ≥ 0, got {steps} and \
                     {delta}"
                )));
            }
        }
        if let Some((0, ..)) = self.checkpoint {
            return Err(Error::invalid("checkpoint_every: steps must be ≥ 1, got 0"));
        }
        if self.target_loss.is_some_and(f32::is_nan) {
            return Err(Error::invalid("target_loss: must not be NaN"));
        }
        Ok(())
    }

    /// Steps until the first rule fires and returns the [`Summary`]. The **measured loss** of
    /// a step is the loss of x before it: [`StepReport::loss`] when the step evaluated f(x),
    /// else [`StepReport::loss_approx`] (f at a perturbed point: noisy by O(h)).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad rule (before any step); a failed step's error (the
    /// parameters restored as [`Optimizer::step`] says); a checkpoint's error.
    pub fn until_done(
        &mut self,
        params: &mut Params,
        objective: &mut dyn Objective,
    ) -> Result<Summary> {
        self.check()?;
        let start = Instant::now();
        let mut budgeted = Budgeted {
            inner: objective,
            used: 0,
            limit: self.max_evaluations,
        };
        let mut prev = None;
        let mut summary = Summary {
            steps: 0,
            rejected: 0,
            evaluations: 0,
            best: None,
            last: None,
            stop: Stop::MaxSteps,
            elapsed: Duration::ZERO,
        };
        let (mut widest, mut stale) = (0u64, 0u64);
        let mut reference: Option<f32> = None;
        let stop = loop {
            if self.max_steps.is_some_and(|m| self.opt.steps() >= m) {
                break Stop::MaxSteps;
            }
            if self.time_limit.is_some_and(|t| start.elapsed() >= t) {
                break Stop::TimeLimit;
            }
            if let Some(limit) = self.max_evaluations {
                if budgeted.used + widest > limit || budgeted.used >= limit {
                    break Stop::MaxEvaluations;
                }
            }
            if self.keep_best {
                copy(crate::params::ensure_like(&mut prev, params)?, params)?;
            }
            let report = match self.opt.step(params, &mut budgeted) {
                Ok(r) => r,
                Err(e) if is_budget(&e) => break Stop::MaxEvaluations,
                Err(e) => return Err(e),
            };
            summary.steps += 1;
            summary.rejected += u64::from(!report.accepted);
            summary.last = Some(report);
            widest = widest.max(u64::from(report.evaluations));
            let measured = report.loss.or(report.loss_approx);
            if let Some(f) = measured {
                let improved = summary.best.is_none_or(|(b, _)| f < b);
                // Patience counts from the last loss that improved by more than min_delta
                // (as Keras' EarlyStopping): smaller improvements do not move the reference.
                let delta = self.patience.map_or(0.0, |(_, d)| f64::from(d));
                if reference.is_none_or(|b: f32| f64::from(f) < f64::from(b) - delta) {
                    reference = Some(f);
                    stale = 0;
                } else {
                    stale += 1;
                }
                if improved {
                    summary.best = Some((f, report.step));
                    if let Some(p) = &prev {
                        copy(crate::params::ensure_like(&mut self.best_params, p)?, p)?;
                    }
                }
            } else {
                stale += 1;
            }
            if let Some((k, opt_path, x_path)) = &self.checkpoint {
                if self.opt.steps().is_multiple_of(*k) {
                    self.opt.save(opt_path)?;
                    params.save(x_path)?;
                }
            }
            let observed = self.observer.as_mut().map(|o| o(&report));
            if self.target_loss.zip(measured).is_some_and(|(t, f)| f <= t) {
                break Stop::TargetLoss;
            }
            if self.patience.is_some_and(|(p, _)| stale >= p) {
                break Stop::Patience;
            }
            if observed == Some(Control::Stop) {
                break Stop::Observer;
            }
        };
        summary.stop = stop;
        summary.evaluations = budgeted.used;
        summary.elapsed = start.elapsed();
        Ok(summary)
    }
}
