// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`Blocking`]: conservative steps, rejected when the loss rises by more than a tolerance
//! ([`Optimizer::blocking`]).

use serde_json::{json, Value};

use super::{Optimizer, StepReport};
use crate::approx::check_loss;
use crate::restore::{Move, Restore};
use crate::{Error, Objective, Params, Result};

/// Conservative (blocking) steps, for noisy objectives: after the update, the optimiser
/// evaluates f at the proposed point x_new and **rejects** the step when
///
/// f(x_new) > f(x) + tolerance,
///
/// putting x back bit-exactly (ZO-SGD-Cons; Qiskit's SPSA `blocking` with `allowed_increase`).
/// Turn it on with [`Optimizer::blocking`].
///
/// - [`Blocking::tolerance`]`(t)`: a given tolerance t ≥ 0 (0: the loss never rises).
/// - [`Blocking::calibrate`]`(k)`: on the first step, f is evaluated k times at x₀ and the
///   tolerance is twice their sample standard deviation, 2·s with
///   s² = Σ(fᵢ − f̄)²/(k − 1) (Qiskit's `estimate_stddev` uses the population form, a factor
///   √((k − 1)/k) smaller, and 25 evaluations by default); f̄ is then the reference f(x₀).
///
/// **Where f(x) comes from.** The step's own f(x) when the step knows it
/// ([`StepReport::loss`]: [`Optimizer::measure_loss`], an estimator whose formula uses f₀, a
/// line search), else the latest value of f at the current x: the last accepted f(x_new) —
/// a rejected step leaves x where it was, so that is still f at x (Qiskit keeps the previous
/// accepted value the same way) — or, after a rejected step that knew its own f(x), that
/// value. The first step of a run with a given tolerance measures f(x₀) once, as
/// [`Optimizer::measure_loss`] does (and hands it to the estimator as f₀); after
/// [`calibrate`](Blocking::calibrate) the reference is f̄. Every evaluation is counted in
/// [`StepReport::evaluations`]: the k calibration evaluations (first step), the f(x₀) of the
/// first step when needed, and one f(x_new) per step.
///
/// **A rejected step** ([`StepReport::accepted`] false) leaves x bit-identical to x before the
/// step (a copy of x is taken at the start of every step and copied back: n floats, allocated
/// once, counted in [`Optimizer::state_bytes`]; the fused MeZO step keeps its single pass but
/// needs this copy). The modules' state is rolled back too ([`Transform::checkpoint`] /
/// [`Transform::rollback`](super::Transform::rollback), with
/// [`Optimizer::checkpoints`]`(true)`, the default): momentum and Adam's moments and step count
/// are as if the step had not run (with `checkpoints(false)` they advance). That costs one copy
/// of each module's state buffers per step. The step counters
/// advance — the optimiser's, and the approximator's, so the next step draws new directions as
/// Qiskit's next iteration does (retrying the same directions would repeat a rejection on a
/// deterministic objective). A NaN or infinite f(x_new) rejects the step. Iterate averaging
/// ([`Optimizer::average_from`]) folds in x after every step, rejected or not.
///
/// **Composition.** Blocking works with every approximator and chain, the fused MeZO step
/// included (the step stays one pass; the copy of x is the only n-sized buffer). The
/// evaluations at x_new (and the calibration's) go through [`Objective::loss`], without an
/// [`Evaluation`](crate::Evaluation): they get independent noise, not common random numbers.
/// With [`Run::max_evaluations`](super::Run::max_evaluations), the first step's k calibration
/// evaluations count towards the widest step the budget reserves for.
///
/// It is an option of the optimiser rather than a [`Transform`]: a module transforms the update
/// before x ← x − update, while this test needs x after the update, the copy of x from before
/// the estimate, and the step's report.
///
/// [`Transform`]: super::Transform
/// [`Transform::checkpoint`]: super::Transform::checkpoint
///
/// # Example
/// ```no_run
/// use zograd::approx::Spsa;
/// use zograd::optim::{Blocking, Lr, Optimizer};
/// use zograd::testfns::Noisy;
/// use zograd::{Gpu, Params};
/// # fn main() -> zograd::Result<()> {
/// let gpu = Gpu::new()?;
/// let mut x = Params::from_slices(&gpu, &[&[1.0f32; 16][..]])?;
/// let sphere = |p: &Params| -> zograd::Result<f32> { Ok(p.to_vec()?.iter().map(|v| v * v).sum()) };
/// let mut loss = Noisy::new(sphere, 0.01, 0.0, 7)?;
/// let mut opt = Optimizer::new(&gpu, &x, Spsa::new().seed(1))?
///     .then(Lr::new(0.05))
///     .blocking(Blocking::calibrate(25));
/// for _ in 0..100 {
///     let r = opt.step(&mut x, &mut loss)?;
///     if !r.accepted {
///         println!("step {} rejected: f(x_new) = {:?}", r.step, r.loss_proposed);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Blocking {
    rule: Rule,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Rule {
    Tolerance(f32),
    Calibrate(u32),
}

impl Blocking {
    /// Reject a step when f(x_new) > f(x) + `tolerance` (checked at the first step: finite and
    /// ≥ 0).
    #[must_use]
    pub fn tolerance(tolerance: f32) -> Self {
        Self {
            rule: Rule::Tolerance(tolerance),
        }
    }

    /// The tolerance is 2σ, σ the sample standard deviation of `k` evaluations of f at x₀ made
    /// on the first step (checked then: k ≥ 2).
    #[must_use]
    pub fn calibrate(k: u32) -> Self {
        Self {
            rule: Rule::Calibrate(k),
        }
    }

    /// Fails unless the setting is usable.
    pub(crate) fn validate(self) -> Result<()> {
        match self.rule {
            Rule::Tolerance(t) if !(t.is_finite() && t >= 0.0) => Err(Error::invalid(format!(
                "tolerance: must be finite and >= 0, got {t}"
            ))),
            Rule::Calibrate(k) if k < 2 => Err(Error::invalid(format!(
                "calibrate: needs at least 2 evaluations for a standard deviation, got {k}"
            ))),
            _ => Ok(()),
        }
    }

    /// The setting as a checkpoint's configuration.
    fn config(self) -> Value {
        match self.rule {
            Rule::Tolerance(t) => json!({ "tolerance": t }),
            Rule::Calibrate(k) => json!({ "calibrate": k }),
        }
    }
}

/// The running state of blocking in an optimiser.
#[derive(Clone, Debug)]
pub(crate) struct BlockingState {
    pub(crate) setting: Blocking,
    /// The tolerance in use: given, or calibrated (None until the first step calibrated it).
    pub(crate) tolerance: Option<f32>,
    /// The last accepted f(x_new) (or f̄ of the calibration): f at the current x.
    pub(crate) last: Option<f32>,
}

impl BlockingState {
    pub(crate) fn new(setting: Blocking) -> Self {
        let tolerance = match setting.rule {
            Rule::Tolerance(t) => Some(t),
            Rule::Calibrate(_) => None,
        };
        Self {
            setting,
            tolerance,
            last: None,
        }
    }

    /// Calibrates the tolerance on the first step (k evaluations at x, counted in the return
    /// value); nothing afterwards.
    pub(crate) fn calibrate(
        &mut self,
        objective: &mut dyn Objective,
        params: &Params,
    ) -> Result<u32> {
        let Rule::Calibrate(k) = self.setting.rule else {
            return Ok(0);
        };
        if self.tolerance.is_some() {
            return Ok(0);
        }
        let mut values = Vec::with_capacity(k as usize);
        for i in 0..k {
            let v = objective.scoped_loss(params)?;
            let v = check_loss(v, || {
                format!("f(x₀) for the blocking calibration (evaluation {i} of {k})")
            })?;
            values.push(f64::from(v));
        }
        let (mean, std) = mean_std(&values);
        self.tolerance = Some((2.0 * std) as f32);
        self.last = Some(mean as f32);
        Ok(k)
    }

    /// Whether the step must measure f(x) itself (no reference known yet).
    pub(crate) fn needs_reference(&self) -> bool {
        self.last.is_none()
    }

    /// Evaluates f at the updated x, accepts or rejects the step (x copied back from `before`,
    /// the copy of x taken at the start of the step) and fills the report's `accepted`,
    /// `loss_proposed` and `evaluations`. On an error or a panic of the objective, x is copied
    /// back too.
    pub(crate) fn decide(
        &mut self,
        params: &mut Params,
        objective: &mut dyn Objective,
        before: &Params,
        report: &mut StepReport,
    ) -> Result<()> {
        let reference = report.loss.or(self.last).ok_or_else(|| {
            Error::invalid("blocking: no reference loss f(x) (internal: the step measures one)")
        })?;
        let tolerance = self.tolerance.unwrap_or(0.0);
        let mut guard = Restore::new(params);
        guard.arm(Move::Copy(before));
        let proposed = objective.scoped_loss(guard.params());
        report.evaluations = report.evaluations.saturating_add(1);
        let proposed = proposed?;
        // NaN and ±∞ fail the test.
        let accepted = f64::from(proposed) <= f64::from(reference) + f64::from(tolerance);
        report.accepted = accepted;
        report.loss_proposed = Some(proposed);
        if accepted {
            guard.keep();
            self.last = Some(proposed);
        } else {
            guard.finish()?;
            self.last = Some(reference);
        }
        Ok(())
    }

    /// The checkpoint entry: the setting and the state (f32 values as their bits, exact).
    pub(crate) fn save(&self) -> Value {
        json!({
            "config": self.setting.config(),
            "tolerance_bits": self.tolerance.map(f32::to_bits),
            "last_bits": self.last.map(f32::to_bits),
        })
    }

    /// The state from a checkpoint entry written by [`save`](BlockingState::save) for the same
    /// setting.
    pub(crate) fn load(setting: Blocking, entry: &Value) -> Result<Self> {
        let config = entry.get("config").unwrap_or(&Value::Null);
        if *config != setting.config() {
            return Err(Error::invalid(format!(
                "blocking: the checkpoint has {config}, this optimiser has {}",
                setting.config()
            )));
        }
        let bits = |key: &str| -> Result<Option<f32>> {
            match entry.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .and_then(|b| u32::try_from(b).ok())
                    .map(|b| Some(f32::from_bits(b)))
                    .ok_or_else(|| {
                        Error::invalid(format!("checkpoint: blocking's `{key}` is malformed"))
                    }),
            }
        };
        let mut state = Self::new(setting);
        if let Some(t) = bits("tolerance_bits")? {
            state.tolerance = Some(t);
        }
        state.last = bits("last_bits")?;
        Ok(state)
    }
}

/// The mean and the sample standard deviation (divisor k − 1) of `values` (k ≥ 2), in f64.
fn mean_std(values: &[f64]) -> (f64, f64) {
    let k = values.len() as f64;
    let mean = values.iter().sum::<f64>() / k;
    let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
    (mean, (ss / (k - 1.0)).sqrt())
}

impl Optimizer {
    /// Conservative steps: after each update, f(x_new) is evaluated and the step is rejected
    /// (x put back bit-exactly, the modules' state rolled back) when it exceeds f(x) by more
    /// than the tolerance; see [`Blocking`]. Checked at the first step.
    #[must_use]
    pub fn blocking(mut self, blocking: Blocking) -> Self {
        self.blocking = Some(BlockingState::new(blocking));
        self
    }

    /// The blocking tolerance in use: the given one, or the calibrated one once the first step
    /// has calibrated it; `None` without [`blocking`](Optimizer::blocking) or before the
    /// calibration.
    #[must_use]
    pub fn blocking_tolerance(&self) -> Option<f32> {
        self.blocking.as_ref().and_then(|b| b.tolerance)
    }

    /// The reference f(x) blocking compares the next step's f(x_new) with when that step does
    /// not know f(x) itself: the last accepted f(x_new) (or the calibration's mean, or the
    /// first step's f(x₀)). `None` without blocking or before the first step.
    #[must_use]
    pub fn blocking_reference(&self) -> Option<f32> {
        self.blocking.as_ref().and_then(|b| b.last)
    }
}

#[cfg(test)]
mod tests {
    use super::mean_std;

    #[test]
    fn mean_and_sample_std_of_a_textbook_set() {
        // 2, 4, 4, 4, 5, 5, 7, 9: mean 5, Σ(v − 5)² = 32, sample variance 32/7.
        let (m, s) = mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m, 5.0);
        assert!((s - (32.0f64 / 7.0).sqrt()).abs() < 1e-15);
    }
}
