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

/// Elements per thread of `dot_product`: a workgroup sums DOT_PER_THREAD * 256 elements before
/// its one tree reduction (the reduction's barriers dominate on CPU adapters: with 4 elements
/// per thread the kernel ran at 0.18 of the copy kernel's speed on lavapipe).
const DOT_PER_THREAD: u32 = 64u;

/// sum of xs_i * ys_i over the chunk, DOT_PER_THREAD elements per thread, 256 apart. Squared
/// norms bind one buffer as both xs and ys and set `launch.dist = 1`: each element is then
/// loaded once (x_i * x_i).
@compute @workgroup_size(256)
fn dot_product(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let group = group_index(wg);
    if (group >= launch.n_groups) {
        return;
    }
    var v = 0.0;
    let start = group * WG_SIZE * DOT_PER_THREAD + lid;
    if (launch.dist == 1u) {
        for (var k = 0u; k < DOT_PER_THREAD; k = k + 1u) {
            let i = start + k * WG_SIZE;
            if (i >= launch.len) {
                break;
            }
            let x = xs[i];
            v = v + x * x;
        }
    } else {
        for (var k = 0u; k < DOT_PER_THREAD; k = k + 1u) {
            let i = start + k * WG_SIZE;
            if (i >= launch.len) {
                break;
            }
            v = v + xs[i] * ys[i];
        }
    }
    let total = workgroup_sum(lid, v);
    if (lid == 0u) {
        dst[launch.out_offset + group] = total;
    }
}
