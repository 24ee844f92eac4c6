// SPDX-License-Identifier: MIT OR Apache-2.0
// zograd — partial sums, one per workgroup, written to dst from slot out_offset on. The host
// adds the partials in f64.

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

/// Elements pe/// Elements per thread of `dot_product`: a workgroup sums DOT_PER_THREAD * 256 elements before
/// its one tree reduction (the reduction's barriers dominate on CPU adapters: with 4 elements
/// per thread the kernel ran at 0.18 of the copy kernel's speed on lavapipe).
const DOT_PER_THREAD: u32 = 64u;

/// The exponent of an empty partial sum: far below any product of two f32 (2^-298).
const EMPTY_EXP: i32 = -400;

/// A partial sum v · 2^e, |v| at most DOT_PER_THREAD * 256.
struct Scaled {
    v: f32,
    e: i32,
}

var<workgroup> scratch_e: array<i32, 256>;

/// e with m = f · 2^e, 0.5 <= f < 1 (0 for m = 0): scaling by 2^-e brings m into [0.5, 1).
fn exponent_of(m: f32) -> i32 {
    return frexp(m).exp;
}

/// a + b at the larger of the two exponents. Scaling by a power of two is exact; the smaller
/// one is flushed to 0 once it is 2^-160 below (far under f32 precision of the larger).
fn scaled_add(a: Scaled, b: Scaled) -> Scaled {
    let e = max(a.e, b.e);
    let v = ldexp(a.v, max(a.e - e, -160)) + ldexp(b.v, max(b.e - e, -160));
    return Scaled(v, e);
}

/// Tree sum of one scaled value per thread; called in uniform control flow by the whole
/// workgroup.
fn workgroup_scaled_sum(lid: u32, x: Scaled) -> Scaled {
    scratch[lid] = x.v;
    scratch_e[lid] = x.e;
    workgroupBarrier();
    for (var s = WG_SIZE / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            let sum = scaled_add(Scaled(scratch[lid], scratch_e[lid]), Scaled(scratch[lid + s], scratch_e[lid + s]));
            scratch[lid] = sum.v;
            scratch_e[lid] = sum.e;
        }
        workgroupBarrier();
    }
    return Scaled(scratch[0], scratch_e[0]);
}

/// sum of xs_i * ys_i over the chunk, DOT_PER_THREAD elements per thread, 256 apart, computed
/// so that it neither overflows nor flushes small products to zero: each thread scales its xs
/// and ys by the powers of two that bring its largest |x| and |y| into [0.5, 1) (exact), sums
/// the scaled products, and the workgroup adds the (sum, exponent) pairs. Group g writes its sum
/// v and exponent e to dst[2 (out_offset + g)] and the next slot; the host adds v · 2^e in f64.
/// Squared norms bind one buffer as both xs and ys and set `launch.y_is_x = 1`: each element is
/// then loaded once per pass (x_i * x_i).
@compute @workgroup_size(256)
fn dot_product(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let group = group_index(wg);
    if (group >= launch.n_groups) {
        return;
    }
    let start = group * WG_SIZE * DOT_PER_THREAD + lid;
    let squares = launch.y_is_x == 1u;
    // Pass 1: the largest magnitudes.
    var mx = 0.0;
    var my = 0.0;
    for (var k = 0u; k < DOT_PER_THREAD; k = k + 1u) {
        let i = start + k * WG_SIZE;
        if (i >= launch.len) {
            break;
        }
        mx = max(mx, abs(xs[i]));
        if (!squares) {
            my = max(my, abs(ys[i]));
        }
    }
    let ex = exponent_of(mx);
    let ey = select(exponent_of(my), ex, squares);
    // Pass 2: the scaled products.
    var v = 0.0;
    for (var k = 0u; k < DOT_PER_THREAD; k = k + 1u) {
        let i = start + k * WG_SIZE;
        if (i >= launch.len) {
            break;
        }
        let x = ldexp(xs[i], -ex);
        if (squares) {
            v = v + x * x;
        } else {
            v = v + x * ldexp(ys[i], -ey);
        }
    }
    let mine = Scaled(v, select(ex + ey, EMPTY_EXP, v == 0.0));
    let total = workgroup_scaled_sum(lid, mine);
    if (lid == 0u) {
        let at = 2u * (launch.out_offset + group);
        dst[at] = total.v;
        dst[at + 1u] = f32(total.e);
    }
}
