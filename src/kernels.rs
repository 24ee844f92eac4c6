// SPDX-License-Identifier: MIT OR Apache-2.0
//! The GPU kernels zograd's estimators are built from, public for users who write their own
//! estimators ([`GradApproximator`](crate::approx::GradApproximator)).
//!
//! Each call records and submits its work (together with any launches zograd left pending,
//! [`Gpu::flush`](crate::Gpu::flush)) and returns without waiting for the GPU (except the
//! reductions, which return a number, and the first use of a [`Distribution::Sphere`] direction,
//! which computes its norm), so a call reports its own device errors. The estimators' own moves
//! of x inside a step are recorded and submitted with the next evaluation instead. Every kernel processes every buffer of the [`Params`] in chunks of at
//! most the adapter's storage-binding size. [`crate::cpu`] holds the CPU twin of each.

use crate::gpu::kernel::Kernel;
use crate::gpu::launch::split64;
use crate::{Distribution, Error, Params, Result};

/// A random direction: element `i` is `z(seed, step, sample, i)` drawn from `distribution`
/// (README, "Random-number contract"), regenerated wherever it is used and never stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Direction {
    /// The distribution of the elements.
    pub distribution: Distribution,
    /// The stream's seed (the Philox key).
    pub seed: u64,
    /// The optimiser step (counter word 3).
    pub step: u32,
    /// The sample within the step (counter word 2).
    pub sample: u32,
}

fn check_finite(name: &str, v: f32) -> Result<()> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(Error::invalid(format!("{name}: must be finite, got {v}")))
    }
}

/// The factor √n/‖z‖ that turns Gaussian directions into [`Distribution::Sphere`] ones, per
/// sample.
fn sphere_factors(x: &Params, seed: u64, step: u32, samples: &[u32]) -> Result<Vec<f64>> {
    let n = x.len();
    let norms = x.gpu().sphere_norms(seed, step, samples, n)?;
    Ok(norms.iter().map(|norm| (n as f64).sqrt() / norm).collect())
}

/// `x[i] += scale · z(dir, i)` in place over every buffer.
///
/// One Philox block serves 128 Rademacher elements (a workgroup shares it through workgroup
/// memory) or 4 Gaussian/uniform elements. Rademacher is bit-exact with
/// [`crate::cpu::perturb`]. With scales ([`Params::set_scales`]) element i moves by
/// `scale · sᵢ · z(dir, i)`.
///
/// # Errors
/// [`Error::InvalidArgument`] for a non-finite `scale`; device errors.
///
/// # Example
/// ```no_run
/// use zograd::kernels::{perturb, Direction};
/// # fn main() -> zograd::Result<()> {
/// let gpu = zograd::Gpu::new()?;
/// let mut x = zograd::Params::from_slices(&gpu, &[&[0.0f32; 1000][..]])?;
/// let dir = Direction { distribution: zograd::Distribution::Rademacher, seed: 1, step: 0, sample: 0 };
/// perturb(&mut x, &dir, 1e-3)?;   // x + h z
/// perturb(&mut x, &dir, -1e-3)?;  // back to x (up to f32 rounding)
/// # Ok(()) }
/// ```
pub fn perturb(x: &mut Params, dir: &Direction, scale: f32) -> Result<()> {
    check_finite("scale", scale)?;
    let scale = if dir.distribution == Distribution::Sphere {
        (f64::from(scale) * sphere_factors(x, dir.seed, dir.step, &[dir.sample])?[0]) as f32
    } else {
        scale
    };
    launch_perturb(x, dir, scale)
}

/// `x += scale · z(dir)` with `scale` already including any Sphere factor: the perturb kernel of
/// the distribution (the Rademacher one, or the one of the four-value distributions).
fn launch_perturb(x: &mut Params, dir: &Direction, scale: f32) -> Result<()> {
    let (kernel, scaled) = match dir.distribution {
        Distribution::Rademacher => (Kernel::PerturbRademacher, Kernel::PerturbRademacherScaled),
        _ => (Kernel::PerturbQuad, Kernel::PerturbQuadScaled),
    };
    x.launch_move(kernel, scaled, |l| {
        l.seed = split64(dir.seed);
        l.step = dir.step;
        l.sample = dir.sample;
        l.dist = dir.distribution.code();
        l.coef[0] = scale;
    })
}

/// `g[i] += Σ_t coeff_t · z(seed, step, sample_t, i)` for all `terms = [(sample_t, coeff_t)]` in
/// ONE pass over `g`: the sum runs over the terms in order, starting from 0, and is added to `g`
/// once. An empty `terms` does nothing. With scales ([`Params::set_scales`]) on `g`, the sum is
/// multiplied by sᵢ.
///
/// # Errors
/// [`Error::InvalidArgument`] for a non-finite coefficient; device errors.
pub fn accumulate(
    g: &mut Params,
    distribution: Distribution,
    seed: u64,
    step: u32,
    terms: &[(u32, f32)],
) -> Result<()> {
    if terms.is_empty() {
        return Ok(());
    }
    scale_accumulate(g, 1.0, distribution, seed, step, terms)
}

/// `x[i] = a · x[i] + Σ_t coeff_t · z(seed, step, sample_t, i)` in one pass: [`accumulate`] with
/// the buffer scaled first (a = 1 is exactly [`accumulate`]). The fused MeZO step uses it to
/// restore, decay and update the parameters at once. One term with a = 1 runs the
/// [`perturb`] kernel, which computes the same values with less work. With scales
/// ([`Params::set_scales`]) the sum is multiplied by sᵢ: `x[i] = a · x[i] + sᵢ · Σ_t …`.
///
/// # Errors
/// [`Error::InvalidArgument`] for a non-finite `a` or coefficient; device errors.
pub fn scale_accumulate(
    x: &mut Params,
    a: f32,
    distribution: Distribution,
    seed: u64,
    step: u32,
    terms: &[(u32, f32)],
) -> Result<()> {
    check_finite("a", a)?;
    for (k, (_, c)) in terms.iter().enumerate() {
        check_finite(&format!("terms[{k}].coeff"), *c)?;
    }
    let scaled: Vec<(u32, f32)>;
    let terms = if distribution == Distribution::Sphere && !terms.is_empty() {
        let samples: Vec<u32> = terms.iter().map(|t| t.0).collect();
        let factors = sphere_factors(x, seed, step, &samples)?;
        scaled = terms
            .iter()
            .zip(factors)
            .map(|((s, c), f)| (*s, (f64::from(*c) * f) as f32))
            .collect();
        &scaled[..]
    } else {
        terms
    };
    if let ([(sample, coeff)], 1.0) = (terms, a) {
        // One term and no scaling is a perturbation: the perturb kernels compute the same sum
        // (x + c·z, bit for bit) with less work per element (one Philox block per 128
        // Rademacher elements instead of per 64, no term loop). The fused MeZO step lands here.
        // (Sphere factors are already folded into the coefficient.)
        let dir = Direction {
            distribution,
            seed,
            step,
            sample: *sample,
        };
        return launch_perturb(x, &dir, *coeff);
    }
    let (kernel, scaled) = match distribution {
        Distribution::Rademacher if a == 1.0 => (
            Kernel::AccumulateRademacher,
            Kernel::AccumulateRademacherScaled,
        ),
        Distribution::Rademacher => (
            Kernel::ScaleAccumulateRademacher,
            Kernel::AccumulateRademacherScaled,
        ),
        _ if a == 1.0 => (Kernel::AccumulateQuad, Kernel::AccumulateQuadScaled),
        _ => (Kernel::ScaleAccumulateQuad, Kernel::AccumulateQuadScaled),
    };
    x.launch_terms(kernel, scaled, terms, |l| {
        l.seed = split64(seed);
        l.step = step;
        l.dist = distribution.code();
        l.coef[0] = a;
    })
}

/// `dst = src` (same buffer lengths, same device, distinct `Params`). A kernel, not a buffer copy,
/// so it works on adopted buffers without COPY usages; it is also the bandwidth yardstick the
/// benchmarks compare against.
///
/// # Errors
/// [`Error::InvalidArgument`] when the shapes or devices differ.
pub fn copy(dst: &mut Params, src: &Params) -> Result<()> {
    dst.launch_with(Kernel::Copy, &[src], "src", |_| {})
}

/// `y += a · x` elementwise; with scales on `y` ([`Params::set_scales`]), `y += a · s ⊙ x` (a
/// step of `y`'s parameters by `a · x` in their scaled units).
///
/// # Errors
/// [`Error::InvalidArgument`] when the shapes or devices differ or `a` is not finite.
pub fn axpy(y: &mut Params, a: f32, x: &Params) -> Result<()> {
    check_finite("a", a)?;
    y.launch_move_with(Kernel::Axpy, Kernel::AxpyScaled, x, "x", |l| l.coef[0] = a)
}

/// `y ← y + w·(x − y)` elementwise: one step of a running mean (with w = 1/m, y becomes the
/// mean of m iterates; Polyak–Ruppert averaging, [`Optimizer::average_from`](crate::optim::Optimizer::average_from)).
///
/// # Errors
/// [`Error::InvalidArgument`] when the shapes or devices differ or `w` is not finite.
pub fn lerp(y: &mut Params, w: f32, x: &Params) -> Result<()> {
    check_finite("w", w)?;
    y.launch_with(Kernel::Lerp, &[x], "x", |l| l.coef[0] = w)
}

/// `x *= a` elementwise.
///
/// # Errors
/// [`Error::InvalidArgument`] when `a` is not finite.
pub fn scale(x: &mut Params, a: f32) -> Result<()> {
    check_finite("a", a)?;
    x.launch(Kernel::Scale, |l| l.coef[0] = a)
}

/// `x = value` elementwise (e.g. zeroing a gradient before an estimate).
///
/// # Errors
/// [`Error::InvalidArgument`] when `value` is not finite.
pub fn fill(x: &mut Params, value: f32) -> Result<()> {
    check_finite("value", value)?;
    x.launch(Kernel::Fill, |l| l.coef[0] = value)
}

/// `u = sign(u)` elementwise (0 stays 0), for ZO-SignSGD.
///
/// # Errors
/// Device errors.
pub fn sign(u: &mut Params) -> Result<()> {
    u.launch(Kernel::Sign, |_| {})
}

/// Heavy-ball momentum in one pass: `v = momentum · v + u; u = v`.
///
/// # Errors
/// [`Error::InvalidArgument`] when the shapes or devices differ or `momentum` is not finite.
pub fn heavy_ball(u: &mut Params, velocity: &mut Params, momentum: f32) -> Result<()> {
    check_finite("momentum", momentum)?;
    u.launch_with(Kernel::HeavyBall, &[velocity], "velocity", |l| {
        l.coef[0] = momentum
    })
}

/// Adam's update in one pass, with bias correction for step `t` (1-based):
/// `m = β₁m + (1−β₁)u; v = β₂v + (1−β₂)u²; u = (m/(1−β₁ᵗ)) / (√(v/(1−β₂ᵗ)) + ε)`.
///
/// # Errors
/// [`Error::InvalidArgument`] when the shapes or devices differ, `t` is 0 or a scalar is not
/// finite.
pub fn adam(
    u: &mut Params,
    m: &mut Params,
    v: &mut Params,
    (beta1, beta2, eps): (f32, f32, f32),
    t: u64,
) -> Result<()> {
    check_finite("beta1", beta1)?;
    check_finite("beta2", beta2)?;
    check_finite("eps", eps)?;
    if t == 0 {
        return Err(Error::invalid("t: Adam's step count starts at 1, got 0"));
    }
    let c1 = 1.0 / (1.0 - f64::from(beta1).powf(t as f64));
    let c2 = 1.0 / (1.0 - f64::from(beta2).powf(t as f64));
    u.launch_with(Kernel::Adam, &[m, v], "m/v", |l| {
        l.coef = [beta1, beta2, eps, 0.0];
        l.coef2 = [c1 as f32, c2 as f32, 0.0, 0.0];
    })
}

/// Σ xᵢ·yᵢ over all elements. Waits for the GPU.
///
/// Each GPU thread sums its products in f32 scaled by powers of two (exact), so that neither
/// elements up to f32's largest nor ones near its smallest normal overflow or vanish; the
/// workgroup partial sums are added in f64. `x` and `y` need the same buffer lengths, not the
/// same chunking ([`Params::set_max_chunk_len`]).
///
/// # Errors
/// [`Error::InvalidArgument`] when the shapes or devices differ.
pub fn dot(x: &Params, y: &Params) -> Result<f64> {
    x.reduce(Some(y))
}

/// ‖x‖₂ over all elements, without overflow or underflow in f32 (as [`dot`]). Waits for the
/// GPU.
///
/// # Errors
/// Device errors.
pub fn norm(x: &Params) -> Result<f64> {
    Ok(x.reduce(None)?.sqrt())
}

/// ‖z‖ of the Gaussian direction (seed, step, sample) over `n` elements: the normaliser of
/// [`Distribution::Sphere`], computed by one reduction on the GPU and cached. Waits for the GPU.
///
/// # Errors
/// Device errors.
pub fn sphere_norm(gpu: &crate::Gpu, seed: u64, step: u32, sample: u32, n: u64) -> Result<f64> {
    Ok(gpu.sphere_norms(seed, step, &[sample], n)?[0])
}
