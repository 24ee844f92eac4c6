// SPDX-License-Identifier: MIT OR Apache-2.0
// zograd — multi-sample accumulation in one pass over dst:
//   dst[i] = a * dst[i] + sum_t coeff_t * z(seed, step, sample_t, gbase + i),   a = coef.x
// The sum runs over the terms in order, from 0, and is added to dst once, so dst is read and
// written once whatever the number of terms. a = 1 is plain accumulation (1 * x is exact); the
// fused MeZO step uses a = 1 - lr * weight_decay.

// terms[0].x = the number of terms T; terms[1 ..= T] = (sample, bitcast<u32>(coeff)).
// The count lives in storage rather than in the launch uniform on purpose: Mesa's lavapipe
// recompiles a shader for every new value of a uniform that bounds a loop ("inlined uniforms"),
// which cost ~5 ms per dispatch.
@group(0) @binding(2) var<storage, read> terms: array<vec2<u32>>;
// accumulate_*_scaled: the destination's per-element scales (`Params::set_scales`), bound like
// dst (shift.z).
@group(0) @binding(3) var<storage, read> dst_scales: array<f32>;

/// The sums' starting value: 0.0, and -0.0 in masked pipelines, so that an element every term
/// drops gets -0.0 added and keeps its bits (-0.0 + -0.0 = -0.0; +0.0 would turn a -0.0 element
/// into +0.0).
fn zero() -> f32 {
    return select(0.0, bitcast<f32>(0x80000000u), ZOGRAD_MASKED);
}

/// The sums Σ_t c_t·z_t (sparse-masked in masked pipelines) of the 64 Rademacher elements of
/// half-block `half` (global elements 64·half .. 64·half + 63), as 16 quads, into `sums`. Rademacher: a
/// thread owns half a Philox block, two 32-bit words, i.e. 64 consecutive elements, and keeps
/// their sums in sixteen vec4 registers while it walks the terms: per term one Philox
/// evaluation (shared by the 2 threads of a block, so one per 64 elements), then 64 sign
/// selects. No workgroup memory and no barriers; dst is read and written once whatever the
/// number of terms.
var<private> sums: array<vec4<f32>, 16>;

fn rademacher_sums(half: vec2<u32>) {
    let blk = zograd_shr64(half, 1u);
    let upper = (half.x & 1u) == 1u;
    let oct0 = shl64(half, 3u);
    for (var q = 0u; q < 16u; q = q + 1u) {
        sums[q] = vec4<f32>(zero());
    }
    for (var i = 1u; i <= terms[0].x; i = i + 1u) {
        let term = terms[i];
        let c = bitcast<f32>(term.y);
        let out = zograd_block(launch.seed, launch.step, term.x, blk);
        let w = select(out.xy, out.zw, upper);
        // One mask block per two quads: blocks oct0 + q2 (word x) and oct0 + 4 + q2 (word y).
        for (var q2 = 0u; q2 < 4u; q2 = q2 + 1u) {
            let q = 2u * q2;
            let vx = sparse8(signed4(w.x, q, c), signed4(w.x, q + 1u, c), term.x, zograd_add64(oct0, q2));
            let vy = sparse8(signed4(w.y, q, c), signed4(w.y, q + 1u, c), term.x, zograd_add64(oct0, q2 + 4u));
            sums[q] = sums[q] + vx[0];
            sums[q + 1u] = sums[q + 1u] + vx[1];
            sums[q + 8u] = sums[q + 8u] + vy[0];
            sums[q + 9u] = sums[q + 9u] + vy[1];
        }
    }
}

/// The sums Σ_t c_t·z_t (sparse-masked in masked pipelines) of the 4 Gaussian or uniform
/// elements of Philox block `blk` (global elements 4·blk .. 4·blk + 3).
fn quad_sums(blk: vec2<u32>) -> vec4<f32> {
    var acc = vec4<f32>(zero());
    for (var i = 1u; i <= terms[0].x; i = i + 1u) {
        let term = terms[i];
        let out = zograd_block(launch.seed, launch.step, term.x, blk);
        var z: vec4<f32>;
        if (launch.dist == ZOGRAD_GAUSSIAN) {
            z = zograd_gaussian4(out);
        } else {
            z = zograd_uniform4(out);
        }
        acc = acc + sparse4(bitcast<f32>(term.y) * z, term.x, blk);
    }
    return acc;
}

@compute @workgroup_size(256)
fn accumulate_rademacher(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = group_index(wg) * WG_SIZE + lid;
    let r = launch.gbase.x & 63u;
    let p0 = 64u * t;
    if (p0 >= launch.len + r) {
        return;
    }
    rademacher_sums(zograd_add64(zograd_shr64(launch.gbase, 6u), t));
    for (var q = 0u; q < 16u; q = q + 1u) {
        mul_add4(p0 + 4u * q, r, launch.coef.x, sums[q]);
    }
}

@compute @workgroup_size(256)
fn accumulate_quad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = group_index(wg) * WG_SIZE + lid;
    let r = launch.gbase.x & 3u;
    let p0 = 4u * t;
    if (p0 >= launch.len + r) {
        return;
    }
    let blk = zograd_add64(zograd_shr64(launch.gbase, 2u), t);
    let acc = quad_sums(blk);
    mul_add4(p0, r, launch.coef.x, acc);
}

// Whether this pipeline scales dst (a = coef.x) before adding: zograd builds the kernels twice,
// plain (false) and scaled (true). The multiply, even behind a uniform branch, made lavapipe
// compile the Rademacher kernel 1.6x slower, so the plain pipeline must not contain it.
override ZOGRAD_SCALED: bool = false;

/// dst[p - r + e] = a * dst[p - r + e] + v[e] (plain pipeline: dst + v) for the lanes inside the
/// chunk.
fn mul_add4(p: u32, r: u32, a: f32, v: vec4<f32>) {
    if (!ZOGRAD_SCALED) {
        add4(p, r, v);
        return;
    }
    for (var e = 0u; e < 4u; e = e + 1u) {
        let q = p + e;
        if (q >= r && q - r < launch.len) {
            let j = zograd_shift().x + q - r;
            dst[j] = a * dst[j] + v[e];
        }
    }
}

// Parameters with per-element scales s (`Params::set_scales`):
//   dst[i] = a * dst[i] + s[i] * sum_t coeff_t * z(seed, step, sample_t, gbase + i).
// The same sums as above, in their own entry points (the plain ones stay as they are).

/// dst[j] = a * dst[j] + dst_scales[j] * v[e] for the lanes inside the chunk.
fn mul_add4_scaled(p: u32, r: u32, a: f32, v: vec4<f32>) {
    for (var e = 0u; e < 4u; e = e + 1u) {
        let q = p + e;
        if (q >= r && q - r < launch.len) {
            let j = zograd_shift().x + q - r;
            dst[j] = a * dst[j] + dst_scales[zograd_shift().z + q - r] * v[e];
        }
    }
}

@compute @workgroup_size(256)
fn accumulate_rademacher_scaled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = group_index(wg) * WG_SIZE + lid;
    let r = launch.gbase.x & 63u;
    let p0 = 64u * t;
    if (p0 >= launch.len + r) {
        return;
    }
    rademacher_sums(zograd_add64(zograd_shr64(launch.gbase, 6u), t));
    for (var q = 0u; q < 16u; q = q + 1u) {
        mul_add4_scaled(p0 + 4u * q, r, launch.coef.x, sums[q]);
    }
}

@compute @workgroup_size(256)
fn accumulate_quad_scaled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = group_index(wg) * WG_SIZE + lid;
    let r = launch.gbase.x & 3u;
    let p0 = 4u * t;
    if (p0 >= launch.len + r) {
        return;
    }
    let blk = zograd_add64(zograd_shr64(launch.gbase, 2u), t);
    let acc = quad_sums(blk);
    mul_add4_scaled(p0, r, launch.coef.x, acc);
}

// Magnitude-masked directions (`_bits` entry points, built with ZOGRAD_MASKED = true): the
// mask's bits, one per global element (word i / 32, bit i % 32), bound entire. The sums of an
// element whose bit is clear are replaced by -0.0 (as for one every term drops).
@group(0) @binding(3) var<storage, read> zograd_bits: array<u32>;

/// The magnitude mask of elements 4·quad .. 4·quad + 3: 1.0 where the bit is set.
fn bits4(quad: vec2<u32>) -> vec4<f32> {
    return quad_bits(zograd_bits[bits_word(quad)], quad);
}

@compute @workgroup_size(256)
fn accumulate_rademacher_bits(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = group_index(wg) * WG_SIZE + lid;
    let r = launch.gbase.x & 63u;
    let p0 = 64u * t;
    if (p0 >= launch.len + r) {
        return;
    }
    let half = zograd_add64(zograd_shr64(launch.gbase, 6u), t);
    let quad0 = shl64(half, 4u);
    rademacher_sums(half);
    for (var q = 0u; q < 16u; q = q + 1u) {
        mul_add4(p0 + 4u * q, r, launch.coef.x, zograd_drop4(sums[q], bits4(zograd_add64(quad0, q))));
    }
}

@compute @workgroup_size(256)
fn accumulate_quad_bits(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = group_index(wg) * WG_SIZE + lid;
    let r = launch.gbase.x & 3u;
    let p0 = 4u * t;
    if (p0 >= launch.len + r) {
        return;
    }
    let blk = zograd_add64(zograd_shr64(launch.gbase, 2u), t);
    let acc = quad_sums(blk);
    mul_add4(p0, r, launch.coef.x, zograd_drop4(acc, bits4(blk)));
}
