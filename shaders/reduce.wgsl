// SPDX-License-Identifier: MIT OR Apache-2.0
// zograd — partial sums, one per workgroup, written to dst[out_offset + group]. The host
// (or a second pass) adds the partials in f64.

@group(0) @binding(2) var<storage, read> xs: array<f32>;
@group(0) @binding(3) var<storage, read> ys: array<f32>;

var<workgroup> scratch: array<f32, 256>;

/// Tree sum of one value per thread; called in uniform control flow by the whole workgroup.
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    scratch[lid] = v;
    workgroupBarrier();
    for (var s = WG_SIZE / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            scratch[lid] = scratch[lid] + scratch[lid + s];
        }
        workgroupBarrier();
    }
    return scratch[0];
}

/// sum of z_i^2 of the Gaussian direction over global indices [gbase, gbase + len); gbase is a
/// multiple of 4 (the norm of the Sphere distribution).
@compute @workgroup_size(256)
fn sphere_sumsq(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let group = group_index(wg);
    if (group >= launch.n_groups) {
        return;
    }
    let t = group * WG_SIZE + lid;
    var v = 0.0;
    if (4u * t < launch.len) {
        let z = zograd_gaussian4(zograd_block(launch.seed, launch.step, launch.sample, zograd_add64(zograd_shr64(launch.gbase, 2u), t)));
        let valid = vec4<f32>(vec4<bool>(4u * t < launch.len, 4u * t + 1u < launch.len, 4u * t + 2u < launch.len, 4u * t + 3u < launch.len));
        v = dot(z * z, valid);
    }
    let total = workgroup_sum(lid, v);
    if (lid == 0u) {
        dst[launch.out_offset + group] = total;
    }
}

/// sum of xs_i * ys_i over the chunk, 4 elements per thread (squared norms bind one buffer as
/// both xs and ys).
@compute @workgroup_size(256)
fn dot_product(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let group = group_index(wg);
    if (group >= launch.n_groups) {
        return;
    }
    var v = 0.0;
    for (var k = 0u; k < 4u; k = k + 1u) {
        let i = group * WG_SIZE * 4u + k * WG_SIZE + lid;
        if (i < launch.len) {
            v = v + xs[i] * ys[i];
        }
    }
    let total = workgroup_sum(lid, v);
    if (lid == 0u) {
        dst[launch.out_offset + group] = total;
    }
}
