// SPDX-License-Identifier: MIT OR Apache-2.0
//! The perturbation distributions and their CPU evaluation.

use std::fmt;
use std::str::FromStr;

use super::philox::block;
use crate::Error;

/// 2⁻²⁴, the spacing of the 24-bit uniforms taken from a Philox word.
const TWO_POW_M24: f64 = 1.0 / 16_777_216.0;

/// The distribution of a random direction's elements. Every variant has unit variance per
/// element.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Distribution {
    /// ±1 with equal probability (SPSA, MeZO). One Philox block per 128 elements.
    #[default]
    Rademacher,
    /// Standard normal N(0, 1) by Box–Muller. One Philox block per 4 elements.
    Gaussian,
    /// Uniform on [−√3, √3). One Philox block per 4 elements.
    Uniform,
    /// The Gaussian direction rescaled to norm √n over all n elements (uniform on the sphere of
    /// radius √n). Needs one reduction over the n elements per (seed, step, sample).
    Sphere,
}

impl Distribution {
    /// The code `shaders/philox.wgsl` uses for this distribution (Sphere uses the Gaussian code
    /// and a scale factor).
    #[must_use]
    pub(crate) fn code(self) -> u32 {
        match self {
            Self::Rademacher => 0,
            Self::Gaussian | Self::Sphere => 1,
            Self::Uniform => 2,
        }
    }

    /// torchzero's name of the distribution.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Rademacher => "rademacher",
            Self::Gaussian => "gaussian",
            Self::Uniform => "uniform",
            Self::Sphere => "sphere",
        }
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Distribution {
    type Err = Error;

    /// Accepts torchzero's names: `rademacher`, `gaussian` (also `normal`), `uniform`, `sphere`.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "rademacher" => Ok(Self::Rademacher),
            "gaussian" | "normal" => Ok(Self::Gaussian),
            "uniform" => Ok(Self::Uniform),
            "sphere" => Ok(Self::Sphere),
            _ => Err(Error::InvalidArgument(format!(
                "distribution: unknown name {s:?} (expected rademacher, gaussian, uniform or sphere)"
            ))),
        }
    }
}

/// Element `index` of the direction (seed, step, sample) for `dist`, exactly as the GPU kernels
/// compute it (ARCHITECTURE.md, "The random-number contract").
///
/// Rademacher and Uniform are bit-exact with the GPU. The Gaussian is computed in f64 and rounded
/// once, so it is the accurate value that the GPU's f32 transcendentals approach (to about 1e-6).
///
/// [`Distribution::Sphere`] needs the norm over all n elements: this returns the unscaled Gaussian
/// for it; multiply by `√n / sphere_norm(seed, step, sample, n)`.
///
/// ```
/// use zograd::rng::{perturbation, Distribution};
/// let z = perturbation(Distribution::Rademacher, 7, 0, 0, 12345);
/// assert!(z == 1.0 || z == -1.0);
/// ```
#[must_use]
pub fn perturbation(dist: Distribution, seed: u64, step: u32, sample: u32, index: u64) -> f32 {
    match dist {
        Distribution::Rademacher => {
            let out = block(seed, step, sample, index / 128);
            let word = out[((index % 128) / 32) as usize];
            if (word >> (index % 32)) & 1 == 1 {
                1.0
            } else {
                -1.0
            }
        }
        Distribution::Gaussian | Distribution::Sphere => {
            let out = block(seed, step, sample, index / 4);
            let lane = (index % 4) as usize;
            let pair = lane / 2;
            let u1 = f64::from((out[2 * pair] >> 8) + 1) * TWO_POW_M24;
            let u2 = f64::from(out[2 * pair + 1] >> 8) * TWO_POW_M24;
            let r = (-2.0 * u1.ln()).sqrt();
            let angle = std::f64::consts::TAU * u2;
            let z = if lane.is_multiple_of(2) {
                r * angle.cos()
            } else {
                r * angle.sin()
            };
            z as f32
        }
        Distribution::Uniform => {
            let out = block(seed, step, sample, index / 4);
            let u = (out[(index % 4) as usize] >> 8) as f32 * TWO_POW_M24 as f32;
            1.732_050_8_f32 * (2.0 * u - 1.0)
        }
    }
}

/// ‖z‖ over the `n` elements of the Gaussian direction (seed, step, sample), summed in f64: the
/// normaliser of [`Distribution::Sphere`] (whose elements are `z_i · √n / ‖z‖`).
#[must_use]
pub fn sphere_norm(seed: u64, step: u32, sample: u32, n: u64) -> f64 {
    (0..n)
        .map(|i| f64::from(perturbation(Distribution::Gaussian, seed, step, sample, i)).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// ‖z‖ of the Gaussian direction (seed, step, sample) over the global indices of `ranges` (the
/// unfrozen buffers of a [`crate::kernels::Mask`]), in f64: the twin of the GPU norm a masked
/// [`Distribution::Sphere`] direction is normalised by.
#[must_use]
pub fn sphere_norm_over(seed: u64, step: u32, sample: u32, ranges: &[std::ops::Range<u64>]) -> f64 {
    ranges
        .iter()
        .flat_map(|r| r.clone())
        .map(|i| f64::from(perturbation(Distribution::Gaussian, seed, step, sample, i)).powi(2))
        .sum::<f64>()
        .sqrt()
}
