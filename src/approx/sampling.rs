// SPDX-License-Identifier: MIT OR Apache-2.0
//! The one core of the direction-based estimators: [`Sampler`] holds the settings, the step and
//! call counters, the restore policy and the gradient write that [`RandomizedFdm`],
//! [`MeZo`](super::MeZo) and [`ForwardGradient`](super::ForwardGradient) share; each of them is a
//! `Sampler` with its own kind `K` (what only that estimator has). A new setting is one field of
//! [`Settings`], one setter here and its use in [`differences`](super::probe::differences) or
//! [`Sampler::begin`].
//!
//! [`RandomizedFdm`]: super::RandomizedFdm

use std::sync::Arc;

use super::probe::{differences, Along, Differences, Sample};
use super::{
    check_buffers, check_h, check_samples, Estimate, Formula, GradApproximator, Objective, Target,
};
use crate::bounds::{self, Fit};
use crate::checkpoint::{difference, State};
use crate::gpu::magnitude::MagnitudeBuffers;
use crate::kernels::{self, fill, Direction, Mask};
use crate::mask::{self, Magnitude};
use crate::restore::{check_device, saved_copy};
use crate::schedule::Schedule;
use crate::{cpu, Distribution, Error, Gpu, Params, Result};

/// The settings of a direction-based estimator, each stored as given and checked at use.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    /// The finite-difference step of the current step (follows `h_schedule` when one is set).
    pub h: f32,
    /// h as a function of the step counter ([`Sampler::h_schedule`]).
    pub h_schedule: Option<Schedule>,
    pub n_samples: u32,
    pub formula: Formula,
    pub distribution: Distribution,
    pub pre_generate: bool,
    pub seed: u64,
    pub exact_restore: bool,
    pub allow_non_finite: bool,
    pub target: Target,
    /// The probability that an element is perturbed ([`Sampler::density`]; 1: all).
    pub density: f32,
    /// The magnitude mask's (quantile, every k steps) ([`Sampler::magnitude_mask`]).
    pub magnitude: Option<(f32, u32)>,
}

/// A direction-based gradient estimator: the settings, counters and restore policy that
/// [`RandomizedFdm`](super::RandomizedFdm), [`MeZo`](super::MeZo) and
/// [`ForwardGradient`](super::ForwardGradient) share, with `K` the part only one of them has.
/// Use it through those three names; the setters below are common to all three.
///
/// Directions: sample s of step t is the Philox stream (seed, t, s); with `pre_generate(false)`
/// the c-th call of a step uses samples c·S … c·S + S − 1 instead of 0 … S − 1.
///
/// Box bounds on the parameters ([`Params::set_bounds`]) keep every evaluated point in the box
/// (a shrunk step per sample, or projected points next to a bound; see there). Relative steps
/// h·max(1, |xᵢ|) come from relative scales ([`Scales::relative`](crate::Scales::relative)).
#[derive(Debug)]
pub struct Sampler<K> {
    pub(super) set: Settings,
    step: u32,
    calls: u32,
    /// (step, calls) before the last `pre_step`, for `abort_step`.
    undo: Option<(u32, u32)>,
    /// The saved copy of x of `exact_restore(true)`.
    pub(super) saved: Option<Params>,
    pub(super) kind: K,
    /// The frozen buffers ([`Sampler::freeze`]); outside [`Settings`], which is `Copy`.
    freeze: Vec<usize>,
    /// The direction mask of the current call (frozen buffers, density, magnitude), built by
    /// `begin`.
    pub(super) mask: Mask,
    /// The magnitude mask's state ([`Sampler::magnitude_mask`]).
    magnitude: MagnitudeState,
}

/// The state of a magnitude mask: its GPU buffers, the thresholds and the steps they and the
/// bits were computed at.
#[derive(Debug, Default)]
struct MagnitudeState {
    buffers: Option<Arc<MagnitudeBuffers>>,
    thresholds: Vec<f32>,
    /// The step the thresholds were computed at (checkpointed with them).
    at: Option<u32>,
    /// The step the bits were computed at (recomputed from x at the first call of each step).
    bits_at: Option<u32>,
    current: Option<Arc<Magnitude>>,
}

/// The arguments of one `approximate` (or fused) call besides the gradient.
pub(crate) struct Call<'c> {
    pub(crate) gpu: &'c Gpu,
    pub(crate) params: &'c mut Params,
    pub(crate) objective: &'c mut dyn Objective,
    /// f(x) when the caller knows it.
    pub(crate) known_f0: Option<f32>,
}

impl<'c> Call<'c> {
    pub(crate) fn new(
        gpu: &'c Gpu,
        params: &'c mut Params,
        objective: &'c mut dyn Objective,
        known_f0: Option<f32>,
    ) -> Self {
        Self {
            gpu,
            params,
            objective,
            known_f0,
        }
    }
}

/// What a kind's fused step returns: `None` when it has none.
pub(crate) type Fused = Option<Result<Estimate>>;

/// What an estimator adds to the [`Sampler`] core: its evaluation of one call and its own
/// state. Implemented by the three kinds of this crate only.
pub(crate) trait Kind: Sized {
    /// The estimator's name in checkpoints.
    const NAME: &'static str;

    /// The kind's own settings, merged into the checkpoint's `config`.
    fn config(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }

    /// Adds the kind's counters and GPU state to a checkpoint's state.
    ///
    /// # Errors
    /// Device errors.
    fn save(&self, state: &mut State) -> Result<()> {
        let _ = state;
        Ok(())
    }

    /// Takes the kind's counters and GPU state from `state`: all or nothing.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for malformed state; device errors.
    fn load(&mut self, gpu: &Gpu, shape: &[u64], state: &State) -> Result<()> {
        let _ = (gpu, shape, state);
        Ok(())
    }

    /// Estimates the gradient into `grad` (the body of `approximate`).
    ///
    /// # Errors
    /// As [`GradApproximator::approximate`].
    fn run(s: &mut Sampler<Self>, call: Call<'_>, grad: &mut Params) -> Result<Estimate>;

    /// Bytes of GPU buffers the kind owns besides the saved copy.
    fn state_bytes(&self) -> u64 {
        0
    }

    /// The fused step `x ← a·x − alpha·ĝ`, for a kind that has one (`None`: it has not).
    ///
    /// # Errors
    /// As [`GradApproximator::fused_step`].
    fn fused_step(s: &mut Sampler<Self>, call: Call<'_>, a: f32, alpha: f32) -> Fused {
        let _ = (s, call, a, alpha);
        None
    }

    /// Whether [`fused_step`](Kind::fused_step) is implemented.
    fn can_fuse() -> bool {
        false
    }
}

impl<K> Sampler<K> {
    /// torchzero's common defaults (h = 1e-3, one sample, Central, pre-generated, in-place
    /// restore, non-finite losses rejected, Target::Closure) with `distribution`, `seed` and
    /// the kind's own part.
    pub(super) fn with(kind: K, distribution: Distribution, seed: u64) -> Self {
        Self {
            set: Settings {
                h: 1e-3,
                h_schedule: None,
                n_samples: 1,
                formula: Formula::Central,
                distribution,
                pre_generate: true,
                seed,
                exact_restore: false,
                allow_non_finite: false,
                target: Target::Closure,
                density: 1.0,
                magnitude: None,
            },
            step: 0,
            calls: 0,
            undo: None,
            saved: None,
            kind,
            freeze: Vec::new(),
            mask: Mask::all(),
            magnitude: MagnitudeState::default(),
        }
    }

    /// The finite-difference step h (checked at use: finite and > 0). For
    /// [`ForwardGradient`](super::ForwardGradient) it is the step along the unit direction.
    #[must_use]
    pub fn h(mut self, h: f32) -> Self {
        self.set.h = h;
        self.set.h_schedule = None;
        self
    }

    /// h as a function of the optimiser step k (1, 2, …): step k uses h = `schedule.value(k)`
    /// for all its evaluations, so every call within a step (line searches, Newton-CG, the fused
    /// MeZO restore) moves by the same h. Spall's perturbation sizes are
    /// [`Schedule::spall_h`] (c / k^0.101), with c from
    /// [`Schedule::calibrate_spall_h`]. It replaces a constant [`h`](Sampler::h) (and a later
    /// `h(..)` replaces it); checked at use like h. A checkpoint stores the schedule, and a
    /// resumed run takes h from its step counter.
    #[must_use]
    pub fn h_schedule(mut self, schedule: Schedule) -> Self {
        self.set.h_schedule = Some(schedule);
        self.follow_h_schedule();
        self
    }

    /// Sets h from the schedule for the current step counter (step 0, before the first
    /// `pre_step`, takes the first step's value).
    fn follow_h_schedule(&mut self) {
        if let Some(schedule) = self.set.h_schedule {
            self.set.h = schedule.value(u64::from(self.step)) as f32;
        }
    }

    /// The number of samples S (checked at use: ≥ 1).
    #[must_use]
    pub fn n_samples(mut self, n_samples: u32) -> Self {
        self.set.n_samples = n_samples;
        self
    }

    /// The distribution of the directions.
    #[must_use]
    pub fn distribution(mut self, distribution: Distribution) -> Self {
        self.set.distribution = distribution;
        self
    }

    /// The Philox seed of the directions.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.set.seed = seed;
        self
    }

    /// Where the estimate goes in an optimiser chain.
    #[must_use]
    pub fn target(mut self, target: Target) -> Self {
        self.set.target = target;
        self
    }

    /// Propagate a NaN or infinite loss (or JVP) into the estimate instead of failing with
    /// [`Error::NonFiniteLoss`] (the default, `false`): the coefficients of the affected samples,
    /// and so the gradient, become NaN or ±∞, and the chain that consumes them must handle it.
    /// The parameters are restored either way.
    #[must_use]
    pub fn allow_non_finite(mut self, allow: bool) -> Self {
        self.set.allow_non_finite = allow;
        self
    }

    /// Restore x by copy from one saved copy (bit-exact; allocates n floats) instead of in place.
    ///
    /// **Drift of the default, in-place restoration.** x + h·u − 2h·u + h·u is not x in f32. The
    /// largest |x − x₀| after 10⁴ in-place central-difference samples (h = 1e-3, a fresh
    /// direction each, 10⁴ parameters uniform in [−1, 1)), measured on lavapipe (Vulkan) and
    /// llvmpipe (GL) by `tests/reliability.rs`, is:
    ///
    /// | distribution | Rademacher | Gaussian | Uniform | Sphere |
    /// |---|---|---|---|---|
    /// | max \|x − x₀\| after 10⁴ samples | 1.5e-4 | 1.4e-5 | 1.6e-5 | 1.7e-5 |
    ///
    /// Most elements come back exactly or random-walk by about one ulp per sample; the few
    /// within a few h of a power of two, where the steps cross into a binade with another
    /// ulp, drift one way by up to half an ulp per sample (the Rademacher figure). One sample
    /// moves an element by a few ulp at most. `exact_restore(true)` makes the drift 0 and, in
    /// an [`Optimizer`](crate::optim::Optimizer), a failed step leaves x bit-identical.
    #[must_use]
    pub fn exact_restore(mut self, exact: bool) -> Self {
        self.set.exact_restore = exact;
        self
    }

    /// Same directions for every call within a step (true, the default) or new ones per call
    /// (false: the c-th call of a step uses samples c·S … c·S + S − 1).
    #[must_use]
    pub fn pre_generate(mut self, pre_generate: bool) -> Self {
        self.set.pre_generate = pre_generate;
        self
    }

    /// Freeze the buffers `buffers` (indices into [`Params::buffer_lens`]): the directions are 0
    /// there, so those buffers are never written — not perturbed, not restored, not updated by
    /// the fused MeZO step (a frozen buffer's bytes, NaN payloads included, stay as they are) —
    /// and the gradient estimate is exactly 0 there. The kernels skip the frozen buffers'
    /// chunks. S and the evaluation counts do not change. A [`Distribution::Sphere`] direction
    /// is normalised over the unfrozen elements (√n_free/‖z_free‖: it lives in their subspace).
    /// Checked at use: every index in range, at least one buffer left. An empty list (the
    /// default) freezes nothing. See [`Mask`] for the directions' definition.
    ///
    /// Optimiser modules that add terms of their own to the update (an unfused `WeightDecay`)
    /// still move frozen buffers; the fused MeZO step does not decay them. With
    /// `exact_restore(true)` the restoring copy rewrites every buffer with its saved bytes,
    /// frozen ones included (the same bytes). `RandomizedFdm` with `beta > 0` refuses frozen
    /// buffers (its stored directions move x by `axpy` over every buffer). The directions of
    /// [`next_directions`](Sampler::next_directions) are the unmasked ones: apply them with
    /// [`mask_for`](Sampler::mask_for) and the masked kernels.
    #[must_use]
    pub fn freeze(mut self, buffers: &[usize]) -> Self {
        self.freeze = buffers.to_vec();
        self
    }

    /// Sparse random directions (Sparse MeZO, Liu et al. 2024): each element is perturbed with
    /// probability `density` (a Philox-derived keep bit regenerated from (seed, step, sample,
    /// element), never stored) and the kept elements are scaled by 1/√p, so that E\[uuᵀ\] = I and
    /// the estimate stays unbiased (its variance grows by about 1/p). Checked at use: in
    /// (0, 1]; 1 (the default) perturbs every element. p is rounded to a multiple of 2⁻¹⁶. See
    /// [`Mask`] for the definition and the stream.
    #[must_use]
    pub fn density(mut self, density: f32) -> Self {
        self.set.density = density;
        self
    }

    /// The magnitude mask of Sparse MeZO (Liu et al. 2024): perturb only the elements with
    /// |x_i| below a per-buffer threshold τ_k, the `quantile` of |x| over buffer k (so about
    /// that fraction of each buffer moves: 0.75 perturbs the 75 % smallest). τ_k is computed
    /// on the GPU — a histogram of |x|'s bit patterns (32768 bins per buffer, 2⁻⁷ relative
    /// width) and one readback of the counts, never a download of x — at the first step and
    /// every `every_k_steps` steps after; it is the upper edge of the bin where the count
    /// reaches ⌈quantile·len⌉, so it exceeds the exact quantile by at most one bin. The mask
    /// itself (one bit per element, n/32 words on the GPU) is computed from x at the start of
    /// every step with the current thresholds and kept while x is perturbed (|x_i| changes
    /// then), so the perturbation, the restore and the fused update of a step use the same
    /// mask. The magnitude mask is deterministic and not rescaled; it composes with `freeze`,
    /// `density` and the fused MeZO step, not with [`Params::set_scales`] (refused). A
    /// checkpoint stores the thresholds and their step; a resumed run recomputes the bits
    /// from x bit-exactly. Checked at use: quantile in (0, 1], every_k_steps ≥ 1.
    #[must_use]
    pub fn magnitude_mask(mut self, quantile: f32, every_k_steps: u32) -> Self {
        self.set.magnitude = Some((quantile, every_k_steps));
        self
    }

    /// The direction mask these settings give for `params` (frozen buffers, density, and the
    /// magnitude mask of the last call when one is set): what
    /// [`kernels::perturb_masked`] and [`kernels::scale_accumulate_masked`] need to apply the
    /// terms of [`MeZo::estimate_terms`](super::MeZo::estimate_terms) by hand.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] as [`Mask::new`].
    pub fn mask_for(&self, params: &Params) -> Result<Mask> {
        let mask = if self.freeze.is_empty() && self.set.density == 1.0 {
            Mask::all()
        } else {
            Mask::new(params, &self.freeze, self.set.density)?
        };
        Ok(match (&self.set.magnitude, &self.magnitude.current) {
            (Some(_), Some(m)) => mask.with_magnitude(Arc::clone(m)),
            _ => mask,
        })
    }

    /// Brings the magnitude mask up to date for the current step (thresholds every k steps,
    /// bits at the first call of each step) and returns it.
    fn update_magnitude(
        &mut self,
        params: &mut Params,
        quantile: f32,
        every: u32,
    ) -> Result<Arc<Magnitude>> {
        if !(quantile > 0.0 && quantile <= 1.0) {
            return Err(Error::invalid(format!(
                "magnitude_mask: the quantile must be in (0, 1], got {quantile}"
            )));
        }
        if every == 0 {
            return Err(Error::invalid(
                "magnitude_mask: every_k_steps must be at least 1, got 0",
            ));
        }
        if params.has_scales() {
            return Err(Error::invalid(
                "magnitude_mask: not available for parameters with scales (Params::set_scales)",
            ));
        }
        let (n, count) = (params.len(), params.buffer_lens().len());
        let st = &mut self.magnitude;
        let fits = st
            .buffers
            .as_ref()
            .is_some_and(|b| b.fits(params.gpu(), n, count));
        if !fits {
            st.buffers = None;
            st.buffers = Some(Arc::new(MagnitudeBuffers::new(params.gpu(), n, count)?));
            st.bits_at = None;
        }
        let buffers = Arc::clone(st.buffers.as_ref().expect("the buffers exist"));
        let step = self.step;
        let due = match st.at {
            Some(at) => step < at || step - at >= every || st.thresholds.len() != count,
            None => true,
        };
        if due {
            st.thresholds = mask::magnitude_thresholds(params, &buffers, quantile)?;
            st.at = Some(step);
            st.bits_at = None;
        }
        if st.bits_at != Some(step) || st.current.is_none() {
            mask::magnitude_bits(params, &buffers, &st.thresholds)?;
            st.bits_at = Some(step);
            st.current = Some(Arc::new(Magnitude {
                buffers,
                thresholds: st.thresholds.clone(),
            }));
        }
        Ok(Arc::clone(st.current.as_ref().expect("the mask exists")))
    }

    /// The seed in use (set with `seed`, else the estimator's default).
    #[must_use]
    pub fn current_seed(&self) -> u64 {
        self.set.seed
    }

    /// The finite-difference step h the current step uses: the constant [`h`](Sampler::h), or
    /// the [`h_schedule`](Sampler::h_schedule)'s value at the step counter.
    #[must_use]
    pub fn current_h(&self) -> f32 {
        self.set.h
    }

    /// The step counter (0 until the first [`pre_step`](GradApproximator::pre_step)).
    #[must_use]
    pub fn current_step(&self) -> u32 {
        self.step
    }

    /// The Philox directions u_s the next `approximate` call will draw (for
    /// [`RandomizedFdm`](super::RandomizedFdm) with `beta > 0`, the new draws folded into the
    /// stored directions).
    #[must_use]
    pub fn next_directions(&self) -> Vec<Direction> {
        let base = if self.set.pre_generate {
            0
        } else {
            self.calls.wrapping_mul(self.set.n_samples)
        };
        (0..self.set.n_samples)
            .map(|s| self.direction_of(base.wrapping_add(s)))
            .collect()
    }

    /// The direction of `sample` in the current step.
    pub(super) fn direction_of(&self, sample: u32) -> Direction {
        Direction {
            distribution: self.set.distribution,
            seed: self.set.seed,
            step: self.step,
            sample,
        }
    }

    /// Checks the settings and buffers (`uses_h`: whether h is used; `grad`: checked against
    /// `params` when given), pre-warms the Sphere norms and returns this call's directions,
    /// counting the call.
    pub(super) fn begin(
        &mut self,
        call: &mut Call<'_>,
        grad: Option<&Params>,
        uses_h: bool,
    ) -> Result<Vec<Direction>> {
        if let Some((quantile, every)) = self.set.magnitude {
            let magnitude = self.update_magnitude(call.params, quantile, every)?;
            self.mask = self.mask_for(call.params)?.with_magnitude(magnitude);
        }
        let (gpu, params) = (call.gpu, &*call.params);
        if uses_h {
            if let Some(schedule) = &self.set.h_schedule {
                schedule
                    .validate()
                    .map_err(|e| Error::invalid(format!("h_schedule: {e}")))?;
            }
            check_h(self.set.h)?;
        }
        check_samples(self.set.n_samples)?;
        match grad {
            Some(grad) => check_buffers(gpu, params, grad)?,
            None => check_device(params, "params", gpu, "the `gpu` argument")?,
        }
        if self.set.magnitude.is_none() {
            self.mask = self.mask_for(params)?;
        }
        let dirs = self.next_directions();
        self.calls = self.calls.wrapping_add(1);
        if self.set.distribution == Distribution::Sphere {
            // One reduction for all samples' norms (cached for the perturbations), over the
            // unfrozen elements.
            let samples: Vec<u32> = dirs.iter().map(|d| d.sample).collect();
            let ranges = self.mask.free_ranges(params.len());
            gpu.sphere_norms_over(self.set.seed, self.step, &samples, &ranges)?;
        }
        Ok(dirs)
    }

    /// The gradient's terms `(sample, D_s/S)` of `g = Σ terms_s · z(seed, step, sample_s)`.
    pub(super) fn terms(&self, dirs: &[Direction], derivatives: &[f64]) -> Vec<(u32, f32)> {
        let inv_s = 1.0 / f64::from(self.set.n_samples);
        dirs.iter()
            .zip(derivatives)
            .map(|(dir, d)| (dir.sample, (d * inv_s) as f32))
            .collect()
    }

    /// `grad ← Σ terms_s · z(seed, step, sample_s)` in one accumulate pass.
    pub(super) fn write(&self, grad: &mut Params, terms: &[(u32, f32)]) -> Result<()> {
        fill(grad, 0.0)?;
        self.scale_accumulate(grad, 1.0, terms)
    }

    /// `x ← a·x + Σ terms_s · z(seed, step, sample_s)` in one GPU pass; with
    /// `allow_non_finite` and a NaN or infinite coefficient (which the kernels reject) by the
    /// CPU twin instead, so that NaN and ±∞ propagate as IEEE arithmetic says.
    pub(super) fn scale_accumulate(
        &self,
        x: &mut Params,
        a: f32,
        terms: &[(u32, f32)],
    ) -> Result<()> {
        let (d, step) = (&self.set, self.step);
        let mask = &self.mask;
        if d.allow_non_finite && terms.iter().any(|t| !t.1.is_finite()) {
            let mut host = x.to_vec()?;
            let n = host.len() as u64;
            let (dist, seed) = (d.distribution, d.seed);
            let mask = mask.with_host_bits()?;
            cpu::scale_accumulate_masked(&mut host, a, 0, dist, seed, step, terms, n, &mask);
            return x.write(&host);
        }
        kernels::scale_accumulate_masked(x, a, d.distribution, d.seed, step, terms, mask)
    }
}

/// A magnitude mask's checkpointed counters: the thresholds' step and bit patterns.
struct MagnitudeCounters {
    step: u32,
    thresholds: Vec<u32>,
}

impl MagnitudeCounters {
    /// `{"step": u32, "thresholds": [u32, …]}`, or `None` when malformed.
    fn parse(v: &serde_json::Value) -> Option<Self> {
        let step = u32::try_from(v.get("step")?.as_u64()?).ok()?;
        let thresholds = v
            .get("thresholds")?
            .as_array()?
            .iter()
            .map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok()))
            .collect::<Option<Vec<u32>>>()?;
        Some(Self { step, thresholds })
    }
}

/// The settings of `s` as a checkpoint's `config` (the seed is a counter: see `save_state`).
fn config_of<K: Kind>(s: &Sampler<K>) -> serde_json::Value {
    {
        let d = &s.set;
        // A scheduled h changes every step: the schedule is the setting, not today's value.
        let h = match d.h_schedule {
            Some(schedule) => serde_json::json!(format!("{schedule:?}")),
            None => serde_json::json!(d.h),
        };
        let mut m = serde_json::json!({
            "h": h,
            "n_samples": d.n_samples,
            "formula": format!("{:?}", d.formula),
            "distribution": format!("{:?}", d.distribution),
            "pre_generate": d.pre_generate,
            "exact_restore": d.exact_restore,
            "allow_non_finite": d.allow_non_finite,
            "target": format!("{:?}", d.target),
        });
        if let serde_json::Value::Object(o) = &mut m {
            // Written only when set, so that checkpoints of unmasked runs stay as they were.
            if !s.freeze.is_empty() {
                let mut frozen = s.freeze.clone();
                frozen.sort_unstable();
                frozen.dedup();
                o.insert("freeze".into(), serde_json::json!(frozen));
            }
            if d.density != 1.0 {
                o.insert("density".into(), serde_json::json!(d.density));
            }
            if let Some((q, every)) = d.magnitude {
                o.insert("magnitude_mask".into(), serde_json::json!([q, every]));
            }
            o.extend(s.kind.config());
        }
        m
    }
}

/// Evaluates the settings' formula along `plans` with their restore policy (one saved copy in
/// `saved`, or in place); see [`differences`]. With box bounds on the parameters
/// (`Params::set_bounds`), each sample's step is first shrunk so that its points stay in the box,
/// or, when that would take a step below a tenth of the asked one, every point is projected onto
/// the box and x restored by copy (the saved copy is then made whatever `exact_restore` says).
pub(super) fn evaluate(
    set: &Settings,
    saved: &mut Option<Params>,
    plans: &[Sample<'_>],
    call: &mut Call<'_>,
    keep_last: bool,
) -> Result<Differences> {
    let directions: Vec<(bounds::Along<'_>, f32)> = plans
        .iter()
        .map(|s| {
            let along = match s.along {
                Along::Philox(d, mask) => bounds::Along::Philox(d, mask),
                Along::Stored(v) => bounds::Along::Stored(v),
            };
            (along, s.unit)
        })
        .collect();
    let fit = bounds::fit(call.params, set.formula.offsets(), &directions)?;
    let mut fitted = plans.to_vec();
    let project = match fit {
        Some(Fit::Project) => true,
        Some(Fit::Shrink(ratios)) => {
            for (s, r) in fitted.iter_mut().zip(ratios) {
                if r < 1.0 {
                    // Points at r·unit: D from the combination over h is 1/r too small.
                    s.unit = (f64::from(s.unit) * r) as f32;
                    s.post /= r;
                }
            }
            false
        }
        None => false,
    };
    let saved = if set.exact_restore || project || !call.params.has_bounds() {
        saved_copy(set.exact_restore || project, saved, call.params)?
    } else {
        // In place, but keep the copy of earlier projected calls: with bounds a later call may
        // project again, and the copy is not reallocated every time.
        None
    };
    let (params, objective) = (&mut *call.params, &mut *call.objective);
    let found = differences(
        set,
        &fitted,
        params,
        saved,
        objective,
        call.known_f0,
        keep_last,
        project,
    )?;
    // The restore may be pending (`gpu/pending.rs`): submitted now for an objective that is not
    // zograd's own, which the caller may evaluate next with submissions of its own.
    if !keep_last && !call.objective.zograd_own(crate::objective::sealed::Own) {
        call.gpu.flush()?;
    }
    Ok(found)
}

impl<K: Kind> GradApproximator for Sampler<K> {
    /// Advances the step counter (new directions) and resets the call counter.
    fn pre_step(&mut self) {
        self.undo = Some((self.step, self.calls));
        self.step = self.step.wrapping_add(1);
        self.calls = 0;
        self.follow_h_schedule();
    }

    /// Back to the step and call counters before the last `pre_step`. The stored directions of
    /// [`RandomizedFdm`](super::RandomizedFdm) with `beta > 0` keep the draws already folded in:
    /// with `pre_generate = true` the retried step finds its draw folded and does not fold it
    /// again (as if the failed step had not run); with `pre_generate = false` the draws of the
    /// failed step's calls stay in.
    fn abort_step(&mut self) {
        if let Some((step, calls)) = self.undo.take() {
            self.step = step;
            self.calls = calls;
            self.follow_h_schedule();
        }
    }

    fn approximate(
        &mut self,
        gpu: &Gpu,
        params: &mut Params,
        objective: &mut dyn Objective,
        grad: &mut Params,
    ) -> Result<Estimate> {
        let call = Call::new(gpu, params, objective, None);
        K::run(self, call, grad)
    }

    fn approximate_with_loss(
        &mut self,
        gpu: &Gpu,
        params: &mut Params,
        objective: &mut dyn Objective,
        grad: &mut Params,
        loss: f32,
    ) -> Result<Estimate> {
        let call = Call::new(gpu, params, objective, Some(loss));
        K::run(self, call, grad)
    }

    /// The saved copy (`exact_restore`) once allocated, plus the kind's own buffers (the
    /// stored directions of `beta > 0`, ForwardGradient's Uniform-norm scratch buffer).
    fn state_bytes(&self) -> u64 {
        self.saved.as_ref().map_or(0, Params::owned_bytes)
            + self.kind.state_bytes()
            + self.magnitude.buffers.as_ref().map_or(0, |b| b.bytes())
    }

    /// The settings, the seed, the step and call counters and the kind's state (the stored
    /// directions of [`RandomizedFdm`](super::RandomizedFdm) with `beta > 0`). The seed is
    /// state, not a setting: an estimator built with a random seed takes the checkpoint's.
    fn save_state(&self) -> Result<Option<State>> {
        let mut state = State::new(K::NAME, config_of(self));
        state.counters = serde_json::json!({
            "seed": self.set.seed,
            "step": self.step,
            "calls": self.calls,
            "undo": self.undo.map(|(s, c)| [s, c]),
        });
        if self.set.magnitude.is_some() {
            // The thresholds (as bit patterns: they may be +inf) and their step; the bits are
            // recomputed from x at the next step.
            let m = &self.magnitude;
            let value = match m.at {
                Some(at) => serde_json::json!({
                    "step": at,
                    "thresholds": m.thresholds.iter().map(|t| t.to_bits()).collect::<Vec<u32>>(),
                }),
                None => serde_json::Value::Null,
            };
            if let serde_json::Value::Object(c) = &mut state.counters {
                c.insert("magnitude".into(), value);
            }
        }
        self.kind.save(&mut state)?;
        Ok(Some(state))
    }

    fn load_state(&mut self, gpu: &Gpu, shape: &[u64], state: &State) -> Result<()> {
        if state.name != K::NAME {
            return Err(Error::invalid(format!(
                "approximator: the checkpoint's is {}, this one is {}",
                state.name,
                K::NAME
            )));
        }
        if let Some(diff) = difference(&config_of(self), &state.config) {
            return Err(Error::invalid(format!(
                "approximator ({}): {diff}",
                K::NAME
            )));
        }
        let u32_of = |key: &str| -> Result<u32> {
            u32::try_from(state.counter_u64(key)?).map_err(|_| {
                Error::invalid(format!("checkpoint: {}'s `{key}` exceeds u32", K::NAME))
            })
        };
        let seed = state.counter_u64("seed")?;
        let (step, calls) = (u32_of("step")?, u32_of("calls")?);
        let undo = match state.counters.get("undo") {
            Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                serde_json::from_value::<(u32, u32)>(v.clone()).map_err(|_| {
                    Error::invalid(format!("checkpoint: {}'s `undo` is malformed", K::NAME))
                })?,
            ),
            None => {
                return Err(Error::invalid(format!(
                    "checkpoint: {}'s counter `undo` is missing",
                    K::NAME
                )))
            }
        };
        let magnitude = if self.set.magnitude.is_some() {
            match state.counters.get("magnitude") {
                Some(serde_json::Value::Null) => None,
                Some(v) => Some(MagnitudeCounters::parse(v).ok_or_else(|| {
                    Error::invalid(format!(
                        "checkpoint: {}'s `magnitude` is malformed",
                        K::NAME
                    ))
                })?),
                None => {
                    return Err(Error::invalid(format!(
                        "checkpoint: {}'s counter `magnitude` is missing",
                        K::NAME
                    )))
                }
            }
        } else {
            None
        };
        self.kind.load(gpu, shape, state)?;
        self.magnitude = MagnitudeState::default();
        if let Some(m) = magnitude {
            self.magnitude.at = Some(m.step);
            self.magnitude.thresholds = m.thresholds.into_iter().map(f32::from_bits).collect();
        }
        self.set.seed = seed;
        self.step = step;
        self.calls = calls;
        self.undo = undo;
        self.follow_h_schedule();
        Ok(())
    }

    fn restores_exactly(&self) -> bool {
        self.set.exact_restore
    }

    fn current_target(&self) -> Target {
        self.set.target
    }

    fn can_fuse(&self) -> bool {
        K::can_fuse()
    }

    fn fused_step(
        &mut self,
        gpu: &Gpu,
        params: &mut Params,
        objective: &mut dyn Objective,
        a: f32,
        alpha: f32,
    ) -> Result<Estimate> {
        let call = Call::new(gpu, params, objective, None);
        K::fused_step(self, call, a, alpha).unwrap_or_else(|| {
            Err(Error::Unsupported(
                "this approximator has no fused step (can_fuse() is false)".into(),
            ))
        })
    }
}
