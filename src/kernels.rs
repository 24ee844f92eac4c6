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
use crate::gpu::launch::{split64, Launch};
use crate::{Distribution, Error, Params, Result};

pub use crate::mask::Mask;

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
/// sample; with frozen buffers in `mask`, n and ‖z‖ run over the unfrozen elements only.
fn sphere_factors(
    x: &Params,
    seed: u64,
    step: u32,
    samples: &[u32],
    mask: &Mask,
) -> Result<Vec<f64>> {
    let n = x.len();
    let free = mask.free_len(n);
    let norms = x
        .gpu()
        .sphere_norms_over(seed, step, samples, &mask.free_ranges(n))?;
    Ok(norms
        .iter()
        .map(|norm| (free as f64).sqrt() / norm)
        .collect())
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
    perturb_masked(x, dir, scale, &Mask::all())
}

/// `x[i] += scale · u(dir, mask, i)`: [`perturb`] along the masked direction of [`Mask`] — the
/// chunks of frozen buffers are skipped (not written), the elements the sparse mask drops get
/// −0.0 added (bit-identical but for NaN), the kept ones `scale · z / √p`. Bit-exact with
/// [`crate::cpu::perturb_masked`] for Rademacher.
///
/// # Errors
/// [`Error::InvalidArgument`] for a non-finite `scale` or a mask built for other buffer lengths;
/// device errors.
pub fn perturb_masked(x: &mut Params, dir: &Direction, scale: f32, mask: &Mask) -> Result<()> {
    check_finite("scale", scale)?;
    mask.check(x)?;
    let mut s = f64::from(scale) * mask.scale();
    if dir.distribution == Distribution::Sphere {
        s *= sphere_factors(x, dir.seed, dir.step, &[dir.sample], mask)?[0];
    }
    launch_perturb(x, dir, s as f32, mask)
}

/// Completes a direction kernel's launch for `mask`: the sparse threshold, and `len = 0` (no
/// dispatch) for a chunk of a frozen buffer (a launch never spans two buffers).
fn mask_launch(l: &mut Launch, mask: &Mask) {
    l.mask[0] = mask.threshold();
    let gbase = u64::from(l.gbase[0]) | (u64::from(l.gbase[1]) << 32);
    if mask.is_frozen(gbase) {
        l.len = 0;
    }
}

/// `x += scale · u(dir, mask)` with `scale` already including the Sphere and sparse factors:
/// the perturb kernel of the distribution (the Rademacher one, or the one of the four-value
/// distributions), masked when the mask is sparse.
fn launch_perturb(x: &mut Params, dir: &Direction, scale: f32, mask: &Mask) -> Result<()> {
    if let Some(m) = mask.magnitude_buffers() {
        let kernel = match dir.distribution {
            Distribution::Rademacher => Kernel::PerturbRademacherBits,
            _ => Kernel::PerturbQuadBits,
        };
        return x.launch_whole(kernel, m.bits(), |l| {
            l.seed = split64(dir.seed);
            l.step = dir.step;
            l.sample = dir.sample;
            l.dist = dir.distribution.code();
            l.coef[0] = scale;
            mask_launch(l, mask);
        });
    }
    let (kernel, scaled) = match (dir.distribution, mask.is_sparse()) {
        (Distribution::Rademacher, false) => {
            (Kernel::PerturbRademacher, Kernel::PerturbRademacherScaled)
        }
        (Distribution::Rademacher, true) => (
            Kernel::PerturbRademacherMasked,
            Kernel::PerturbRademacherScaledMasked,
        ),
        (_, false) => (Kernel::PerturbQuad, Kernel::PerturbQuadScaled),
        (_, true) => (Kernel::PerturbQuadMasked, Kernel::PerturbQuadScaledMasked),
    };
    x.launch_move(kernel, scaled, |l| {
        l.seed = split64(dir.seed);
        l.step = dir.step;
        l.sample = dir.sample;
        l.dist = dir.distribution.code();
        l.coef[0] = scale;
        mask_launch(l, mask);
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
    scale_accumulate_masked(x, a, distribution, seed, step, terms, &Mask::all())
}

/// [`accumulate`] along the masked directions of `mask` ([`Mask`]): frozen buffers are not
/// written, the elements a sample's sparse mask drops get −0.0 from it.
///
/// # Errors
/// As [`scale_accumulate_masked`].
pub fn accumulate_masked(
    g: &mut Params,
    distribution: Distribution,
    seed: u64,
    step: u32,
    terms: &[(u32, f32)],
    mask: &Mask,
) -> Result<()> {
    if terms.is_empty() {
        return Ok(());
    }
    scale_accumulate_masked(g, 1.0, distribution, seed, step, terms, mask)
}

/// `x[i] = a · x[i] + Σ_t coeff_t · u(seed, step, sample_t, mask, i)`: [`scale_accumulate`]
/// along the masked directions of `mask` ([`Mask`]). The chunks of frozen buffers are skipped
/// (neither scaled nor written); an element every term drops is `a · x[i] + (−0.0)`. Bit-exact
/// with [`crate::cpu::scale_accumulate_masked`] for Rademacher.
///
/// # Errors
/// [`Error::InvalidArgument`] for a non-finite `a` or coefficient, or a mask built for other
/// buffer lengths; device errors.
#[allow(
    clippy::too_many_arguments,
    reason = "scale_accumulate's arguments and the mask"
)]
pub fn scale_accumulate_masked(
    x: &mut Params,
    a: f32,
    distribution: Distribution,
    seed: u64,
    step: u32,
    terms: &[(u32, f32)],
    mask: &Mask,
) -> Result<()> {
    check_finite("a", a)?;
    for (k, (_, c)) in terms.iter().enumerate() {
        check_finite(&format!("terms[{k}].coeff"), *c)?;
    }
    mask.check(x)?;
    let folded: Vec<(u32, f32)>;
    let sphere = distribution == Distribution::Sphere && !terms.is_empty();
    let terms = if sphere || mask.is_sparse() {
        let factors = if sphere {
            let samples: Vec<u32> = terms.iter().map(|t| t.0).collect();
            sphere_factors(x, seed, step, &samples, mask)?
        } else {
            vec![1.0; terms.len()]
        };
        let sparse = mask.scale();
        folded = terms
            .iter()
            .zip(factors)
            .map(|((s, c), f)| (*s, (f64::from(*c) * f * sparse) as f32))
            .collect();
        &folded[..]
    } else {
        terms
    };
    if let ([(sample, coeff)], 1.0) = (terms, a) {
        // One term and no scaling is a perturbation: the perturb kernels compute the same sum
        // (x + c·z, bit for bit) with less work per element (one Philox block per 128
        // Rademacher elements instead of per 64, no term loop). The fused MeZO step lands here.
        // (Sphere and sparse factors are already folded into the coefficient.)
        let dir = Direction {
            distribution,
            seed,
            step,
            sample: *sample,
        };
        return launch_perturb(x, &dir, *coeff, mask);
    }
    let fill = |l: &mut Launch| {
        l.seed = split64(seed);
        l.step = step;
        l.dist = distribution.code();
        l.coef[0] = a;
        mask_launch(l, mask);
    };
    if let Some(m) = mask.magnitude_buffers() {
        let kernel = match (distribution, a == 1.0) {
            (Distribution::Rademacher, true) => Kernel::AccumulateRademacherBits,
            (Distribution::Rademacher, false) => Kernel::ScaleAccumulateRademacherBits,
            (_, true) => Kernel::AccumulateQuadBits,
            (_, false) => Kernel::ScaleAccumulateQuadBits,
        };
        return x.launch_terms_bits(kernel, m.bits(), terms, fill);
    }
    let masked = mask.is_sparse();
    let (kernel, scaled) = match (distribution, a == 1.0, masked) {
        (Distribution::Rademacher, true, false) => (
            Kernel::AccumulateRademacher,
            Kernel::AccumulateRademacherScaled,
        ),
        (Distribution::Rademacher, false, false) => (
            Kernel::ScaleAccumulateRademacher,
            Kernel::AccumulateRademacherScaled,
        ),
        (Distribution::Rademacher, true, true) => (
            Kernel::AccumulateRademacherMasked,
            Kernel::AccumulateRademacherScaledMasked,
        ),
        (Distribution::Rademacher, false, true) => (
            Kernel::ScaleAccumulateRademacherMasked,
            Kernel::AccumulateRademacherScaledMasked,
        ),
        (_, true, false) => (Kernel::AccumulateQuad, Kernel::AccumulateQuadScaled),
        (_, false, false) => (Kernel::ScaleAccumulateQuad, Kernel::AccumulateQuadScaled),
        (_, true, true) => (
            Kernel::AccumulateQuadMasked,
            Kernel::AccumulateQuadScaledMasked,
        ),
        (_, false, true) => (
            Kernel::ScaleAccumulateQuadMasked,
            Kernel::AccumulateQuadScaledMasked,
        ),
    };
    x.launch_terms(kernel, scaled, terms, fill)
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

/// `x ← clamp(x, lo, hi)` elementwise with the box bounds attached by
/// [`Params::set_bounds`], one GPU pass ([`crate::cpu::project`] is its twin).
///
/// # Errors
/// [`Error::InvalidArgument`] when `x` has no bounds; device errors.
pub fn project(x: &mut Params) -> Result<()> {
    if !x.has_bounds() {
        return Err(Error::invalid(
            "x: has no bounds to project onto (attach them with Params::set_bounds)",
        ));
    }
    x.project_into_bounds()
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
