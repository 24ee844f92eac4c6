// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`ForwardGradient`]: random directional derivatives along normalised directions.

use std::fmt;
use std::str::FromStr;

use super::probe::{Along, Sample};
use super::sampling::{evaluate, Call, Kind, Sampler};
use super::{check_value, entropy_seed, Estimate, Formula};
use crate::kernels::{accumulate, accumulate_masked, fill, norm, Direction, Mask};
use crate::params::ensure_like;
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
    /// The objective's own [`Objective::jvp`](crate::Objective::jvp) (e.g. a forward-mode shader): one call per
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
/// - [`Jvp::User`]: D = [`Objective::jvp`](crate::Objective::jvp) along u.
///
/// ‖u‖ is √n exactly for Rademacher and Sphere, one GPU reduction per sample for Gaussian
/// (the cached [`sphere_norm`](crate::kernels::sphere_norm)), and for Uniform one reduction over
/// a scratch buffer holding u (n floats, counted in
/// [`state_bytes`](super::GradApproximator::state_bytes)).
///
/// Defaults (torchzero's): n_samples = 1, distribution = Gaussian, jvp = Central, h = 1e-3,
/// pre_generate = true, seed = random, target = Closure. Directions are those of
/// [`RandomizedFdm`](super::RandomizedFdm) (sample s, or c·S + s for the c-th call of a step
/// with `pre_generate = false`). Evaluations per call: Central 2S, Forward S + 1, User S JVP
/// calls (torchzero 0.4.4's closure target evaluates f(x) once more after every
/// central-difference estimate; zograd only when a later module needs it, deliberately).
///
/// Reference: A. G. Baydin, B. A. Pearlmutter, D. Syme, F. Wood, P. Torr, "Gradients without
/// backpropagation", arXiv:2202.08587 (2022).
///
/// # Errors
/// `approximate` returns [`Error::InvalidArgument`] for h ≤ 0 or non-finite (Central and
/// Forward), `n_samples = 0` or `grad` of another shape or device; [`Error::NonFiniteLoss`]
/// for a NaN or infinite loss or JVP (unless [`allow_non_finite`](Sampler::allow_non_finite)); [`Error::Unsupported`] for [`Jvp::User`] with an objective
/// that does not implement [`Objective::jvp`](crate::Objective::jvp); the objective's errors. The parameters are
/// restored first.
///
/// # Example
/// ```
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
pub type ForwardGradient = Sampler<ForwardKind>;

/// What a [`ForwardGradient`] adds to the [`Sampler`] core: how the directional derivative is
/// obtained, and the scratch buffer of Uniform directions' norms.
#[derive(Debug, Default)]
pub struct ForwardKind {
    jvp: Jvp,
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
        Sampler::with(
            ForwardKind::default(),
            Distribution::Gaussian,
            entropy_seed(),
        )
    }

    /// How the directional derivative is computed.
    #[must_use]
    pub fn jvp(mut self, jvp: Jvp) -> Self {
        self.kind.jvp = jvp;
        // The formula the finite-difference JVPs evaluate (unused by Jvp::User).
        self.set.formula = match jvp {
            Jvp::Forward => Formula::Forward,
            Jvp::Central | Jvp::User => Formula::Central,
        };
        self
    }
}

impl ForwardKind {
    /// ‖u_s‖ over all n elements for each direction.
    fn norms(
        &mut self,
        gpu: &Gpu,
        params: &Params,
        dirs: &[Direction],
        mask: &Mask,
    ) -> Result<Vec<f64>> {
        let n = params.len();
        if !mask.is_all() {
            // A masked direction's norm depends on its keep bits: measured, as the Uniform one.
            let scratch = ensure_like(&mut self.scratch, params)?;
            return dirs
                .iter()
                .map(|d| {
                    fill(scratch, 0.0)?;
                    let (dist, seed, step) = (d.distribution, d.seed, d.step);
                    accumulate_masked(scratch, dist, seed, step, &[(d.sample, 1.0)], mask)?;
                    norm(scratch)
                })
                .collect();
        }
        match dirs.first().map(|d| d.distribution) {
            Some(Distribution::Gaussian) => {
                let samples: Vec<u32> = dirs.iter().map(|d| d.sample).collect();
                gpu.sphere_norms(dirs[0].seed, dirs[0].step, &samples, n)
            }
            Some(Distribution::Uniform) => {
                let scratch = ensure_like(&mut self.scratch, params)?;
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
}

impl Kind for ForwardKind {
    const NAME: &'static str = "ForwardGradient";

    /// The JVP scheme (the scratch buffer is not state: it is rewritten at each use).
    fn config(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("jvp".into(), format!("{:?}", self.jvp).into());
        m
    }

    fn run(s: &mut Sampler<Self>, mut call: Call<'_>, grad: &mut Params) -> Result<Estimate> {
        let user = s.kind.jvp == Jvp::User;
        if user && call.params.has_scales() {
            return Err(crate::Error::invalid(
                "jvp: Jvp::User with parameters that have scales (Params::set_scales): a user \
                 JVP gives ∇f·z, not the ∇f·(s⊙z) the scaled units need; use a finite-difference \
                 Jvp or clear the scales",
            ));
        }
        if user && (!s.mask_for(call.params)?.is_all() || s.set.magnitude.is_some()) {
            return Err(crate::Error::invalid(
                "jvp: Jvp::User with a direction mask (freeze, density): a user JVP gives ∇f·z along \
                 the unmasked direction; use a finite-difference Jvp",
            ));
        }
        let dirs = s.begin(&mut call, Some(grad), !user)?;
        let (estimate, derivatives) = if user {
            let mut d = Vec::with_capacity(dirs.len());
            for dir in &dirs {
                let v = call.objective.scoped_jvp(call.params, dir)?;
                d.push(f64::from(check_value(v, s.set.allow_non_finite, || {
                    format!("the objective's jvp along sample {}", dir.sample)
                })?));
            }
            let estimate = Estimate {
                loss: call.known_f0,
                loss_approx: call.known_f0,
                evaluations: s.set.n_samples,
            };
            (estimate, d)
        } else {
            let norms = s.kind.norms(call.gpu, call.params, &dirs, &s.mask)?;
            let h = f64::from(s.set.h);
            let plans: Vec<Sample<'_>> = dirs
                .iter()
                .zip(&norms)
                .map(|(d, nu)| Sample {
                    along: Along::Philox(*d, &s.mask),
                    unit: (h / nu) as f32,
                    post: *nu,
                    draw: *d,
                })
                .collect();
            let diffs = evaluate(&s.set, &mut s.saved, &plans, &mut call, false)?;
            (diffs.estimate, diffs.derivatives)
        };
        s.write(grad, &s.terms(&dirs, &derivatives))?;
        Ok(estimate)
    }

    /// The Uniform-norm scratch buffer, once allocated.
    fn state_bytes(&self) -> u64 {
        self.scratch.as_ref().map_or(0, Params::owned_bytes)
    }
}
