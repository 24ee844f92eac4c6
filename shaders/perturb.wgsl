// SPDX-License-Identifier: MIT OR Apache-2.0
// zograd — in-place perturbation: dst[i] += scale * z(seed, step, sample, gbase + i), and for
// parameters with per-element scales (`Params::set_scales`) dst[i] += scale * s[i] * z(...).

// perturb_*_scaled: the destination's scales, bound like dst (same range, shift.y).
@group(0) @binding(2) var<storage, read> dst_scales: array<f32>;

// Rademacher: a thread owns one Philox block, i.e. 128 consecutive elements: one Philox
// evaluation per 128 elements, the signs taken from the four words in registers. No workgroup
// memory and no barriers. (A variant where a workgroup shares 33 blocks through workgroup memory
// and threads stride 256 elements ran at 0.6-0.8 of the copy kernel on lavapipe; this one at
// 1.3-1.5.)
@compute @workgroup_size(256)
fn perturb_rademacher(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = group_index(wg) * WG_SIZE + lid;
    let r = launch.gbase.x & 127u;
    let p0 = 128u * t;
    if (p0 >= launch.len + r) {
        return;
    }
    let blk = zograd_add64(zograd_shr64(launch.gbase, 7u), t);
    let out = zograd_block(launch.seed, launch.step, launch.sample, blk);
    let s = launch.coef.x;
    // Mask block of elements 8·(16·blk + 4·word + q2) ...: one per two quads.
    let oct0 = shl64(blk, 4u);
    for (var word = 0u; word < 4u; word = word + 1u) {
        let w = out[word];
        for (var q2 = 0u; q2 < 4u; q2 = q2 + 1u) {
            let q = 2u * q2;
            let v = sparse8(signed4(w, q, s), signed4(w, q + 1u, s), launch.sample, zograd_add64(oct0, 4u * word + q2));
            add4(p0 + 32u * word + 4u * q, r, v[0]);
            add4(p0 + 32u * word + 4u * q + 4u, r, v[1]);
        }
    }
}

/// dst[p - r + e] += dst_scales[p - r + e] * v[e] for the lanes inside the chunk.
fn add4_scaled(p: u32, r: u32, v: vec4<f32>) {
    for (var e = 0u; e < 4u; e = e + 1u) {
        let q = p + e;
        if (q >= r && q - r < launch.len) {
            let j = zograd_shift().x + q - r;
            dst[j] = dst[j] + dst_scales[zograd_shift().y + q - r] * v[e];
        }
    }
}

@compute @workgroup_size(256)
fn perturb_rademacher_scaled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = group_index(wg) * WG_SIZE + lid;
    let r = launch.gbase.x & 127u;
    let p0 = 128u * t;
    if (p0 >= launch.len + r) {
        return;
    }
    let blk = zograd_add64(zograd_shr64(launch.gbase, 7u), t);
    let out = zograd_block(launch.seed, launch.step, launch.sample, blk);
    let s = launch.coef.x;
    // Mask block of elements 8·(16·blk + 4·word + q2) ...: one per two quads.
    let oct0 = shl64(blk, 4u);
    for (var word = 0u; word < 4u; word = word + 1u) {
        let w = out[word];
        for (var q2 = 0u; q2 < 4u; q2 = q2 + 1u) {
            let q = 2u * q2;
            let v = sparse8(signed4(w, q, s), signed4(w, q + 1u, s), launch.sample, zograd_add64(oct0, 4u * word + q2));
            add4_scaled(p0 + 32u * word + 4u * q, r, v[0]);
            add4_scaled(p0 + 32u * word + 4u * q + 4u, r, v[1]);
        }
    }
}

/// The 4 values of the Gaussian or uniform direction in thread t's Philox block, times coef.x.
fn quad_values(t: u32) -> vec4<f32> {
    let blk = zograd_add64(zograd_shr64(launch.gbase, 2u), t);
    let out = zograd_block(launch.seed, launch.step, launch.sample, blk);
    var z: vec4<f32>;
    if (launch.dist == ZOGRAD_GAUSSIAN) {
        z = zograd_gaussian4(out);
    } else {
        z = zograd_uniform4(out);
    }
    return sparse4(launch.coef.x * z, launch.sample, blk);
}

// Gaussian and uniform: a thread owns one Philox block of 4 elements. The chunk may start in
// the middle of a block (r = gbase % 4), so thread t covers chunk elements 4t - r .. 4t - r + 3.
@compute @workgroup_size(256)
fn perturb_quad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = group_index(wg) * WG_SIZE + lid;
    let r = launch.gbase.x & 3u;
    let p0 = 4u * t;
    if (p0 >= launch.len + r) {
        return;
    }
    add4(p0, r, quad_values(t));
}

@compute @workgroup_size(256)
fn perturb_quad_scaled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = group_index(wg) * WG_SIZE + lid;
    let r = launch.gbase.x & 3u;
    let p0 = 4u * t;
    if (p0 >= launch.len + r) {
        return;
    }
    add4_scaled(p0, r, quad_values(t));
}

// Magnitude-masked directions (`_bits` entry points, built with ZOGRAD_MASKED = true): the
// mask's bits, one per global element (word i / 32, bit i % 32), bound entire. An element whose
// bit is clear gets -0.0 (as one the sparse mask drops).
@group(0) @binding(2) var<storage, read> zograd_bits: array<u32>;

/// The magnitude mask of elements 4·quad .. 4·quad + 3: 1.0 where the bit is set.
fn bits4(quad: vec2<u32>) -> vec4<f32> {
    return quad_bits(zograd_bits[bits_word(quad)], quad);
}

@compute @workgroup_size(256)
fn perturb_rademacher_bits(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = group_index(wg) * WG_SIZE + lid;
    let r = launch.gbase.x & 127u;
    let p0 = 128u * t;
    if (p0 >= launch.len + r) {
        return;
    }
    let blk = zograd_add64(zograd_shr64(launch.gbase, 7u), t);
    let out = zograd_block(launch.seed, launch.step, launch.sample, blk);
    let s = launch.coef.x;
    let quad0 = shl64(blk, 5u);
    let oct0 = shl64(blk, 4u);
    for (var word = 0u; word < 4u; word = word + 1u) {
        let w = out[word];
        for (var q2 = 0u; q2 < 4u; q2 = q2 + 1u) {
            let q = 2u * q2;
            let quad = zograd_add64(quad0, 8u * word + q);
            let v = sparse8(signed4(w, q, s), signed4(w, q + 1u, s), launch.sample, zograd_add64(oct0, 4u * word + q2));
            add4(p0 + 32u * word + 4u * q, r, zograd_drop4(v[0], bits4(quad)));
            add4(p0 + 32u * word + 4u * q + 4u, r, zograd_drop4(v[1], bits4(zograd_add64(quad, 1u))));
        }
    }
}

@compute @workgroup_size(256)
fn perturb_quad_bits(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = group_index(wg) * WG_SIZE + lid;
    let r = launch.gbase.x & 3u;
    let p0 = 4u * t;
    if (p0 >= launch.len + r) {
        return;
    }
    let blk = zograd_add64(zograd_shr64(launch.gbase, 2u), t);
    add4(p0, r, zograd_drop4(quad_values(t), bits4(blk)));
}
