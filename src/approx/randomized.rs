// SPDX-License-Identifier: MIT OR Apache-2.0
//! Randomized finite differences: [`RandomizedFdm`] and its presets [`Spsa`], [`Rdsa`] and
//! [`GaussianSmoothing`].

use super::probe::{differences, Along, Sample};
use super::{
    check_buffers, check_h, check_samples, entropy_seed, Estimate, Formula, GradApproximator,
    Objective, Target,
};
use crate::kernels::{accumulate, axpy, copy, fill, scale, Direction};
use crate::{Distribution, Error, Gpu, Params, Result};

/// Gradient estimation by randomized finite differences (torchzero's `RandomizedFDM`):
///
/// g = (1/S) Σ_s D_s · u_s,  D_s = the [`Formula`]'s estimate of ∇f(x)·u_s from
/// f(x + k·h·u_s),
///
/// with u_s = z(seed, step, sample s, ·) drawn from the [`Distribution`] (unit variance per
/// element; no normalisation by the dimension), so E\[g\] = ∇f(x) + O(h^order) for every
/// distribution. Defaults (torchzero's): h = 1e-3, n_samples = 1, formula = Central,
/// distribution = Rademacher, pre_generate = true, beta = 0, seed = random (from the OS),
/// target = Closure.
///
/// - **Directions.** Sample s of a call uses `Direction { distribution, seed, step, sample }`
///   with `step` the step counter ([`pre_step`](GradApproximator::pre_step) adds one) and
///   `sample = s` when `pre_generate` is true, so every call within a step (a line search,
///   Newton-CG) sees the same directions; with `pre_generate = false` the c-th call of the step
///   uses `sample = c·S + s`, new directions each call. Nothing is stored either way:
///   "pre-generation" is only the choice of Philox counter.
/// - **Direction momentum** `beta > 0` (from torchzero's documentation): sample s perturbs
///   along v_s ← β·v_s + (1 − β)·u_s (v_s = u_s at the first draw), updated once per new draw
///   (per step with `pre_generate`, per call without). This stores the S directions v_s: S·n
///   floats of GPU memory ([`state_bytes`](GradApproximator::state_bytes)), and the gradient is
///   accumulated with one `axpy` per sample instead of the single-pass `accumulate`.
/// - **Evaluations** per call: m·S, plus one for f₀ when the formula uses it (m = points of
///   the formula: Central 2, Forward 1, Central4 4, Forward5 4). With an objective that
///   batches ([`Objective::has_batch`]) all m·S points go to one `loss_batch` call (not with
///   `beta > 0`, whose directions are not Philox ones).
/// - **Restoring**: in place (drift of a few ulp, see [`crate::approx`]) or, with
///   `exact_restore(true)`, by copy from one saved copy of x (n floats).
///
/// References: J. C. Spall, "Multivariate stochastic approximation using a simultaneous
/// perturbation gradient approximation", IEEE TAC 37 (1992); Y. Nesterov, V. Spokoiny, "Random
/// gradient-free minimization of convex functions", Found. Comput. Math. 17 (2017).
///
/// # Errors
/// `approximate` returns [`Error::InvalidArgument`] for h ≤ 0 or non-finite, `n_samples = 0`,
/// beta outside [0, 1], or `grad` of another shape or device than `params`;
/// [`Error::NonFiniteLoss`] for a NaN or infinite loss; the objective's errors. The parameters
/// are restored first.
///
/// # Example
/// ```no_run
/// use zograd::approx::{Distribution, Formula, GradApproximator, RandomizedFdm};
/// use zograd::Params;
/// # fn main() -> zograd::Result<()> {
/// let gpu = zograd::Gpu::new()?;
/// let mut x = Params::from_slices(&gpu, &[&[1.0f32; 100][..]])?;
/// let mut g = x.zeros_like()?;
/// let mut loss = |p: &Params| -> zograd::Result<f32> { Ok(p.to_vec()?.iter().map(|v| v * v).sum()) };
/// let mut est = RandomizedFdm::new()
///     .formula(Formula::Forward)
///     .distribution(Distribution::Gaussian)
///     .n_samples(8)
///     .seed(7);
/// est.pre_step();
/// let e = est.approximate(&gpu, &mut x, &mut loss, &mut g)?;
/// assert_eq!(e.evaluations, 9); // f₀ once, then one point per sample
/// assert!(e.loss.is_some());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RandomizedFdm {
    h: f32,
    n_samples: u32,
    formula: Formula,
    distribution: Distribution,
    pre_generate: bool,
    seed: u64,
    beta: f32,
    exact_restore: bool,
    target: Target,
    step: u32,
    calls: u32,
    /// (step, calls) before the last `pre_step`, for `abort_step`.
    undo: Option<(u32, u32)>,
    saved: Option<Params>,
    momentum: Option<Momentum>,
}

/// The stored directions of the direction momentum.
#[derive(Debug)]
struct Momentum {
    directions: Vec<Params>,
    /// (step, first sample) of the last draw folded in.
    drawn: Option<(u32, u32)>,
}

impl Default for RandomizedFdm {
    fn default() -> Self {
        Self::new()
    }
}

impl RandomizedFdm {
    /// torchzero's defaults: h = 1e-3, one sample, Central, Rademacher, pre-generated, no
    /// momentum, a seed from OS entropy.
    #[must_use]
    pub fn new() -> Self {
        Self {
            h: 1e-3,
            n_samples: 1,
            formula: Formula::Central,
            distribution: Distribution::Rademacher,
            pre_generate: true,
            seed: entropy_seed(),
            beta: 0.0,
            exact_restore: false,
            target: Target::Closure,
            step: 0,
            calls: 0,
            undo: None,
            saved: None,
            momentum: None,
        }
    }

    builders!(h: f32, n_samples: u32, formula: Formula, distribution: Distribution, pre_generate: bool, seed: u64, beta: f32, exact_restore: bool, target: Target);

    /// The Philox directions u_s the next `approximate` call will draw (with `beta > 0` these
    /// are the new draws folded into the stored directions).
    #[must_use]
    pub fn next_directions(&self) -> Vec<Direction> {
        let base = self.sample_base(self.calls);
        (0..self.n_samples)
            .map(|s| Direction {
                distribution: self.distribution,
                seed: self.seed,
                step: self.step,
                sample: base.wrapping_add(s),
            })
            .collect()
    }

    fn sample_base(&self, call: u32) -> u32 {
        if self.pre_generate {
            0
        } else {
            call.wrapping_mul(self.n_samples)
        }
    }

    fn check(&self) -> Result<()> {
        check_h(self.h)?;
        check_samples(self.n_samples)?;
        if !(0.0..=1.0).contains(&self.beta) {
            return Err(Error::invalid(format!(
                "beta: must be in [0, 1], got {}",
                self.beta
            )));
        }
        Ok(())
    }

    fn run(
        &mut self,
        gpu: &Gpu,
        params: &mut Params,
        objective: &mut dyn Objective,
        grad: &mut Params,
        known_f0: Option<f32>,
    ) -> Result<Estimate> {
        self.check()?;
        check_buffers(gpu, params, grad)?;
        let dirs = self.next_directions();
        self.calls = self.calls.wrapping_add(1);
        let samples: Vec<u32> = dirs.iter().map(|d| d.sample).collect();
        if self.distribution == Distribution::Sphere {
            // One reduction for all samples' norms (cached for the perturbations).
            gpu.sphere_norms(self.seed, self.step, &samples, params.len())?;
        }
        if self.beta > 0.0 {
            self.draw_momentum(params, &dirs)?;
        } else {
            self.momentum = None;
        }
        let saved = if self.exact_restore {
            let s = crate::params::ensure_like(&mut self.saved, params)?;
            copy(s, params)?;
            Some(&*s)
        } else {
            self.saved = None;
            None
        };
        let plans: Vec<Sample<'_>> = match &self.momentum {
            Some(m) => m
                .directions
                .iter()
                .map(|v| Sample {
                    along: Along::Stored(v),
                    unit: self.h,
                    post: 1.0,
                })
                .collect(),
            None => dirs
                .iter()
                .map(|d| Sample {
                    along: Along::Philox(*d),
                    unit: self.h,
                    post: 1.0,
                })
                .collect(),
        };
        let diffs = differences(
            self.formula,
            self.h,
            &plans,
            params,
            saved,
            objective,
            known_f0,
            false,
        )?;
        let inv_s = 1.0 / f64::from(self.n_samples);
        fill(grad, 0.0)?;
        match &self.momentum {
            Some(m) => {
                for (v, d) in m.directions.iter().zip(&diffs.derivatives) {
                    axpy(grad, (d * inv_s) as f32, v)?;
                }
            }
            None => {
                let terms: Vec<(u32, f32)> = samples
                    .iter()
                    .zip(&diffs.derivatives)
                    .map(|(s, d)| (*s, (d * inv_s) as f32))
                    .collect();
                accumulate(grad, self.distribution, self.seed, self.step, &terms)?;
            }
        }
        Ok(diffs.estimate)
    }

    /// Folds the draw `dirs` into the stored directions unless already done.
    fn draw_momentum(&mut self, params: &Params, dirs: &[Direction]) -> Result<()> {
        let fits = self.momentum.as_ref().is_some_and(|m| {
            m.directions.len() == dirs.len()
                && m.directions
                    .iter()
                    .all(|v| v.gpu().same(params.gpu()) && v.same_shape(params))
        });
        if !fits {
            self.momentum = None;
            let directions = (0..dirs.len())
                .map(|_| params.zeros_like())
                .collect::<Result<Vec<_>>>()?;
            self.momentum = Some(Momentum {
                directions,
                drawn: None,
            });
        }
        let m = self.momentum.as_mut().expect("momentum buffers exist");
        let key = (dirs[0].step, dirs[0].sample);
        if m.drawn == Some(key) {
            return Ok(());
        }
        let first = m.drawn.is_none();
        for (v, d) in m.directions.iter_mut().zip(dirs) {
            let keep = if first {
                fill(v, 0.0)?;
                1.0
            } else {
                scale(v, self.beta)?;
                1.0 - self.beta
            };
            accumulate(v, d.distribution, d.seed, d.step, &[(d.sample, keep)])?;
        }
        m.drawn = Some(key);
        Ok(())
    }

    fn bytes(&self) -> u64 {
        let saved = self.saved.as_ref().map_or(0, Params::owned_bytes);
        let momentum = self
            .momentum
            .as_ref()
            .map_or(0, |m| m.directions.iter().map(Params::owned_bytes).sum());
        saved + momentum
    }
}

impl GradApproximator for RandomizedFdm {
    /// Advances the step counter (new directions) and resets the call counter.
    fn pre_step(&mut self) {
        self.undo = Some((self.step, self.calls));
        self.step = self.step.wrapping_add(1);
        self.calls = 0;
    }

    /// Back to the step and call counters before the last `pre_step`. The stored directions of
    /// `beta > 0` keep the draws already folded in: with `pre_generate = true` the retried step
    /// finds its draw folded and does not fold it again (as if the failed step had not run);
    /// with `pre_generate = false` the draws of the failed step's calls stay in.
    fn abort_step(&mut self) {
        if let Some((step, calls)) = self.undo.take() {
            self.step = step;
            self.calls = calls;
        }
    }

    approximate_via_run!();

    /// The saved copy (`exact_restore`) and the stored directions (`beta > 0`), once allocated.
    fn state_bytes(&self) -> u64 {
        self.bytes()
    }

    fn restores_exactly(&self) -> bool {
        self.exact_restore
    }
}

/// A [`RandomizedFdm`] with other defaults, with the same builder methods.
/// The presets' setters: each forwards to [`RandomizedFdm`]'s setter of the same name.
macro_rules! delegate_builders {
    ($($name:ident: $ty:ty),* $(,)?) => {
        $(
            #[doc = concat!("See [`RandomizedFdm::", stringify!($name), "`].")]
            #[must_use]
            pub fn $name(self, $name: $ty) -> Self {
                Self(self.0.$name($name))
            }
        )*
    };
}

macro_rules! preset {
    ($(#[$doc:meta])* $name:ident, $new_doc:literal, $init:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name(RandomizedFdm);

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl $name {
            #[doc = $new_doc]
            #[must_use]
            pub fn new() -> Self {
                Self($init)
            }

            delegate_builders!(
                h: f32,
                n_samples: u32,
                formula: Formula,
                distribution: Distribution,
                pre_generate: bool,
                seed: u64,
                beta: f32,
                exact_restore: bool,
                target: Target,
            );

            /// The seed in use.
            #[must_use]
            pub fn current_seed(&self) -> u64 {
                self.0.current_seed()
            }

            /// The step counter.
            #[must_use]
            pub fn current_step(&self) -> u32 {
                self.0.current_step()
            }

            /// The directions the next `approximate` call will draw.
            #[must_use]
            pub fn next_directions(&self) -> Vec<Direction> {
                self.0.next_directions()
            }

            /// The underlying [`RandomizedFdm`].
            #[must_use]
            pub fn into_inner(self) -> RandomizedFdm {
                self.0
            }
        }

        impl From<$name> for RandomizedFdm {
            fn from(p: $name) -> Self {
                p.0
            }
        }

        impl GradApproximator for $name {
            fn pre_step(&mut self) {
                self.0.pre_step();
            }

            fn abort_step(&mut self) {
                self.0.abort_step();
            }

            fn approximate(
                &mut self,
                gpu: &Gpu,
                params: &mut Params,
                objective: &mut dyn Objective,
                grad: &mut Params,
            ) -> Result<Estimate> {
                self.0.approximate(gpu, params, objective, grad)
            }

            fn approximate_with_loss(
                &mut self,
                gpu: &Gpu,
                params: &mut Params,
                objective: &mut dyn Objective,
                grad: &mut Params,
                loss: f32,
            ) -> Result<Estimate> {
                self.0.approximate_with_loss(gpu, params, objective, grad, loss)
            }

            fn state_bytes(&self) -> u64 {
                self.0.state_bytes()
            }

            fn current_target(&self) -> Target {
                self.0.current_target()
            }

            fn restores_exactly(&self) -> bool {
                self.0.restores_exactly()
            }
        }
    };
}

preset!(
    /// Simultaneous perturbation stochastic approximation: [`RandomizedFdm`] with its defaults
    /// (Central formula, Rademacher directions, h = 1e-3, one sample):
    /// g = (1/S) Σ_s (f(x + h u_s) − f(x − h u_s))/(2h) · u_s, 2S evaluations per call.
    ///
    /// Reference: J. C. Spall, "Multivariate stochastic approximation using a simultaneous
    /// perturbation gradient approximation", IEEE TAC 37 (1992); Y. Chen, "Theoretical study and
    /// comparison of SPSA and RDSA algorithms", arXiv:2107.12771 (2021).
    ///
    /// # Errors
    /// As [`RandomizedFdm`]: bad settings or shapes → [`Error::InvalidArgument`], a NaN loss →
    /// [`Error::NonFiniteLoss`], the objective's errors; the parameters are restored first.
    ///
    /// # Example
    /// ```no_run
    /// use zograd::approx::{GradApproximator, Spsa};
    /// use zograd::Params;
    /// # fn main() -> zograd::Result<()> {
    /// let gpu = zograd::Gpu::new()?;
    /// let mut x = Params::from_slices(&gpu, &[&[0.5f32; 64][..]])?;
    /// let mut g = x.zeros_like()?;
    /// let mut loss = |p: &Params| -> zograd::Result<f32> { Ok(p.to_vec()?.iter().map(|v| v * v).sum()) };
    /// let mut spsa = Spsa::new().n_samples(4).seed(3);
    /// spsa.pre_step();
    /// let e = spsa.approximate(&gpu, &mut x, &mut loss, &mut g)?;
    /// assert_eq!((e.evaluations, e.loss), (8, None));
    /// # Ok(()) }
    /// ```
    Spsa,
    "torchzero's SPSA defaults: h = 1e-3, one sample, Central, Rademacher, random seed.",
    RandomizedFdm::new()
);

preset!(
    /// Random-direction stochastic approximation: [`RandomizedFdm`] with Gaussian directions
    /// (Central formula, h = 1e-3, one sample): g = (1/S) Σ_s D_s u_s with u_s ~ N(0, I),
    /// 2S evaluations per call.
    ///
    /// Reference: Y. Chen, "Theoretical study and comparison of SPSA and RDSA algorithms",
    /// arXiv:2107.12771 (2021).
    ///
    /// # Errors
    /// As [`RandomizedFdm`].
    ///
    /// # Example
    /// ```no_run
    /// use zograd::approx::{GradApproximator, Rdsa};
    /// use zograd::Params;
    /// # fn main() -> zograd::Result<()> {
    /// let gpu = zograd::Gpu::new()?;
    /// let mut x = Params::from_slices(&gpu, &[&[0.5f32; 64][..]])?;
    /// let mut g = x.zeros_like()?;
    /// let mut loss = |p: &Params| -> zograd::Result<f32> { Ok(p.to_vec()?.iter().map(|v| v * v).sum()) };
    /// let e = Rdsa::new().seed(3).approximate(&gpu, &mut x, &mut loss, &mut g)?;
    /// assert_eq!(e.evaluations, 2);
    /// # Ok(()) }
    /// ```
    Rdsa,
    "torchzero's RDSA defaults: h = 1e-3, one sample, Central, Gaussian, random seed.",
    RandomizedFdm::new().distribution(Distribution::Gaussian)
);

preset!(
    /// Gaussian smoothing: [`RandomizedFdm`] with many Gaussian samples, the Forward formula and a
    /// larger step (h = 1e-2, 100 samples):
    /// g = (1/S) Σ_s (f(x + h u_s) − f(x))/h · u_s, the gradient of the smoothed
    /// f_h(x) = E\[f(x + h u)\] (up to O(h)); S + 1 evaluations per call.
    ///
    /// Reference: Y. Nesterov, V. Spokoiny, "Random gradient-free minimization of convex
    /// functions", Found. Comput. Math. 17 (2017).
    ///
    /// # Errors
    /// As [`RandomizedFdm`].
    ///
    /// # Example
    /// ```no_run
    /// use zograd::approx::{GaussianSmoothing, GradApproximator};
    /// use zograd::Params;
    /// # fn main() -> zograd::Result<()> {
    /// let gpu = zograd::Gpu::new()?;
    /// let mut x = Params::from_slices(&gpu, &[&[0.5f32; 64][..]])?;
    /// let mut g = x.zeros_like()?;
    /// let mut loss = |p: &Params| -> zograd::Result<f32> { Ok(p.to_vec()?.iter().map(|v| v * v).sum()) };
    /// let e = GaussianSmoothing::new().seed(3).approximate(&gpu, &mut x, &mut loss, &mut g)?;
    /// assert_eq!(e.evaluations, 101);
    /// # Ok(()) }
    /// ```
    GaussianSmoothing,
    "torchzero's Gaussian smoothing defaults: h = 1e-2, 100 samples, Forward, Gaussian, random seed.",
    RandomizedFdm::new()
        .h(1e-2)
        .n_samples(100)
        .formula(Formula::Forward)
        .distribution(Distribution::Gaussian)
);
