// SPDX-License-Identifier: MIT OR Apache-2.0
// zograd — helpers of the kernels that move by directions (perturb, accumulate), prepended to
// their families after philox.wgsl and common.wgsl: the sparse mask (`kernels::Mask`) applied to
// a quad or to the eight elements of one mask block, the layout of the magnitude mask's bits,
// and a 64-bit shift.

/// Sparse directions: `v`, the values of elements 4·quad .. 4·quad + 3 of sample `sample`, with
/// the elements the mask drops set to -0.0 (masked pipelines only; the plain ones return `v`).
/// The 1/sqrt(density) factor is folded into the coefficients by the host.
fn sparse4(v: vec4<f32>, sample: u32, quad: vec2<u32>) -> vec4<f32> {
    if (!ZOGRAD_MASKED) {
        return v;
    }
    return zograd_drop4(v, zograd_keep4(launch.seed, launch.step, sample, quad, launch.mask.x));
}

/// `sparse4` for the eight elements 8b .. 8b + 7 of ONE mask block b: `v0` the first four,
/// `v1` the last four.
fn sparse8(v0: vec4<f32>, v1: vec4<f32>, sample: u32, b: vec2<u32>) -> array<vec4<f32>, 2> {
    if (!ZOGRAD_MASKED) {
        return array<vec4<f32>, 2>(v0, v1);
    }
    let out = zograd_mask_block(launch.seed, launch.step, sample, b);
    let t = launch.mask.x;
    return array<vec4<f32>, 2>(zograd_drop4(v0, zograd_keep_lanes(out.xy, t)), zograd_drop4(v1, zograd_keep_lanes(out.zw, t)));
}

/// (lo, hi) << s for 0 < s < 32.
fn shl64(a: vec2<u32>, s: u32) -> vec2<u32> {
    return vec2<u32>(a.x << s, (a.y << s) | (a.x >> (32u - s)));
}

/// The magnitude mask's bits hold one bit per global element, word i / 32, bit i % 32: the index
/// of the word holding elements 4·quad .. 4·quad + 3 (each family binds the bits itself).
fn bits_word(quad: vec2<u32>) -> u32 {
    return (quad.x >> 3u) | (quad.y << 29u);
}

/// The magnitude mask of elements 4·quad .. 4·quad + 3 from their word `w`: 1.0 where the bit
/// is set.
fn quad_bits(w: u32, quad: vec2<u32>) -> vec4<f32> {
    let b = (vec4<u32>(w >> (4u * (quad.x & 7u))) >> vec4<u32>(0u, 1u, 2u, 3u)) & vec4<u32>(1u);
    return vec4<f32>(b);
}
