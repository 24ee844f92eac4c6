// SPDX-License-Identifier: MIT OR Apache-2.0
//! CPU reference twins of the GPU kernels in [`crate::kernels`], with the same order of
//! operations: the tests compare the two (bit-exact for Rademacher, to float tolerance for the
//! transcendental distributions). Slow; for tests and for checking a user's own kernels.

use crate::kernels::{Direction, Mask};
use crate::rng::{kept, perturbation, sphere_norm, sphere_norm_over};
use crate::Distribution;

/// The factor a [`Distribution::Sphere`] direction of `n` elements multiplies its Gaussian by,
/// folded into `scale` in f64 and rounded once, as the GPU path does.
fn folded_scale(dist: Distribution, seed: u64, step: u32, sample: u32, scale: f32, n: u64) -> f32 {
    if dist == Distribution::Sphere {
        (f64::from(scale) * (n as f64).sqrt() / sphere_norm(seed, step, sample, n)) as f32
    } else {
        scale
    }
}

/// Twin of [`crate::kernels::perturb`]: `x[j] += scale · z(dir, offset + j)`, where `x` holds
/// the elements with global indices `offset..offset + x.len()` of an `n`-element parameter set
/// (`n` matters only for [`Distribution::Sphere`]).
pub fn perturb(x: &mut [f32], offset: u64, dir: &Direction, scale: f32, n: u64) {
    let s = folded_scale(dir.distribution, dir.seed, dir.step, dir.sample, scale, n);
    for (j, v) in x.iter_mut().enumerate() {
        let z = perturbation(
            dir.distribution,
            dir.seed,
            dir.step,
            dir.sample,
            offset + j as u64,
        );
        *v += s * z;
    }
}

/// Twin of [`crate::kernels::accumulate`]: `g[j] += Σ_t coeff_t · z(sample_t, offset + j)`, the
/// sum taken over the terms in order from 0 and added to `g[j]` once.
pub fn accumulate(
    g: &mut [f32],
    offset: u64,
    dist: Distribution,
    seed: u64,
    step: u32,
    terms: &[(u32, f32)],
    n: u64,
) {
    scale_accumulate(g, 1.0, offset, dist, seed, step, terms, n);
}

/// Twin of [`crate::kernels::scale_accumulate`]: `x[j] = a · x[j] + Σ_t coeff_t · z(sample_t,
/// offset + j)`.
#[allow(
    clippy::too_many_arguments,
    reason = "mirrors the kernel's arguments plus the slice's place"
)]
pub fn scale_accumulate(
    g: &mut [f32],
    a: f32,
    offset: u64,
    dist: Distribution,
    seed: u64,
    step: u32,
    terms: &[(u32, f32)],
    n: u64,
) {
    let coeffs: Vec<f32> = terms
        .iter()
        .map(|&(s, c)| folded_scale(dist, seed, step, s, c, n))
        .collect();
    for (j, v) in g.iter_mut().enumerate() {
        let mut acc = 0.0f32;
        for (&(sample, _), &c) in terms.iter().zip(&coeffs) {
            acc += c * perturbation(dist, seed, step, sample, offset + j as u64);
        }
        *v = a * *v + acc;
    }
}

/// Twin of [`crate::kernels::axpy`]: `y += a · x`.
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (v, u) in y.iter_mut().zip(x) {
        *v += a * u;
    }
}

/// Twin of [`crate::kernels::lerp`]: `y += w · (x − y)`.
pub fn lerp(y: &mut [f32], w: f32, x: &[f32]) {
    for (v, u) in y.iter_mut().zip(x) {
        *v += w * (u - *v);
    }
}

/// Twin of [`crate::kernels::project`]: `x ← min(max(x, lo), hi)`.
pub fn project(x: &mut [f32], lo: &[f32], hi: &[f32]) {
    for ((v, l), h) in x.iter_mut().zip(lo).zip(hi) {
        *v = v.max(*l).min(*h);
    }
}

/// Twin of [`crate::kernels::scale`]: `x *= a`.
pub fn scale(x: &mut [f32], a: f32) {
    for v in x {
        *v *= a;
    }
}

/// Twin of [`crate::kernels::sign`].
pub fn sign(u: &mut [f32]) {
    for v in u {
        if *v != 0.0 {
            *v = v.signum();
        }
    }
}

/// Twin of [`crate::kernels::heavy_ball`]: `v = m·v + u; u = v`.
pub fn heavy_ball(u: &mut [f32], velocity: &mut [f32], momentum: f32) {
    for (a, v) in u.iter_mut().zip(velocity) {
        *v = momentum * *v + *a;
        *a = *v;
    }
}

/// Twin of [`crate::kernels::adam`] (bias corrections computed in f64 and rounded, as there).
pub fn adam(
    u: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    (beta1, beta2, eps): (f32, f32, f32),
    t: u64,
) {
    let c1 = (1.0 / (1.0 - f64::from(beta1).powf(t as f64))) as f32;
    let c2 = (1.0 / (1.0 - f64::from(beta2).powf(t as f64))) as f32;
    for ((a, mi), vi) in u.iter_mut().zip(m).zip(v) {
        *mi = beta1 * *mi + (1.0 - beta1) * *a;
        *vi = beta2 * *vi + (1.0 - beta2) * *a * *a;
        *a = (*mi * c1) / ((*vi * c2).sqrt() + eps);
    }
}

/// Twin of [`crate::kernels::dot`], in f64.
#[must_use]
pub fn dot(x: &[f32], y: &[f32]) -> f64 {
    x.iter()
        .zip(y)
        .map(|(a, b)| f64::from(*a) * f64::from(*b))
        .sum()
}

/// The coefficient of a masked direction: `scale` times the Sphere factor √n_free/‖z‖ over the
/// unfrozen elements and 1/√p, rounded to f32 once (as [`crate::kernels::perturb_masked`]).
fn masked_scale(dir: &Direction, scale: f32, n: u64, mask: &Mask) -> f32 {
    let mut s = f64::from(scale) * mask.scale();
    if dir.distribution == Distribution::Sphere {
        let norm = sphere_norm_over(dir.seed, dir.step, dir.sample, &mask.free_ranges(n));
        s *= (mask.free_len(n) as f64).sqrt() / norm;
    }
    s as f32
}

/// Twin of [`crate::kernels::perturb_masked`] on the slice of global elements `offset ..`:
/// frozen elements untouched, dropped ones `+= −0.0`, kept ones `+= s · z` (`n`: the number
/// of parameters). A magnitude mask is applied from the host copy of its bits
/// ([`Mask::with_host_bits`]).
pub fn perturb_masked(
    x: &mut [f32],
    offset: u64,
    dir: &Direction,
    scale: f32,
    n: u64,
    mask: &Mask,
) {
    let s = masked_scale(dir, scale, n, mask);
    for (j, v) in x.iter_mut().enumerate() {
        let i = offset + j as u64;
        if mask.is_frozen(i) {
            continue;
        }
        if mask.moves(dir.seed, dir.step, dir.sample, i) {
            *v += s * perturbation(dir.distribution, dir.seed, dir.step, dir.sample, i);
        } else {
            *v += -0.0;
        }
    }
}

/// Twin of [`crate::kernels::scale_accumulate_masked`] on the slice of global elements
/// `offset ..` (`n`: the number of parameters): frozen elements untouched; the others
/// `a · x + Σ_t (kept ? c_t·z_t : −0.0)`, the sum started from −0.0 when the mask is sparse,
/// and replaced by −0.0 where the magnitude mask (its host copy, [`Mask::with_host_bits`])
/// drops the element.
#[allow(
    clippy::too_many_arguments,
    reason = "mirrors the kernel's arguments plus the slice's place"
)]
pub fn scale_accumulate_masked(
    g: &mut [f32],
    a: f32,
    offset: u64,
    dist: Distribution,
    seed: u64,
    step: u32,
    terms: &[(u32, f32)],
    n: u64,
    mask: &Mask,
) {
    let coeffs: Vec<f32> = terms
        .iter()
        .map(|&(sample, c)| {
            let dir = Direction {
                distribution: dist,
                seed,
                step,
                sample,
            };
            masked_scale(&dir, c, n, mask)
        })
        .collect();
    // The sparse and magnitude-masked kernels start their sums from -0.0.
    let masked = mask.is_sparse() || mask.magnitude_thresholds().is_some();
    let zero = if masked { -0.0f32 } else { 0.0 };
    for (j, v) in g.iter_mut().enumerate() {
        let i = offset + j as u64;
        if mask.is_frozen(i) {
            continue;
        }
        let mut acc = zero;
        for (&(sample, _), &c) in terms.iter().zip(&coeffs) {
            if kept(seed, step, sample, i, mask.threshold()) {
                acc += c * perturbation(dist, seed, step, sample, i);
            } else {
                acc += -0.0;
            }
        }
        if mask.magnitude_drops(i) {
            acc = -0.0;
        }
        *v = a * *v + acc;
    }
}
