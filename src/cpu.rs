// SPDX-License-Identifier: MIT OR Apache-2.0
//! CPU reference twins of the GPU kernels in [`crate::kernels`], with the same order of
//! operations: the tests compare the two (bit-exact for Rademacher, to float tolerance for the
//! transcendental distributions). Slow; for tests and for checking a user's own kernels.

use crate::kernels::Direction;
use crate::rng::{perturbation, sphere_norm};
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
    let coeffs: Vec<f32> = terms
        .iter()
        .map(|&(s, c)| folded_scale(dist, seed, step, s, c, n))
        .collect();
    for (j, v) in g.iter_mut().enumerate() {
        let mut acc = 0.0f32;
        for (&(sample, _), &c) in terms.iter().zip(&coeffs) {
            acc += c * perturbation(dist, seed, step, sample, offset + j as u64);
        }
        *v += acc;
    }
}

/// Twin of [`crate::kernels::axpy`]: `y += a · x`.
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (v, u) in y.iter_mut().zip(x) {
        *v += a * u;
    }
}

/// Twin of [`crate::kernels::scale`]: `x *= a`.
pub fn scale(x: &mut [f32], a: f32) {
    for v in x {
        *v *= a;
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
