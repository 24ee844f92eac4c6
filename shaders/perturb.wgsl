// SPDX-License-Identifier: MIT OR Apache-2.0
// zograd — in-place perturbation: dst[i] += scale * z(seed, step, sample, gbase + i).

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
    let out = zograd_block(launch.seed, launch.step, launch.sample, zograd_add64(zograd_shr64(launch.gbase, 7u), t));
    let s = launch.coef.x;
    for (var word = 0u; word < 4u; word = word + 1u) {
        let w = out[word];
        for (var q = 0u; q < 8u; q = q + 1u) {
            add4(p0 + 32u * word + 4u * q, r, signed4(w, q, s));
        }
    }
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
    let out = zograd_block(launch.seed, launch.step, launch.sample, zograd_add64(zograd_shr64(launch.gbase, 2u), t));
    var z: vec4<f32>;
    if (launch.dist == ZOGRAD_GAUSSIAN) {
        z = zograd_gaussian4(out);
    } else {
        z = zograd_uniform4(out);
    }
    add4(p0, r, launch.coef.x * z);
}
