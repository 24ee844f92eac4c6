// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`Fdm`]: the finite-difference gradient, one element at a time.

use super::probe::unperturbed_loss;
use super::{
    check_batch_len, check_buffers, check_h, check_value, Coordinate, Estimate, Evaluation,
    Formula, GradApproximator, Objective, Target,
};
use crate::bounds::check_inside;
use crate::checkpoint::{difference, State};
use crate::kernels::Mask;
use crate::restore::{Move, Restore};
use crate::{Error, Gpu, Params, Result};

/// The finite-difference gradient (torchzero's `FDM`): for every element i in global order,
///
/// g_i = D_i, the [`Formula`]'s estimate of ∂f/∂x_i from f(x + k·h·e_i)
///
/// (Central by default: (f(x + h e_i) − f(x − h e_i))/(2h)).
///
/// x is downloaded once; each point is made by writing the single element
/// `x_i + k·h_i` (computed in f64, rounded once to f32) with [`Params::write_at`] — no pass over
/// the other n − 1 elements — and the original `x_i` is written back after the element's last
/// point, so the parameters are restored **exactly** (`exact_restore` has nothing to add). One
/// scalar is read back per evaluation; the gradient is uploaded once at the end. With an
/// objective that batches ([`Objective::has_batch`]) the points go to
/// [`Objective::loss_batch_coords`] in batches of `batch_size` points, and x is never written.
///
/// Evaluations per call: m·n, plus one for f₀ when the formula uses it (Central 2n, Forward
/// n + 1, Forward3 2n + 1, Central4 4n, Forward5 4n + 1). `loss` is f₀ for formulas that use it;
/// `loss_approx` is f₀, or for Central / Central4 the value f(x + h e_{n−1}) of the last element
/// (as torchzero). torchzero 0.4.4's closure target evaluates f(x) once more after the gradient
/// (2n + 1 with Central); zograd only when the formula or a later module needs it, deliberately.
/// Defaults (torchzero's): h = 1e-3, formula = Central, target = Closure.
///
/// Every point goes to [`Objective::loss_at`] (or [`Objective::loss_batch_coords_at`]) with its
/// [`Evaluation`]: `sample` is the element's global index, `step` the step counter (advanced by
/// [`pre_step`](GradApproximator::pre_step)), `seed` the [`seed`](Fdm::seed), so the points of
/// one element share a common-random-numbers seed that changes from element to element and from
/// step to step.
///
/// **Steps.** h_i = h by default; h·max(1, |x_i|) with [`relative_step(true)`](Fdm::relative_step),
/// which then takes the representable step fl₃₂(|x_i| + h_i) − |x_i|; h = ε^(1/(p+1)) of the
/// formula with [`auto_h`](Fdm::auto_h) ([`Formula::auto_h`]). For parameters far from 1 in
/// size, `relative_step(true).auto_h()` is the accurate choice: at |x| ~ 1e4 an absolute
/// h = 1e-3 is one ulp of x and the estimate is dominated by the loss's rounding
/// (`tests/relative_step.rs`: worst relative error 1.1 with h = 1e-3, 1.2e-4 with relative
/// central steps, 1.3e-5 with Central4).
///
/// **Bounds.** With box bounds on the parameters ([`Params::set_bounds`]) no point is evaluated
/// outside the box: an element whose points would leave it is probed with the formula's
/// one-sided partner of the same order ([`Formula::one_sided`]), pointing away from the near
/// bound, and when neither side has room for the step, towards the side with more room with
/// the step shrunk to fit (scipy's `_adjust_scheme_to_bounds`); an element with lo = hi gets the
/// gradient 0 without evaluations. The evaluation count then differs from the table above (a
/// one-sided partner may need f₀ and more points). x must lie inside the box.
///
/// Reference: J. Nocedal, S. J. Wright, *Numerical Optimization*, 2nd ed., Springer 2006, §8.1
/// (finite-difference derivative approximations).
///
/// # Errors
/// `approximate` returns [`Error::InvalidArgument`] for h ≤ 0 or non-finite (without
/// `auto_h`), `batch_size = 0`, x outside its bounds,
/// `grad` of another shape or device, or buffers that cannot be read or written from the host
/// (adopted buffers without `COPY_SRC` / `COPY_DST`); [`Error::NonFiniteLoss`] for a NaN or
/// infinite loss (unless [`allow_non_finite`](Fdm::allow_non_finite)); the objective's errors.
/// The element being probed is written back first.
///
/// # Example
/// ```
/// use zograd::approx::{Fdm, Formula, GradApproximator};
/// use zograd::Params;
/// # fn main() -> zograd::Result<()> {
/// let gpu = zograd::Gpu::new()?;
/// let mut x = Params::from_slices(&gpu, &[&[1.0f32, 2.0][..], &[3.0f32][..]])?;
/// let mut g = x.zeros_like()?;
/// let mut loss = |p: &Params| -> zograd::Result<f32> { Ok(p.to_vec()?.iter().map(|v| v * v).sum()) };
/// let e = Fdm::new().formula(Formula::Forward).approximate(&gpu, &mut x, &mut loss, &mut g)?;
/// assert_eq!(e.evaluations, 4); // n + 1
/// let g = g.to_vec()?;
/// assert!((g[2] - 6.0).abs() < 1e-2);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Fdm {
    h: f32,
    auto_h: bool,
    relative_step: bool,
    formula: Formula,
    batch_size: u32,
    allow_non_finite: bool,
    target: Target,
    seed: u64,
    step: u32,
    /// The step counter before the last `pre_step`, for `abort_step`.
    undo: Option<u32>,
    /// The frozen buffers ([`Fdm::freeze`]).
    freeze: Vec<usize>,
}

impl Default for Fdm {
    fn default() -> Self {
        Self::new()
    }
}

impl Fdm {
    /// torchzero's defaults: h = 1e-3, Central; batches of 4096 points for batching objectives.
    #[must_use]
    pub fn new() -> Self {
        Self {
            h: 1e-3,
            auto_h: false,
            relative_step: false,
            formula: Formula::Central,
            batch_size: 4096,
            allow_non_finite: false,
            target: Target::Closure,
            seed: 0,
            step: 0,
            undo: None,
            freeze: Vec::new(),
        }
    }

    /// The seed of the points' [`Evaluation`]s (default 0), from which their
    /// [`crn_seed`](Evaluation::crn_seed) is derived; the estimate itself is deterministic.
    /// Give two `Fdm`s that evaluate the same noisy objective different seeds to give them
    /// independent noise.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The step counter (0 until the first [`pre_step`](GradApproximator::pre_step)).
    #[must_use]
    pub fn current_step(&self) -> u32 {
        self.step
    }

    /// The finite-difference step h (checked at use: finite and > 0); replaces
    /// [`auto_h`](Fdm::auto_h).
    #[must_use]
    pub fn h(mut self, h: f32) -> Self {
        self.h = h;
        self.auto_h = false;
        self
    }

    /// h chosen per formula from f32's machine epsilon: h = [`Formula::auto_h`] = ε^(1/(p+1))
    /// (√ε ≈ 3.45e-4 for Forward/Backward, ∛ε ≈ 4.92e-3 for Central, ε^(1/5) ≈ 4.12e-2 for
    /// Central4 and Forward5; see there why), and the element's formula decides (a one-sided
    /// formula at a bound has the same order, so the same h). Best with
    /// [`relative_step(true)`](Fdm::relative_step), which scales it by max(1, |xᵢ|). A later
    /// [`h`](Fdm::h) replaces it.
    #[must_use]
    pub fn auto_h(mut self) -> Self {
        self.auto_h = true;
        self
    }

    /// Per-element relative steps (scipy's and argmin's convention): element i moves by
    /// hᵢ = h·max(1, |xᵢ|) (times its scale with [`Params::set_scales`]) instead of h, so that
    /// the step stays above the f32 resolution of xᵢ (ulp(xᵢ) ≈ 1.2e-7·|xᵢ|) for large
    /// parameters. Default false (torchzero's absolute h).
    ///
    /// With `relative_step(true)` or [`auto_h`](Fdm::auto_h), the step actually taken is the
    /// representable one, hᵢ′ = fl₃₂(|xᵢ| + hᵢ) − |xᵢ| (scipy does the same), so x ± hᵢ′ are
    /// exact f32 values and the difference is divided by the step really taken (points
    /// farther out, ±2hᵢ′ …, are rounded once); a step below half an ulp becomes one ulp. With
    /// both off, the points are x + k·h rounded to f32 and the difference is divided by h, as
    /// torchzero does.
    #[must_use]
    pub fn relative_step(mut self, relative: bool) -> Self {
        self.relative_step = relative;
        self
    }

    /// The finite-difference formula.
    #[must_use]
    pub fn formula(mut self, formula: Formula) -> Self {
        self.formula = formula;
        self
    }

    /// Points per [`Objective::loss_batch_coords`] call (checked at use: ≥ 1).
    #[must_use]
    pub fn batch_size(mut self, points: u32) -> Self {
        self.batch_size = points;
        self
    }

    /// A no-op, accepted for uniformity with the other estimators: Fdm always restores exactly
    /// (it writes each element's original value back), whatever `exact` is, so it has none of
    /// the in-place drift documented at [`Sampler::exact_restore`](super::Sampler::exact_restore)
    /// and [`restores_exactly`](GradApproximator::restores_exactly) is always true.
    #[must_use]
    pub fn exact_restore(self, exact: bool) -> Self {
        let _ = exact;
        self
    }

    /// Where the estimate goes in an optimiser chain.
    #[must_use]
    pub fn target(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    /// Propagate a NaN or infinite loss into the gradient instead of failing with
    /// [`Error::NonFiniteLoss`] (the default, `false`): the affected elements of the gradient
    /// become NaN or ±∞, and the chain that consumes them must handle it.
    #[must_use]
    pub fn allow_non_finite(mut self, allow: bool) -> Self {
        self.allow_non_finite = allow;
        self
    }

    /// Freeze the buffers `buffers` (indices into [`Params::buffer_lens`]): their elements are
    /// neither evaluated nor written, and the gradient is exactly 0 there (the evaluation count
    /// drops by theirs). Checked at use as for the random estimators
    /// ([`Sampler::freeze`](super::Sampler::freeze)).
    #[must_use]
    pub fn freeze(mut self, buffers: &[usize]) -> Self {
        self.freeze = buffers.to_vec();
        self
    }

    /// The base step in y-units (h, or the formula's automatic h), checked.
    fn base_h(&self, formula: Formula) -> Result<f64> {
        if self.auto_h {
            return Ok(f64::from(formula.auto_h()));
        }
        check_h(self.h)?;
        Ok(f64::from(self.h))
    }

    /// How element i is probed: from x = `x`, scale `s` and bounds `box_`.
    fn plan(&self, x: f32, s: f32, box_: Option<(f32, f32)>) -> Result<Plan> {
        let exact = self.relative_step || self.auto_h;
        let (xd, sd) = (f64::from(x), f64::from(s));
        let rel = if self.relative_step {
            xd.abs().max(1.0)
        } else {
            1.0
        };
        // A candidate's physical step and y-unit step for `formula`.
        let step = |formula: Formula| -> Result<(f64, f64)> {
            let hy = self.base_h(formula)? * rel;
            let hx = hy * sd;
            if !exact || sd == 0.0 {
                return Ok((hx, hy));
            }
            let hx = representable(x, hx);
            Ok((hx, hx / sd))
        };
        let formula = self.formula;
        let Some((lo, hi)) = box_ else {
            let (hx, hy) = step(formula)?;
            return Ok(Plan::new(formula, 1, x, hx, hy));
        };
        if lo == hi {
            return Ok(Plan::skip(formula));
        }
        let inside = |p: &Plan| p.points.iter().all(|v| *v >= lo && *v <= hi);
        let (hx, hy) = step(formula)?;
        let plan = Plan::new(formula, 1, x, hx, hy);
        if inside(&plan) {
            return Ok(plan);
        }
        // One-sided, towards the side with more room first (scipy's _adjust_scheme_to_bounds).
        let one = formula.one_sided();
        let (up, down) = (f64::from(hi) - xd, xd - f64::from(lo));
        let sides: [i32; 2] = if up >= down { [1, -1] } else { [-1, 1] };
        let symmetric =
            formula.offsets().iter().any(|k| *k > 0) && formula.offsets().iter().any(|k| *k < 0);
        let (hx1, hy1) = step(one)?;
        for sign in sides {
            if !symmetric && sign == 1 {
                // The formula itself (sign +1) did not fit.
                continue;
            }
            let plan = Plan::new(one, sign, x, hx1, hy1);
            if inside(&plan) {
                return Ok(plan);
            }
        }
        // Neither side has room for the step: the side with more room, the step shrunk to fit.
        let sign = sides[0];
        let room = up.max(down);
        let kmax = f64::from(one.offsets().iter().map(|k| k.abs()).max().unwrap_or(1));
        let mut hx = room / kmax;
        for _ in 0..64 {
            let hy = if sd == 0.0 { hx } else { hx / sd };
            let plan = Plan::new(one, sign, x, hx, hy);
            if hx > 0.0 && inside(&plan) && plan.points.iter().all(|v| *v != x) {
                return Ok(plan);
            }
            hx *= 0.75;
        }
        // Less than a few ulp of room: a first-order difference onto the bound itself.
        let (first, bound) = if sign == 1 {
            (Formula::Forward, hi)
        } else {
            (Formula::Backward, lo)
        };
        let hx = (f64::from(bound) - xd).abs();
        let hy = if sd == 0.0 { hx } else { hx / sd };
        let mut plan = Plan::new(first, 1, x, hx, hy);
        plan.points = vec![bound];
        Ok(plan)
    }

    fn run(
        &mut self,
        gpu: &Gpu,
        params: &mut Params,
        objective: &mut dyn Objective,
        grad: &mut Params,
        known_f0: Option<f32>,
    ) -> Result<Estimate> {
        self.base_h(self.formula)?;
        if self.batch_size == 0 {
            return Err(Error::invalid("batch_size: must be at least 1, got 0"));
        }
        check_buffers(gpu, params, grad)?;
        let x0 = params.to_vec()?;
        let allow = self.allow_non_finite;
        let bounds = params.bounds().map(|(l, h)| (l.to_vec(), h.to_vec()));
        if let Some((lo, hi)) = &bounds {
            check_inside(&x0, lo, hi)?;
        }
        let mask = if self.freeze.is_empty() {
            Mask::all()
        } else {
            Mask::new(params, &self.freeze, 1.0)?
        };
        // With scales (Params::set_scales) element i moves by k·h·sᵢ: the estimate is in y-units.
        let scales = params.scales().map(<[f32]>::to_vec);
        let plans = (0..x0.len())
            .map(|i| {
                if mask.is_frozen(i as u64) {
                    return Ok(Plan::skip(self.formula));
                }
                let s = scales.as_ref().map_or(1.0, |s| s[i]);
                let box_ = bounds.as_ref().map(|(lo, hi)| (lo[i], hi[i]));
                self.plan(x0[i], s, box_)
            })
            .collect::<Result<Vec<Plan>>>()?;
        // f₀ once when some element's formula uses it (a one-sided formula at a bound may).
        let needs_f0 = plans
            .iter()
            .any(|p| !p.points.is_empty() && p.formula.uses_f0());
        let f0_user = if needs_f0 {
            Formula::Forward
        } else {
            Formula::Central
        };
        let (seed, step) = (self.seed, self.step);
        let center = Evaluation::unperturbed(seed, step);
        let (f0, mut evaluations) =
            unperturbed_loss(f0_user, allow, known_f0, objective, params, &center)?;
        let f0_64 = f0.map(f64::from);
        // The identity of point j of element i (the element is the sample, see the type's docs).
        let at = |i: usize, j: usize| {
            let p = &plans[i];
            let offset = p.formula.offsets()[j] * p.sign;
            Evaluation::new(seed, step, i as u64, j as u32, offset)
        };
        let mut g = vec![0.0f32; x0.len()];
        let mut last_value: Option<f32> = None;
        // Every point in order: (element, point of the element).
        let all: Vec<(usize, usize)> = plans
            .iter()
            .enumerate()
            .flat_map(|(i, p)| (0..p.points.len()).map(move |j| (i, j)))
            .collect();
        let mut row: Vec<f64> = Vec::with_capacity(8);
        let mut finish_point = |i: usize, j: usize, v: f32, row: &mut Vec<f64>| -> Result<()> {
            let p = &plans[i];
            let k = p.formula.offsets()[j] * p.sign;
            row.push(f64::from(check_value(v, allow, || element_point(k, i))?));
            if j == 0 {
                last_value = Some(v);
            }
            if j + 1 == p.points.len() {
                let d = p.formula.combine(f0_64, row, p.hy)?;
                g[i] = (f64::from(p.sign) * d) as f32;
                row.clear();
            }
            Ok(())
        };
        if objective.has_batch() {
            let batch = self.batch_size as usize;
            let mut chunk = Vec::with_capacity(batch.min(all.len()));
            let mut ids = Vec::with_capacity(batch.min(all.len()));
            for part in all.chunks(batch) {
                chunk.clear();
                ids.clear();
                ids.extend(part.iter().map(|&(i, j)| at(i, j)));
                chunk.extend(part.iter().map(|&(i, j)| Coordinate {
                    index: i as u64,
                    value: plans[i].points[j],
                    original: x0[i],
                }));
                let values = objective.scoped_loss_batch_coords_at(params, &chunk, &ids)?;
                check_batch_len("loss_batch_coords", values.len(), chunk.len())?;
                evaluations = evaluations.saturating_add(values.len() as u32);
                for (&(i, j), v) in part.iter().zip(values) {
                    finish_point(i, j, v, &mut row)?;
                }
            }
        } else {
            let mut guard = Restore::new(params);
            for (i, plan) in plans.iter().enumerate() {
                if plan.points.is_empty() {
                    continue;
                }
                let index = i as u64;
                for (j, &value) in plan.points.iter().enumerate() {
                    let back = Move::Write(index, x0[i]);
                    guard.away(Move::Write(index, value), back)?;
                    let v = objective.scoped_loss_at(guard.params(), &at(i, j))?;
                    evaluations = evaluations.saturating_add(1);
                    finish_point(i, j, v, &mut row)?;
                }
                guard.home()?;
            }
        }
        grad.write(&g)?;
        Ok(Estimate {
            loss: f0,
            loss_approx: f0.or(last_value),
            evaluations,
        })
    }
}

/// How one element is probed: the formula, its side (+1, or −1 for the mirrored formula whose
/// offsets and h are negated), the step in y-units and the f32 points in evaluation order (none:
/// the element is fixed by lo = hi and its gradient is 0).
#[derive(Debug)]
struct Plan {
    formula: Formula,
    sign: i32,
    hy: f64,
    points: Vec<f32>,
}

impl Plan {
    /// The points x + sign·k·hx of `formula`, each rounded once to f32.
    fn new(formula: Formula, sign: i32, x: f32, hx: f64, hy: f64) -> Self {
        let points = formula
            .offsets()
            .iter()
            .map(|k| (f64::from(x) + f64::from(k * sign) * hx) as f32)
            .collect();
        Self {
            formula,
            sign,
            hy,
            points,
        }
    }

    fn skip(formula: Formula) -> Self {
        Self {
            formula,
            sign: 1,
            hy: 1.0,
            points: Vec::new(),
        }
    }
}

/// The step really taken from x: fl₃₂(|x| + h) − |x| (exact in f64), at least one ulp of x.
fn representable(x: f32, h: f64) -> f64 {
    let a = x.abs();
    let up = (f64::from(a) + h) as f32;
    let taken = f64::from(up) - f64::from(a);
    if taken > 0.0 {
        return taken;
    }
    let next = f32::from_bits(a.to_bits() + 1);
    f64::from(next) - f64::from(a)
}

fn element_point(k: i32, i: usize) -> String {
    format!("f(x + {k}·h·e_i) of element {i}")
}

impl Fdm {
    /// The settings as a checkpoint's `config`.
    fn config(&self) -> serde_json::Value {
        let mut c = serde_json::json!({
            "h": self.h,
            "formula": format!("{:?}", self.formula),
            "batch_size": self.batch_size,
            "allow_non_finite": self.allow_non_finite,
            "target": format!("{:?}", self.target),
        });
        // Only when on, so that checkpoints written before these settings existed still load.
        if let serde_json::Value::Object(m) = &mut c {
            if self.auto_h {
                m.insert("auto_h".into(), true.into());
            }
            if self.relative_step {
                m.insert("relative_step".into(), true.into());
            }
            if !self.freeze.is_empty() {
                let mut frozen = self.freeze.clone();
                frozen.sort_unstable();
                frozen.dedup();
                m.insert("freeze".into(), serde_json::json!(frozen));
            }
        }
        c
    }
}

impl GradApproximator for Fdm {
    /// Advances the step counter (the `step` of the points' [`Evaluation`]s).
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

    /// The settings, the seed and the step counter; Fdm has no buffers (the estimate is
    /// deterministic, the counters name its evaluations).
    fn save_state(&self) -> Result<Option<State>> {
        let mut state = State::new("Fdm", self.config());
        state.counters = serde_json::json!({
            "seed": self.seed,
            "step": self.step,
            "undo": self.undo,
        });
        Ok(Some(state))
    }

    fn load_state(&mut self, gpu: &Gpu, shape: &[u64], state: &State) -> Result<()> {
        let _ = (gpu, shape);
        if state.name != "Fdm" {
            return Err(Error::invalid(format!(
                "approximator: the checkpoint's is {}, this one is Fdm",
                state.name
            )));
        }
        if let Some(diff) = difference(&self.config(), &state.config) {
            return Err(Error::invalid(format!("approximator (Fdm): {diff}")));
        }
        // A checkpoint written before Fdm had counters has none: step 0, this seed.
        if state.counters.is_null() {
            self.step = 0;
            self.undo = None;
            return Ok(());
        }
        let seed = state.counter_u64("seed")?;
        let step = u32::try_from(state.counter_u64("step")?)
            .map_err(|_| Error::invalid("checkpoint: Fdm's `step` exceeds u32"))?;
        let undo = match state.counters.get("undo") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|u| u32::try_from(u).ok())
                    .ok_or_else(|| Error::invalid("checkpoint: Fdm's `undo` is malformed"))?,
            ),
        };
        self.seed = seed;
        self.step = step;
        self.undo = undo;
        Ok(())
    }

    fn approximate(
        &mut self,
        gpu: &Gpu,
        params: &mut Params,
        objective: &mut dyn Objective,
        grad: &mut Params,
    ) -> Result<Estimate> {
        self.run(gpu, params, objective, grad, None)
    }

    fn approximate_with_loss(
        &mut self,
        gpu: &Gpu,
        params: &mut Params,
        objective: &mut dyn Objective,
        grad: &mut Params,
        loss: f32,
    ) -> Result<Estimate> {
        self.run(gpu, params, objective, grad, Some(loss))
    }

    fn current_target(&self) -> Target {
        self.target
    }

    /// True: every element is written back to its original value.
    fn restores_exactly(&self) -> bool {
        true
    }
}
