// SPDX-License-Identifier: MIT OR Apache-2.0
//! The sparse-direction mask on the CPU: the reference twin of `zograd_keep4` in
//! `shaders/philox.wgsl`.

use super::philox::philox4x32_10;

/// The threshold that keeps every element (density 1).
pub const DENSE_THRESHOLD: u32 = 65_536;

/// Whether the sparse mask of density `threshold / 65536` keeps element `index` of the direction
/// (seed, step, sample): its 16-bit lane — half `index % 2` of word `(index % 8) / 2` of the
/// Philox block `b = index / 8` of the counter `[b lo, b hi | 2³¹, sample, step]` under the key
/// `[seed lo, seed hi]` — is below `threshold`. The direction's own blocks are `index / 4` or
/// `index / 128`, below 2⁶², so bit 63 of the block index keeps the mask's counters apart from
/// every direction counter: the mask is another Philox output than the value it multiplies.
/// `threshold` ≥ 65536 keeps every element.
///
/// ```
/// use zograd::rng::kept;
/// let n = 100_000u64;
/// let count = (0..n).filter(|&i| kept(7, 1, 0, i, 16_384)).count() as f64;
/// assert!((count / n as f64 - 0.25).abs() < 0.01);
/// ```
#[must_use]
pub fn kept(seed: u64, step: u32, sample: u32, index: u64, threshold: u32) -> bool {
    if threshold >= DENSE_THRESHOLD {
        return true;
    }
    let b = index / 8;
    let out = philox4x32_10(
        [b as u32, ((b >> 32) as u32) | 0x8000_0000, sample, step],
        [seed as u32, (seed >> 32) as u32],
    );
    let word = out[((index % 8) / 2) as usize];
    let lane = (word >> (16 * (index % 2))) & 0xFFFF;
    lane < threshold
}
