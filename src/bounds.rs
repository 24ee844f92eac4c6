// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`Bounds`]: box bounds lo ≤ x ≤ hi on the parameters, attached with [`Params::set_bounds`],
//! and what the estimators do with them.

use crate::cpu;
use crate::kernels::{Direction, Mask};
use crate::rng::perturbation;
use crate::{Distribution, Error, Params, Result};

/// Box bounds `lo ≤ x ≤ hi` on parameters, in x's own (physical) units, attached with
/// [`Params::set_bounds`]. A bound may be ±∞ (that side unbounded) but not NaN, and lo ≤ hi
/// (lo = hi fixes the element).
///
/// What uses them: the projection module [`Project`](crate::optim::Project) (x ← clamp(x, lo,
/// hi) on the GPU after every update), [`Fdm`](crate::approx::Fdm) (never evaluates outside the
/// box: one-sided formulas at the bounds) and the random estimators (every evaluated point stays
/// in the box: a shrunk step, or projected points; see [`Params::set_bounds`]).
///
/// # Example
/// ```
/// use zograd::{Bounds, Params};
/// # fn main() -> zograd::Result<()> {
/// let gpu = zograd::Gpu::new()?;
/// let mut x = Params::from_slices(&gpu, &[&[0.5f32, 2.0][..], &[-1.0f32][..]])?;
/// // x[0], x[1] in [0, 1]; x[2] ≤ 0.
/// x.set_bounds(Bounds::PerBuffer(vec![(0.0, 1.0), (f32::NEG_INFINITY, 0.0)]))?;
/// zograd::kernels::project(&mut x)?;
/// assert_eq!(x.to_vec()?, vec![0.5, 1.0, -1.0]);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum Bounds {
    /// The same `(lo, hi)` for every element.
    All(f32, f32),
    /// One `(lo, hi)` per buffer (range) of the parameters, in order.
    PerBuffer(Vec<(f32, f32)>),
    /// One bound per element, in global order.
    PerElement {
        /// The lower bounds.
        lo: Vec<f32>,
        /// The upper bounds.
        hi: Vec<f32>,
    },
}

impl Bounds {
    /// `lo ≤ x ≤ hi` for every element ([`Bounds::All`]).
    #[must_use]
    pub fn scalar(lo: f32, hi: f32) -> Self {
        Self::All(lo, hi)
    }

    /// Per-element bounds from slices ([`Bounds::PerElement`]).
    #[must_use]
    pub fn per_element(lo: &[f32], hi: &[f32]) -> Self {
        Self::PerElement {
            lo: lo.to_vec(),
            hi: hi.to_vec(),
        }
    }

    /// Per-element bounds read back from GPU buffers (e.g. the user's own buffers adopted with
    /// [`Params::from_buffers`]): one download of each; they are copied, so later changes of
    /// `lo` and `hi` do not reach bounds already attached.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `lo` and `hi` differ in shape or cannot be read back
    /// (adopted buffers without `COPY_SRC`); device errors.
    pub fn from_params(lo: &Params, hi: &Params) -> Result<Self> {
        lo.check_compatible(hi, "hi")?;
        Ok(Self::PerElement {
            lo: lo.to_vec()?,
            hi: hi.to_vec()?,
        })
    }

    /// The bounds of every element of parameters with buffer lengths `lens` (n elements in
    /// all), checked.
    pub(crate) fn expand(&self, lens: &[u64], n: u64) -> Result<(Vec<f32>, Vec<f32>)> {
        let (lo, hi): (Vec<f32>, Vec<f32>) = match self {
            Self::All(lo, hi) => (vec![*lo; n as usize], vec![*hi; n as usize]),
            Self::PerBuffer(v) => {
                if v.len() != lens.len() {
                    return Err(Error::invalid(format!(
                        "bounds: {} per-buffer pairs for {} buffers",
                        v.len(),
                        lens.len()
                    )));
                }
                let lo = v
                    .iter()
                    .zip(lens)
                    .flat_map(|(b, l)| std::iter::repeat_n(b.0, *l as usize))
                    .collect();
                let hi = v
                    .iter()
                    .zip(lens)
                    .flat_map(|(b, l)| std::iter::repeat_n(b.1, *l as usize))
                    .collect();
                (lo, hi)
            }
            Self::PerElement { lo, hi } => {
                for (name, v) in [("lo", lo), ("hi", hi)] {
                    if v.len() as u64 != n {
                        return Err(Error::invalid(format!(
                            "bounds: {} values in {name} for {n} elements",
                            v.len()
                        )));
                    }
                }
                (lo.clone(), hi.clone())
            }
        };
        for (i, (l, h)) in lo.iter().zip(&hi).enumerate() {
            if l.is_nan() || h.is_nan() {
                return Err(Error::invalid(format!(
                    "bounds: element {i} has a NaN bound (lo = {l}, hi = {h})"
                )));
            }
            if l > h {
                return Err(Error::invalid(format!(
                    "bounds: element {i} has lo = {l} > hi = {h}"
                )));
            }
        }
        Ok((lo, hi))
    }
}

/// Bounds attached to parameters: on the GPU (shaped like them, for the projection kernel) and
/// on the host (for the estimators' choice of points).
#[derive(Debug)]
pub(crate) struct Attached {
    pub lo: Params,
    pub hi: Params,
    pub host_lo: Vec<f32>,
    pub host_hi: Vec<f32>,
}

/// Fails unless every element of `x` lies in its bounds.
pub(crate) fn check_inside(x: &[f32], lo: &[f32], hi: &[f32]) -> Result<()> {
    match (0..x.len()).find(|&i| !(x[i] >= lo[i] && x[i] <= hi[i])) {
        Some(i) => Err(Error::invalid(format!(
            "params: element {i} = {} lies outside its bounds [{}, {}] (project it first, e.g. \
             with kernels::project)",
            x[i], lo[i], hi[i]
        ))),
        None => Ok(()),
    }
}

/// Below this fraction of the asked step a random estimator's sample is not shrunk further: its
/// points are projected onto the box instead (see [`Params::set_bounds`]).
pub(crate) const SHRINK_FLOOR: f64 = 0.1;

/// How a random estimator keeps its points in the box for one call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Fit {
    /// Sample s moves by `ratio[s]·unit` instead of `unit` (ratios ≤ 1; all 1: nothing to do).
    Shrink(Vec<f64>),
    /// A sample would need a step below [`SHRINK_FLOOR`]·h: every point is projected onto the box
    /// (x ← clamp(x₀ + k·unit·u)) and x restored by copy.
    Project,
}

/// The largest fraction r ≤ 1 of each sample's step `unit` with every point
/// x + k·r·unit·sᵢ·uᵢ (k in `offsets`) inside the box, and the resulting [`Fit`] (`None`: the
/// parameters have no bounds). `samples` gives each sample's direction (its elements regenerated
/// on the host, or downloaded) and step. x is checked to lie in the box first.
pub(crate) fn fit(
    params: &Params,
    offsets: &[i32],
    samples: &[(Along, f32)],
) -> Result<Option<Fit>> {
    let Some(b) = params.attached_bounds() else {
        return Ok(None);
    };
    let x = params.to_vec()?;
    check_inside(&x, &b.host_lo, &b.host_hi)?;
    let kmax = f64::from(offsets.iter().copied().max().unwrap_or(0).max(0));
    let kmin = f64::from(-offsets.iter().copied().min().unwrap_or(0).min(0));
    // Moves per sample in place (each rounds x once): a safety margin of that many ulp.
    let moves = offsets.len() as f64 + 1.0;
    let scales = params.scales();
    // Room above and below element i in y-units, less the in-place rounding margin.
    let room = |i: usize| -> (f64, f64) {
        let s = scales.map_or(1.0, |s| f64::from(s[i]));
        if s == 0.0 {
            // A frozen element never moves.
            return (f64::INFINITY, f64::INFINITY);
        }
        let xi = f64::from(x[i]);
        let side = |bound: f32, gap: f64| {
            let bound = f64::from(bound);
            if bound.is_infinite() {
                return f64::INFINITY;
            }
            let ulp = f64::from(f32::EPSILON) * xi.abs().max(bound.abs());
            let room = (gap - moves * ulp - f64::from(f32::MIN_POSITIVE)).max(0.0);
            if s == 1.0 {
                room
            } else {
                room / s
            }
        };
        (
            side(b.host_hi[i], f64::from(b.host_hi[i]) - xi),
            side(b.host_lo[i], xi - f64::from(b.host_lo[i])),
        )
    };
    // Bounded directions (Rademacher |uᵢ| = 1, Uniform |uᵢ| ≤ √3): the largest step t·|uᵢ| ≤ t·c
    // that fits whichever way each element moves, without regenerating the direction (exact for
    // Rademacher up to the sign, at most √3 too short for Uniform). One pass over x per call.
    let mut symmetric: Option<f64> = None;
    let mut symmetric_room = || {
        *symmetric.get_or_insert_with(|| {
            // Either side may be the one a point k·t·c away reaches, k ≤ max(kmax, kmin).
            let least = (0..x.len())
                .map(|i| {
                    let (up, down) = room(i);
                    up.min(down)
                })
                .fold(f64::INFINITY, f64::min);
            least / kmax.max(kmin)
        })
    };
    let mut ratios = Vec::with_capacity(samples.len());
    for (along, unit) in samples {
        let unit = f64::from(*unit);
        // A sparse mask scales the kept elements by 1/√p; frozen and dropped elements do not
        // move, so the bound over all elements stays a bound (a conservative one).
        let bound = match along {
            Along::Philox(d, mask) => match d.distribution {
                Distribution::Rademacher => Some(mask.scale()),
                Distribution::Uniform => Some(3f64.sqrt() * mask.scale()),
                _ => None,
            },
            Along::Stored(_) => None,
        };
        if let Some(c) = bound {
            let r = symmetric_room() / (c * unit);
            ratios.push(if r >= 1.0 {
                1.0
            } else {
                r * (1.0 - 4.0 * f64::from(f32::EPSILON))
            });
            continue;
        }
        let u = along.elements(params)?;
        let mut r = 1.0f64;
        for (i, z) in u.iter().enumerate() {
            let z = f64::from(*z);
            if z == 0.0 {
                continue;
            }
            let (up, down) = room(i);
            // Largest step along +z is kmax·t·|z|, along −z kmin·t·|z| (t = r·unit).
            let (plus, minus) = if z > 0.0 { (up, down) } else { (down, up) };
            let a = z.abs() * unit;
            if kmax > 0.0 {
                r = r.min(plus / (kmax * a));
            }
            if kmin > 0.0 {
                r = r.min(minus / (kmin * a));
            }
        }
        // A shrunk step a hair shorter still: the products k·r·unit·|uᵢ| round too.
        ratios.push(if r >= 1.0 {
            1.0
        } else {
            r * (1.0 - 4.0 * f64::from(f32::EPSILON))
        });
    }
    if ratios.iter().any(|r| *r < SHRINK_FLOOR) {
        return Ok(Some(Fit::Project));
    }
    Ok(Some(Fit::Shrink(ratios)))
}

/// A sample's direction as [`fit`] reads it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Along<'a> {
    /// Regenerated from Philox on the host (Sphere: with its norm) under the sample's mask
    /// (frozen buffers, sparse directions, a magnitude mask).
    Philox(Direction, &'a Mask),
    /// A stored direction, downloaded.
    Stored(&'a Params),
}

impl Along<'_> {
    /// The direction's elements in global order, as the perturb kernels move x by them.
    fn elements(self, params: &Params) -> Result<Vec<f32>> {
        match self {
            Self::Stored(v) => v.to_vec(),
            Self::Philox(d, mask) if !mask.is_all() => {
                // The masked twin of the perturb kernels: x = 0 moved by 1·u.
                let n = params.len();
                let mask = mask.with_host_bits()?;
                let mut u = vec![0.0f32; n as usize];
                cpu::perturb_masked(&mut u, 0, &d, 1.0, n, &mask);
                if !matches!(
                    d.distribution,
                    Distribution::Rademacher | Distribution::Uniform
                ) {
                    // The GPU's Gaussians agree to ~1e-6 relative: take a hair more.
                    for v in &mut u {
                        *v = (f64::from(*v) * (1.0 + 1e-5)) as f32;
                    }
                }
                Ok(u)
            }
            Self::Philox(d, _) => {
                let n = params.len();
                let factor = if d.distribution == Distribution::Sphere {
                    let norm = params.gpu().sphere_norms(d.seed, d.step, &[d.sample], n)?[0];
                    (n as f64).sqrt() / norm
                } else {
                    1.0
                };
                // Rademacher and Uniform are bit-exact with the GPU; its Gaussians agree to
                // ~1e-6 relative: take a hair more.
                let slack = match d.distribution {
                    Distribution::Rademacher | Distribution::Uniform => 1.0,
                    _ => 1.0 + 1e-5,
                };
                Ok((0..n)
                    .map(|i| {
                        let z = perturbation(d.distribution, d.seed, d.step, d.sample, i);
                        (f64::from(z) * factor * slack) as f32
                    })
                    .collect())
            }
        }
    }
}
