// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`Mask`]: which elements a random direction moves — frozen buffers and sparse directions.

use std::ops::Range;
use std::sync::Arc;

use crate::gpu::kernel::Kernel;
use crate::gpu::magnitude::{MagnitudeBuffers, BINS};
use crate::rng::{kept, DENSE_THRESHOLD};
use crate::{Error, Params, Result};

/// Which elements the random directions of an estimator move: whole buffers can be frozen, and
/// the others perturbed sparsely (Sparse MeZO, Liu et al. 2024), each element with probability
/// p. Built by the estimators from their `freeze` and `density` settings, or by a user for the
/// masked kernels ([`perturb_masked`](crate::kernels::perturb_masked),
/// [`scale_accumulate_masked`](crate::kernels::scale_accumulate_masked)).
///
/// The masked direction of (seed, step, sample) is, for element i,
///
/// u_i = 0 in a frozen buffer, else m_i · z_i / √p,
///
/// with z the direction of the distribution (for [`Distribution::Sphere`](crate::Distribution),
/// normalised to √n_free/‖z‖ over the unfrozen elements only: the direction lives in their
/// subspace) and m_i ∈ {0, 1} a keep bit drawn with probability p from the same Philox stream,
/// regenerated wherever it is needed and never stored ([`kept`]). The scaling keeps the
/// estimators unbiased: for z with E\[zzᵀ\] = I and m independent of z, E\[u_i u_j\] =
/// E\[m_i m_j\]/p · E\[z_i z_j\] = δ_ij on the unfrozen elements (E\[m_i²\] = p, and the
/// off-diagonal terms vanish with E\[z_i z_j\]), so E\[uuᵀ\] = I there and the gradient estimates
/// keep their expectation ∇f on the unfrozen elements; their variance grows by about 1/p.
/// p is rounded to a multiple of 2⁻¹⁶ ([`density`](Mask::density) is the one in use, and the
/// scale is 1/√ of it).
///
/// A magnitude mask (the Sparse MeZO choice, set by the estimators'
/// [`magnitude_mask`](crate::approx::Sampler::magnitude_mask)) further keeps only the elements
/// with |x_i| below a per-buffer threshold τ_k, a quantile of |x| over buffer k computed on the
/// GPU; it is a bit per element held in a GPU buffer (n/32 words), computed from x at the start
/// of a step and kept while x is perturbed. It is deterministic given x, so it is not rescaled:
/// the estimate is then unbiased for the gradient restricted to the masked-in elements.
///
/// The kernels skip the chunks of frozen buffers (no work, nothing written, NaN payloads
/// included). An element the sparse or magnitude mask drops gets −0.0 added, which leaves every
/// value but NaN bit-identical; a gradient is +0.0 there.
#[derive(Clone, Debug)]
pub struct Mask {
    /// Frozen buffer indices, sorted, without repeats.
    frozen: Vec<usize>,
    /// Their global index ranges.
    ranges: Vec<Range<u64>>,
    /// The buffer lengths of the parameters the mask was built for (empty: any).
    lens: Vec<u64>,
    /// Elements are kept when their 16-bit lane is below this (65536: all).
    threshold: u32,
    /// The magnitude mask: its GPU buffers and thresholds, and a host copy of its bits when
    /// [`with_host_bits`](Mask::with_host_bits) made one.
    magnitude: Option<(Arc<Magnitude>, Option<HostBits>)>,
}

/// A host copy of a magnitude mask's bits.
type HostBits = Arc<Vec<u32>>;

/// The GPU side of a magnitude mask: the bits of the current step and the thresholds.
#[derive(Debug)]
pub(crate) struct Magnitude {
    pub(crate) buffers: Arc<MagnitudeBuffers>,
    pub(crate) thresholds: Vec<f32>,
}

impl Default for Mask {
    fn default() -> Self {
        Self::all()
    }
}

impl Mask {
    /// The mask that moves every element of any parameters (the unmasked directions).
    #[must_use]
    pub fn all() -> Self {
        Self {
            frozen: Vec::new(),
            ranges: Vec::new(),
            lens: Vec::new(),
            threshold: DENSE_THRESHOLD,
            magnitude: None,
        }
    }

    /// The mask of `params` with the buffers `freeze` (indices into
    /// [`Params::buffer_lens`], in any order, repeats allowed) frozen and the other elements
    /// kept with probability `density`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a `density` outside (0, 1], a buffer index out of range, or
    /// every buffer frozen.
    pub fn new(params: &Params, freeze: &[usize], density: f32) -> Result<Self> {
        let threshold = threshold_of(density)?;
        let lens = params.buffer_lens();
        if let Some(k) = freeze.iter().find(|&&k| k >= lens.len()) {
            return Err(Error::invalid(format!(
                "freeze: buffer index {k} is out of range (the parameters have {} buffers)",
                lens.len()
            )));
        }
        let mut frozen = freeze.to_vec();
        frozen.sort_unstable();
        frozen.dedup();
        if frozen.len() == lens.len() {
            return Err(Error::invalid(format!(
                "freeze: {freeze:?} freezes every buffer of the parameters ({}): nothing is left \
                 to perturb",
                lens.len()
            )));
        }
        let offsets = params.offsets();
        let ranges = frozen
            .iter()
            .map(|&k| offsets[k]..offsets[k] + lens[k])
            .collect();
        Ok(Self {
            frozen,
            ranges,
            lens: lens.to_vec(),
            threshold,
            magnitude: None,
        })
    }

    /// Whether the mask moves every element (no frozen buffer, density 1, no magnitude mask).
    #[must_use]
    pub fn is_all(&self) -> bool {
        self.frozen.is_empty() && self.threshold >= DENSE_THRESHOLD && self.magnitude.is_none()
    }

    /// The per-buffer thresholds τ_k of the magnitude mask (an element of buffer k moves only if
    /// |x_i| < τ_k), when it has one.
    #[must_use]
    pub fn magnitude_thresholds(&self) -> Option<&[f32]> {
        self.magnitude.as_ref().map(|(m, _)| &m.thresholds[..])
    }

    /// The magnitude mask's bits (bit i % 32 of word i / 32: element i may move), read from the
    /// GPU; `None` without a magnitude mask. Waits for the GPU.
    ///
    /// # Errors
    /// Device errors.
    pub fn magnitude_bits(&self) -> Result<Option<Vec<u32>>> {
        match &self.magnitude {
            Some((m, _)) => Ok(Some(m.buffers.read_bits()?)),
            None => Ok(None),
        }
    }

    /// This mask with a host copy of its magnitude bits (read from the GPU), which
    /// [`moves`](Mask::moves) and the CPU twins ([`crate::cpu::perturb_masked`]) consult;
    /// without a magnitude mask, the mask itself. Waits for the GPU.
    ///
    /// # Errors
    /// Device errors.
    pub fn with_host_bits(&self) -> Result<Self> {
        let mut out = self.clone();
        if let Some((m, host)) = &mut out.magnitude {
            *host = Some(Arc::new(m.buffers.read_bits()?));
        }
        Ok(out)
    }

    /// The mask with the magnitude mask `magnitude`.
    pub(crate) fn with_magnitude(mut self, magnitude: Arc<Magnitude>) -> Self {
        self.magnitude = Some((magnitude, None));
        self
    }

    /// The magnitude mask's GPU buffers.
    pub(crate) fn magnitude_buffers(&self) -> Option<&MagnitudeBuffers> {
        self.magnitude.as_ref().map(|(m, _)| &*m.buffers)
    }

    /// Whether the magnitude mask drops element `index` (false without one, or without a host
    /// copy of its bits).
    pub(crate) fn magnitude_drops(&self, index: u64) -> bool {
        !self.magnitude_keeps(index)
    }

    /// Whether the magnitude mask keeps element `index` (true without one, or without a host
    /// copy of its bits).
    fn magnitude_keeps(&self, index: u64) -> bool {
        match &self.magnitude {
            Some((_, Some(bits))) => bits
                .get((index / 32) as usize)
                .is_some_and(|w| (w >> (index % 32)) & 1 == 1),
            _ => true,
        }
    }

    /// Whether the mask is sparse (density below 1).
    #[must_use]
    pub fn is_sparse(&self) -> bool {
        self.threshold < DENSE_THRESHOLD
    }

    /// The density p in use: the probability that an unfrozen element is perturbed, the
    /// requested one rounded to a multiple of 2⁻¹⁶.
    #[must_use]
    pub fn density(&self) -> f64 {
        f64::from(self.threshold) / f64::from(DENSE_THRESHOLD)
    }

    /// The 16-bit threshold T = 65536·p of [`kept`] and of `zograd_keep4` in
    /// [`crate::wgsl::PHILOX`] (65536: every element).
    #[must_use]
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// The factor 1/√p of the kept elements.
    #[must_use]
    pub fn scale(&self) -> f64 {
        if self.is_sparse() {
            1.0 / self.density().sqrt()
        } else {
            1.0
        }
    }

    /// The frozen buffers' indices, sorted.
    #[must_use]
    pub fn frozen_buffers(&self) -> &[usize] {
        &self.frozen
    }

    /// The global index ranges of the frozen buffers, in order.
    #[must_use]
    pub fn frozen_ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }

    /// Whether global element `index` lies in a frozen buffer.
    #[must_use]
    pub fn is_frozen(&self, index: u64) -> bool {
        self.ranges.iter().any(|r| r.contains(&index))
    }

    /// The global index ranges of the unfrozen elements of `n` parameters, in order.
    #[must_use]
    pub fn free_ranges(&self, n: u64) -> Vec<Range<u64>> {
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        let mut at = 0;
        for r in &self.ranges {
            if r.start > at {
                out.push(at..r.start);
            }
            at = r.end;
        }
        if at < n {
            out.push(at..n);
        }
        out
    }

    /// The number of unfrozen elements of `n` parameters.
    #[must_use]
    pub fn free_len(&self, n: u64) -> u64 {
        n - self.ranges.iter().map(|r| r.end - r.start).sum::<u64>()
    }

    /// Whether the direction (seed, step, sample) moves element `index`: not frozen, kept by
    /// the sparse mask, and by the magnitude mask (whose bits this consults only in a mask made
    /// by [`with_host_bits`](Mask::with_host_bits)).
    #[must_use]
    pub fn moves(&self, seed: u64, step: u32, sample: u32, index: u64) -> bool {
        !self.is_frozen(index)
            && kept(seed, step, sample, index, self.threshold)
            && self.magnitude_keeps(index)
    }

    /// Fails unless the mask fits `x` (built for parameters with the same buffer lengths, or
    /// for any).
    pub(crate) fn check(&self, x: &Params) -> Result<()> {
        if self.magnitude.is_some() && x.has_scales() {
            return Err(Error::invalid(
                "magnitude_mask: not available for parameters with scales (Params::set_scales)",
            ));
        }
        if self.lens.is_empty() || self.lens == x.buffer_lens() {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "mask: built for buffers of lengths {:?}, the parameters have {:?}",
                self.lens,
                x.buffer_lens()
            )))
        }
    }
}

/// The threshold of `density` (checked: in (0, 1]).
pub(crate) fn threshold_of(density: f32) -> Result<u32> {
    if !(density > 0.0 && density <= 1.0) {
        return Err(Error::invalid(format!(
            "density: must be in (0, 1], got {density}"
        )));
    }
    Ok((f64::from(density) * f64::from(DENSE_THRESHOLD))
        .round()
        .clamp(1.0, f64::from(DENSE_THRESHOLD)) as u32)
}

/// The index of the buffer that holds global element `g`.
fn buffer_of(offsets: &[u64], g: u64) -> usize {
    offsets.partition_point(|&o| o <= g).saturating_sub(1)
}

/// The global index a launch starts at.
fn gbase_of(l: &crate::gpu::launch::Launch) -> u64 {
    u64::from(l.gbase[0]) | (u64::from(l.gbase[1]) << 32)
}

/// Per buffer of `x`, the threshold τ below which a fraction `quantile` of its |x| lies: the
/// lower edge of the histogram bin after the one where the count of |x| reaches
/// ⌈quantile·len⌉ (so at least that many elements are below τ, and τ exceeds the exact quantile
/// by at most one bin, 2⁻⁷ relative). One histogram pass on the GPU and one readback of the
/// bins (32768 counts per buffer), no download of x.
pub(crate) fn magnitude_thresholds(
    x: &mut Params,
    buffers: &MagnitudeBuffers,
    quantile: f32,
) -> Result<Vec<f32>> {
    buffers.clear_bins()?;
    let offsets = x.offsets().to_vec();
    x.launch_whole(Kernel::MagnitudeHistogram, buffers.bins(), |l| {
        l.out_offset = (buffer_of(&offsets, gbase_of(l)) as u64 * BINS) as u32;
    })?;
    let counts = buffers.read_bins()?;
    let lens = x.buffer_lens();
    Ok(lens
        .iter()
        .enumerate()
        .map(|(k, &len)| {
            let rank = ((f64::from(quantile) * len as f64).ceil() as u64).clamp(1, len);
            let bins = &counts[k * BINS as usize..(k + 1) * BINS as usize];
            let mut seen = 0u64;
            let b = bins
                .iter()
                .position(|&c| {
                    seen += u64::from(c);
                    seen >= rank
                })
                .unwrap_or(BINS as usize - 1) as u32;
            // The upper edge of bin b; past the largest finite float (inf and NaN bins), +inf.
            if b + 1 >= 0x7F80 {
                f32::INFINITY
            } else {
                f32::from_bits((b + 1) << 16)
            }
        })
        .collect())
}

/// Writes the bits of the magnitude mask: element i of buffer k is set when |x_i| < τ_k.
pub(crate) fn magnitude_bits(
    x: &mut Params,
    buffers: &MagnitudeBuffers,
    thresholds: &[f32],
) -> Result<()> {
    let offsets = x.offsets().to_vec();
    x.launch_whole(Kernel::MagnitudeBits, buffers.bits(), |l| {
        l.coef[0] = thresholds[buffer_of(&offsets, gbase_of(l))];
    })
}
