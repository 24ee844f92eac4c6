// SPDX-License-Identifier: MIT OR Apache-2.0
// zograd — Philox4x32-10 (Salmon et al., SC'11; Random123) and the perturbation distributions.
//
// This file is prepended to every zograd kernel that draws random numbers and is exported as
// `zograd::wgsl::PHILOX`, so a user's shader can regenerate exactly the perturbations zograd uses.
// Core WGSL only: 64-bit quantities travel as vec2<u32>(lo, hi).
//
// The random-number contract (README, "Random-number contract"): for seed s (u64), step t,
// sample k and global element index i (u64), with key = (s lo, s hi):
//   Rademacher: block = i / 128, out = philox((block lo, block hi, k, t), key),
//               z = +1 if bit (i % 32) of out[(i % 128) / 32] is set, else -1.
//   Gaussian:   block = i / 4, lane = i % 4, Box–Muller on out[2*(lane/2)], out[2*(lane/2)+1].
//   Uniform:    block = i / 4, u = (out[i % 4] >> 8) * 2^-24, z = sqrt(3) * (2u - 1).
// Sparse directions (`zograd::kernels::Mask`, density T / 65536): element i is kept when
//   lane = 16-bit half (i % 2) of word ((i % 8) / 2) of philox((b lo, b hi | 2^31, k, t), key),
//   b = i / 8, is below T; a kept element is z / sqrt(T / 65536), a dropped one 0.

const ZOGRAD_PHILOX_M0: u32 = 0xD2511F53u;
const ZOGRAD_PHILOX_M1: u32 = 0xCD9E8D57u;
const ZOGRAD_PHILOX_W0: u32 = 0x9E3779B9u;
const ZOGRAD_PHILOX_W1: u32 = 0xBB67AE85u;

/// Distribution codes shared with the host (`zograd::Distribution`).
const ZOGRAD_RADEMACHER: u32 = 0u;
const ZOGRAD_GAUSSIAN: u32 = 1u;
const ZOGRAD_UNIFORM: u32 = 2u;

/// High 32 bits of the 64-bit product a * b, from 16-bit halves (core WGSL has no u64).
fn zograd_mulhi(a: u32, b: u32) -> u32 {
    let a_lo = a & 0xFFFFu;
    let a_hi = a >> 16u;
    let b_lo = b & 0xFFFFu;
    let b_hi = b >> 16u;
    let lh = a_lo * b_hi;
    let hl = a_hi * b_lo;
    let mid = ((a_lo * b_lo) >> 16u) + (lh & 0xFFFFu) + (hl & 0xFFFFu);
    return a_hi * b_hi + (lh >> 16u) + (hl >> 16u) + (mid >> 16u);
}

/// Philox4x32-10: ten rounds of the Random123 bijection of `ctr` under `key`.
fn zograd_philox(ctr_in: vec4<u32>, key_in: vec2<u32>) -> vec4<u32> {
    var c = ctr_in;
    var k = key_in;
    for (var r = 0u; r < 10u; r = r + 1u) {
        if (r > 0u) {
            k = k + vec2<u32>(ZOGRAD_PHILOX_W0, ZOGRAD_PHILOX_W1);
        }
        let hi0 = zograd_mulhi(ZOGRAD_PHILOX_M0, c.x);
        let lo0 = ZOGRAD_PHILOX_M0 * c.x;
        let hi1 = zograd_mulhi(ZOGRAD_PHILOX_M1, c.z);
        let lo1 = ZOGRAD_PHILOX_M1 * c.z;
        c = vec4<u32>(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    }
    return c;
}

/// 64-bit add of a small u32 to (lo, hi).
fn zograd_add64(a: vec2<u32>, b: u32) -> vec2<u32> {
    let lo = a.x + b;
    return vec2<u32>(lo, a.y + select(0u, 1u, lo < b));
}

/// (lo, hi) >> s for 0 < s < 32.
fn zograd_shr64(a: vec2<u32>, s: u32) -> vec2<u32> {
    return vec2<u32>((a.x >> s) | (a.y << (32u - s)), a.y >> s);
}

/// The Philox output block `block` (a 64-bit block index) for (seed, step, sample).
fn zograd_block(seed: vec2<u32>, step: u32, sample: u32, block: vec2<u32>) -> vec4<u32> {
    return zograd_philox(vec4<u32>(block.x, block.y, sample, step), seed);
}

/// (cos, sin) of 2*pi*m*2^-24 for a 24-bit integer m. The angle is reduced exactly in integers to
/// a quadrant and a remainder in [-pi/4, pi/4), so f32 rounding of the angle stays near 1e-7
/// absolute instead of growing with the angle; the remainder's sine and cosine are polynomials.
fn zograd_cos_sin_turns24(m: u32) -> vec2<f32> {
    let t = m + 0x200000u;
    let q = (t >> 22u) & 3u;
    let theta = f32(i32(t & 0x3FFFFFu) - 0x200000) * 3.7450703e-7; // 2*pi / 2^24
    // |theta| <= pi/4: Taylor polynomials to theta^9 (sin) and theta^10 (cos) are exact to
    // 2e-9 here, cheaper than the built-ins (which reduce the range again) and as accurate on
    // every adapter.
    let t2 = theta * theta;
    let s = theta * (1.0 + t2 * (-1.6666667e-1 + t2 * (8.3333333e-3 + t2 * (-1.9841270e-4 + t2 * 2.7557319e-6))));
    let c = 1.0 + t2 * (-0.5 + t2 * (4.1666668e-2 + t2 * (-1.3888889e-3 + t2 * (2.4801587e-5 - t2 * 2.7557319e-7))));
    switch q {
        case 0u: { return vec2<f32>(c, s); }
        case 1u: { return vec2<f32>(-s, c); }
        case 2u: { return vec2<f32>(-c, -s); }
        default: { return vec2<f32>(s, -c); }
    }
}

/// -2 ln(u1) for u1 = (m + 1) * 2^-24 in (0, 1], accurate to f32 rounding in relative terms.
/// Near u1 = 1 a hardware log loses relative accuracy (it is accurate in absolute terms only),
/// so for v = 1 - u1 < 1/16 (exact in f32) this uses -2 ln(1 - v) = 4 atanh(w), w = v / (2 - v),
/// by its series (w <= 1/31, five terms reach f32 precision).
fn zograd_neg2log(m: u32) -> f32 {
    let k = 0xFFFFFFu - m;
    if (k < 0x100000u) {
        let v = f32(k) * 5.9604644775390625e-8;
        let w = v / (2.0 - v);
        let w2 = w * w;
        return 4.0 * w * (1.0 + w2 * (0.33333334 + w2 * (0.2 + w2 * (0.14285715 + w2 * 0.11111111))));
    }
    return -2.0 * log(f32(m + 1u) * 5.9604644775390625e-8);
}

/// Four unit-variance Gaussians (Box–Muller) from one Philox block:
/// u1 = ((out[2p] >> 8) + 1) * 2^-24 in (0, 1], u2 = (out[2p+1] >> 8) * 2^-24 in [0, 1),
/// r = sqrt(-2 ln u1), lanes (2p, 2p+1) = r * (cos 2*pi*u2, sin 2*pi*u2).
fn zograd_gaussian4(out: vec4<u32>) -> vec4<f32> {
    let ra = sqrt(zograd_neg2log(out.x >> 8u));
    let rb = sqrt(zograd_neg2log(out.z >> 8u));
    let csa = zograd_cos_sin_turns24(out.y >> 8u);
    let csb = zograd_cos_sin_turns24(out.w >> 8u);
    return vec4<f32>(ra * csa, rb * csb);
}

/// Four unit-variance uniforms on [-sqrt(3), sqrt(3)) from one Philox block.
fn zograd_uniform4(out: vec4<u32>) -> vec4<f32> {
    let two_pow_m24 = 5.9604644775390625e-8;
    let u = vec4<f32>(out >> vec4<u32>(8u)) * two_pow_m24;
    return 1.7320508 * (2.0 * u - vec4<f32>(1.0));
}

/// The perturbation z(seed, step, sample, i) of one element, `index` = (lo, hi) of i.
/// Convenient for users' shaders; zograd's own kernels share one Philox block between
/// 128 (Rademacher) or 4 (Gaussian, uniform) elements instead.
fn zograd_z(dist: u32, seed: vec2<u32>, step: u32, sample: u32, index: vec2<u32>) -> f32 {
    if (dist == ZOGRAD_RADEMACHER) {
        let out = zograd_block(seed, step, sample, zograd_shr64(index, 7u));
        let word = out[(index.x >> 5u) & 3u];
        return select(-1.0, 1.0, ((word >> (index.x & 31u)) & 1u) == 1u);
    }
    let out = zograd_block(seed, step, sample, zograd_shr64(index, 2u));
    if (dist == ZOGRAD_GAUSSIAN) {
        return zograd_gaussian4(out)[index.x & 3u];
    }
    return zograd_uniform4(out)[index.x & 3u];
}

/// The sparse-direction mask of elements 4q .. 4q + 3 (`quad` = (lo, hi) of q = i / 4): 1.0 where
/// the element is kept, 0.0 where it is dropped, for a density of `threshold` / 65536
/// (`threshold` = 65536 keeps every element). Element i's 16-bit lane is half (i % 2) of word
/// (i % 8) / 2 of the Philox block b = i / 8 of the counter (b lo, b hi | 2^31, sample, step)
/// under the direction's key. Direction blocks are i / 4 or i / 128 < 2^62, so their counters
/// never have bit 63 of the block index set: the mask and the direction values are different
/// Philox outputs of one key, and the mask does not correlate with the value it multiplies.
fn zograd_keep4(seed: vec2<u32>, step: u32, sample: u32, quad: vec2<u32>, threshold: u32) -> vec4<f32> {
    let out = zograd_mask_block(seed, step, sample, zograd_shr64(quad, 1u));
    return zograd_keep_lanes(select(out.xy, out.zw, (quad.x & 1u) == 1u), threshold);
}

/// The Philox block of the sparse mask of elements 8b .. 8b + 7 (see `zograd_keep4`).
fn zograd_mask_block(seed: vec2<u32>, step: u32, sample: u32, b: vec2<u32>) -> vec4<u32> {
    return zograd_philox(vec4<u32>(b.x, b.y | 0x80000000u, sample, step), seed);
}

/// The keep values (1.0 / 0.0) of the four 16-bit lanes of two mask words: words (x, y) of a
/// mask block for elements 8b .. 8b + 3, words (z, w) for 8b + 4 .. 8b + 7.
fn zograd_keep_lanes(w: vec2<u32>, threshold: u32) -> vec4<f32> {
    let lanes = vec4<u32>(w.x & 0xFFFFu, w.x >> 16u, w.y & 0xFFFFu, w.y >> 16u);
    return select(vec4<f32>(0.0), vec4<f32>(1.0), lanes < vec4<u32>(threshold));
}

/// `v` where `keep` is 1.0, -0.0 where it is 0.0: a kernel adds -0.0 to a dropped element, which
/// leaves every value but NaN bit-identical (+0.0 would turn -0.0 into +0.0).
fn zograd_drop4(v: vec4<f32>, keep: vec4<f32>) -> vec4<f32> {
    return select(vec4<f32>(bitcast<f32>(0x80000000u)), v, keep == vec4<f32>(1.0));
}

/// The masked perturbation of one element: z(seed, step, sample, i) / sqrt(threshold / 65536)
/// where the mask keeps element i, 0 where it drops it (see `zograd_keep4`).
fn zograd_z_masked(dist: u32, seed: vec2<u32>, step: u32, sample: u32, index: vec2<u32>, threshold: u32) -> f32 {
    let z = zograd_z(dist, seed, step, sample, index);
    if (threshold >= 65536u) {
        return z;
    }
    let keep = zograd_keep4(seed, step, sample, zograd_shr64(index, 2u), threshold)[index.x & 3u];
    return select(0.0, z * inverseSqrt(f32(threshold) * 1.52587890625e-5), keep == 1.0);
}
