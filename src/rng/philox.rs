// SPDX-License-Identifier: MIT OR Apache-2.0
//! Philox4x32-10 on the CPU: the reference twin of `shaders/philox.wgsl`.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

#[inline(always)]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let p = u64::from(a) * u64::from(b);
    ((p >> 32) as u32, p as u32)
}

/// The Philox4x32-10 counter-based generator of Random123 (Salmon et al., SC'11).
///
/// Ten rounds of the Philox bijection of `ctr` under `key`, with multipliers 0xD2511F53 and
/// 0xCD9E8D57 and Weyl key increments 0x9E3779B9 and 0xBB67AE85. Reproduces Random123's
/// known-answer vectors, and `zograd_philox` in [`crate::wgsl::PHILOX`] bit for bit.
///
/// ```
/// use zograd::rng::philox4x32_10;
/// assert_eq!(
///     philox4x32_10([0; 4], [0; 2]),
///     [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
/// );
/// ```
#[must_use]
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut c = ctr;
    let mut k = key;
    for round in 0..10 {
        if round > 0 {
            k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
        }
        let (hi0, lo0) = mulhilo(M0, c[0]);
        let (hi1, lo1) = mulhilo(M1, c[2]);
        c = [hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0];
    }
    c
}

/// The Philox block `block` of the stream (seed, step, sample): the counter is
/// `[block lo, block hi, sample, step]` and the key `[seed lo, seed hi]`.
#[must_use]
pub fn block(seed: u64, step: u32, sample: u32, block: u64) -> [u32; 4] {
    philox4x32_10(
        [block as u32, (block >> 32) as u32, sample, step],
        [seed as u32, (seed >> 32) as u32],
    )
}
