// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`ForwardGradient`]: random directional derivatives along normalised directions.

use std::fmt;
use std::str::FromStr;

use super::probe::{differences, Along, Sample};
use super::{
    check_buffers, check_h, check_loss, check_samples, entropy_seed, Estimate, Formula,
    GradApproximator, Objective, Target,
};
use crate::kernels::{accumulate, copy, fill, norm, Direction};
use crate::{Distribution, Error, Gpu, Params, Result};

/// How [`ForwardGradient`] obtains the directional derivative ∇f(x)·u.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Jvp {
    /// (f(x + h t) − f(x − h t))/(2h)·‖u‖ with t = u/‖u‖: two evaluations per sample.
    #[default]
    Central,
    /// (f(x + h t) − f(x))/h·‖u‖: one evaluation per sample plus f(x) once.
    Forward,
    /// The objective's own [`Objective::jvp`] (e.g. a forward-mode shader): one call per
    /// sample, no evaluation of f. Replaces torchzero's `autograd`.
    User,
}

impl Jvp {
    /// The name [`FromStr`] gives back: `central`, `forward` or `user`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Central => "central",
            Self::Forward => "forward",
            Self::User => "user",
        }
    }
}

impl fmt::Display for Jvp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Jvp {
    type Err = Error;

    /// Accepts `central` / `fd_central`, `forward` / `fd_forward`, and `user` / `autograd`
    /// (torchzero's autodiff JVP; in zograd the objective supplies it).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "central" | "fd_central" => Ok(Self::Central),
            "forward" | "fd_forward" => Ok(Self::Forward),
            "user" | "autograd" => Ok(Self::User),
            _ => Err(Error::InvalidArgument(format!(
                "jvp: unknown method {s:?} (expected central, fd_central, forward, fd_forward, user or autograd)"
            ))),
        }
    }
}

/// The forward gradient (Baydin et al. 2022): g = (1/S) Σ_s (∇f(x)·u_s) u_s, an unbiased
/// estimate of ∇f for directions with E\[u uᵀ\] = I, with the directional derivative from
///
/// - [`Jvp::Central`]: D = (f(x + h t) − f(x − h t))/(2h)·‖u‖, t = u/‖u‖ (the finite-difference
///   step is h along the *unit* direction; ‖u‖ is the global norm over all buffers);
/// - [`Jvp::Forward`]: D = (f(x + h t) − f(x))/h·‖u‖;
/// - [`Jvp::User`]: D = [`Objective::jvp`] along u.
///
/// ‖u‖ is √n exactly for Rademacher and Sphere, one GPU reduction per sample for Gaussian
/// (the cached [`sphere_norm`](crate::kernels::sphere_norm)), and for Uniform one reduction over
/// a scratch buffer holding u (n floats, counted in
/// [`state_bytes`](GradApproximator::state_bytes)).
///
/// Defaults (torchzero's): n_samples = 1, distribution = Gaussian, jvp = Central, h = 1e-3,
/// pre_generate = true, seed = random, target = Closure. Directions are those of
/// [`RandomizedFdm`](super::RandomizedFdm) (sample s, or c·S + s for the c-th call of a step
/// with `pre_generate = false`). Evaluations per call: Central 2S, Forward S + 1, User S JVP
/// calls.
///
/// Reference: A. G. Baydin, B. A. Pearlmutter, D. Syme, F. Wood, P. Torr, "Gradients without
/// backpropagation", arXiv:2202.08587 (2022).
///
/// # Errors
/// `approximate` returns [`Error::InvalidArgument`] for h ≤ 0 or non-finite (Central and
/// Forward), `n_samples = 0` or `grad` of another shape or device; [`Error::NonFiniteLoss`]
/// for a NaN or infinite loss or JVP; [`Error::Unsupported`] for [`Jvp::User`] with an objective
/// that does not implement [`Objective::jvp`]; the objective's errors. The parameters are
/// restored first.
///
/// # Example
/// ```no_run
/// use zograd::approx::{ForwardGradient, GradApproximator, Jvp};
/// use zograd::Params;
/// # fn main() -> zograd::Result<()> {
/// let gpu = zograd::Gpu::new()?;
/// let mut x = Params::from_slices(&gpu, &[&[1.0f32; 256][..]])?;
/// let mut g = x.zeros_like()?;
/// let mut loss = |p: &Params| -> zograd::Result<f32> { Ok(p.to_vec()?.iter().map(|v| v * v).sum()) };
/// let mut fg = ForwardGradient::new().jvp(Jvp::Forward).n_samples(4).seed(1);
/// fg.pre_step();
/// let e = fg.approximate(&gpu, &mut x, &mut loss, &mut g)?;
/// assert_eq!(e.evaluations, 5);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ForwardGradient {
    h: f32,
    n_samples: u32,
    distribution: Distribution,
    jvp: Jvp,
    pre_generate: bool,
    seed: u64,
    exact_restore: bool,
    target: Target,
    step: u32,
    calls: u32,
    /// (step, calls) before the last `pre_step`, for `abort_step`.
    undo: Option<(u32, u32)>,
    saved: Option<Params>,
    scratch: Option<Params>,
}

impl Default for ForwardGradient {
    fn default() -> Self {
        Self::new()
    }
}

impl ForwardGradient {
    /// torchzero's defaults: one Gaussian sample, central-difference JVP with h = 1e-3,
    /// pre-generated directions, a seed from OS entropy.
    #[must_use]
    pub fn new() -> Self {
        Self {
            h: 1e-3,
            n_samples: 1,
            distribution: Distribution::Gaussian,
            jvp: Jvp::Central,
            pre_generate: true,
            seed: entropy_seed(),
            exact_restore: false,
            target: Target::Closure,
            step: 0,
            calls: 0,
            undo: None,
            saved: None,
            scratch: None,
        }
    }

    builders!(h: f32, n_samples: u32, distribution: Distribution, pre_generate: bool, seed: u64, exact_restore: bool, target: Target);

    /// How the directional derivative is computed.
    #[must_use]
    pub fn jvp(mut self, jvp: Jvp) -> Self {
        self.jvp = jvp;
        self
    }

    /// The directions u_s the next `approximate` call will use.
    #[must_use]
    pub fn next_directions(&self) -> Vec<Direction> {
        let base = if self.pre_generate {
            0
        } else {
            self.calls.wrapping_mul(self.n_samples)
        };
        (0..self.n_samples)
            .map(|s| Direction {
                distribution: self.distribution,
                seed: self.seed,
                step: self.step,
                sample: base.wrapping_add(s),
            })
            .collect()
    }

    /// ‖u_s‖ over all n elements for each direction.
    fn norms(&mut self, gpu: &Gpu, params: &Params, dirs: &[Direction]) -> Result<Vec<f64>> {
        let n = params.len();
        match self.distribution {
            Distribution::Gaussian => {
                let samples: Vec<u32> = dirs.iter().map(|d| d.sample).collect();
                gpu.sphere_norms(self.seed, self.step, &samples, n)
            }
            Distribution::Uniform => {
                let fits = self
                    .scratch
                    .as_ref()
                    .is_some_and(|s| s.gpu().same(params.gpu()) && s.same_shape(params));
                if !fits {
                    self.scratch = None;
                    self.scratch = Some(params.zeros_like()?);
                }
                let scratch = self.scratch.as_mut().expect("scratch exists");
                dirs.iter()
                    .map(|d| {
                        fill(scratch, 0.0)?;
                        accumulate(scratch, d.distribution, d.seed, d.step, &[(d.sample, 1.0)])?;
                        norm(scratch)
                    })
                    .collect()
            }
            // Rademacher: every |u_i| = 1; Sphere: rescaled to √n by construction.
            _ => Ok(vec![(n as f64).sqrt(); dirs.len()]),
        }
    }

    fn run(
        &mut self,
        gpu: &Gpu,
        params: &mut Params,
        objective: &mut dyn Objective,
        grad: &mut Params,
        known_f0: Option<f32>,
    ) -> Result<Estimate> {
        if self.jvp != Jvp::User {
            check_h(self.h)?;
        }
        check_samples(self.n_samples)?;
        check_buffers(gpu, params, grad)?;
        let dirs = self.next_directions();
        self.calls = self.calls.wrapping_add(1);
        if self.distribution == Distribution::Sphere {
            let samples: Vec<u32> = dirs.iter().map(|d| d.sample).collect();
            gpu.sphere_norms(self.seed, self.step, &samples, params.len())?;
        }
        let (estimate, derivatives) = match self.jvp {
            Jvp::User => {
                let mut d = Vec::with_capacity(dirs.len());
                for dir in &dirs {
                    let v = objective.jvp(params, dir)?;
                    d.push(f64::from(check_loss(v, || {
                        format!("the objective's jvp along sample {}", dir.sample)
                    })?));
                }
                let estimate = Estimate {
                    loss: known_f0,
                    loss_approx: known_f0,
                    evaluations: self.n_samples,
                };
                (estimate, d)
            }
            Jvp::Central | Jvp::Forward => {
                let formula = if self.jvp == Jvp::Central {
                    Formula::Central
                } else {
                    Formula::Forward
                };
                let norms = self.norms(gpu, params, &dirs)?;
                let plans: Vec<Sample<'_>> = dirs
                    .iter()
                    .zip(&norms)
                    .map(|(d, nu)| Sample {
                        along: Along::Philox(*d),
                        unit: (f64::from(self.h) / nu) as f32,
                        post: *nu,
                    })
                    .collect();
                let saved = if self.exact_restore {
                    let s = crate::params::ensure_like(&mut self.saved, params)?;
                    copy(s, params)?;
                    Some(&*s)
                } else {
                    self.saved = None;
                    None
                };
                let diffs = differences(
                    formula, self.h, &plans, params, saved, objective, known_f0, false,
                )?;
                (diffs.estimate, diffs.derivatives)
            }
        };
        let inv_s = 1.0 / f64::from(self.n_samples);
        let terms: Vec<(u32, f32)> = dirs
            .iter()
            .zip(&derivatives)
            .map(|(dir, d)| (dir.sample, (d * inv_s) as f32))
            .collect();
        fill(grad, 0.0)?;
        accumulate(grad, self.distribution, self.seed, self.step, &terms)?;
        Ok(estimate)
    }
}

impl GradApproximator for ForwardGradient {
    /// Advances the step counter (new directions) and resets the call counter.
    fn pre_step(&mut self) {
        self.undo = Some((self.step, self.calls));
        self.step = self.step.wrapping_add(1);
        self.calls = 0;
    }

    /// Back to the step and call counters before the last `pre_step`.
    fn abort_step(&mut self) {
        if let Some((step, calls)) = self.undo.take() {
            self.step = step;
            self.calls = calls;
        }
    }

    approximate_via_run!();

    /// The saved copy (`exact_restore`) and the Uniform-norm scratch buffer, once allocated.
    fn state_bytes(&self) -> u64 {
        self.saved.as_ref().map_or(0, Params::owned_bytes)
            + self.scratch.as_ref().map_or(0, Params::owned_bytes)
    }

    fn restores_exactly(&self) -> bool {
        self.exact_restore
    }
}
