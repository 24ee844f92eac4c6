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
    // A range may start inside a Philox block (the norm over the unfrozen buffers of a
    // `kernels::Mask`): thread t covers elements 4t - r .. 4t - r + 3, r = gbase % 4.
    let r = launch.gbase.x & 3u;
    if (4u * t < launch.len + r) {
        let z = zograd_gaussian4(zograd_block(launch.seed, launch.step, launch.sample, zograd_add64(zograd_shr64(launch.gbase, 2u), t)));
        let q = vec4<u32>(4u * t) + vec4<u32>(0u, 1u, 2u, 3u);
        let valid = vec4<f32>((q >= vec4<u32>(r)) & (q < vec4<u32>(launch.len + r)));
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

/// The range of the largest |x| in which a thread's plain f32 sum of squares is kept.
const SAFE_LOW: f32 = 9.094947e-13; // 2^-40
const SAFE_HIGH: f32 = 1.0995116e12; // 2^40

/// The exponent of an empty partial sum: far below any product of two f32 (2^-298).
const EMPTY_EXP: i32 = -400;

/// A partial sum v · 2^e, |v| at most 16 · DOT_PER_THREAD · 256.
struct Scaled {
    v: f32,
    e: i32,
}

var<workgroup> scratch_e: array<i32, 256>;

/// A running scale for the elements one thread reads: `e` is the exponent of the largest
/// magnitude seen so far (|x| < 2^e, e clamped to [-126, 126] so that 2^e and 2^-e are normal
/// f32), `bound` = 2^e and `factor` = 2^-e. x · factor is exact and below 4 in magnitude.
struct Scale {
    e: i32,
    bound: f32,
    factor: f32,
}

/// The scale before any element.
fn no_scale() -> Scale {
    return Scale(-126, ldexp(1.0, -126), ldexp(1.0, 126));
}

/// The scale grown to cover |x| (never shrunk): returns the growth in exponent (0 when x fits).
fn grow(scale: ptr<function, Scale>, x: f32) -> i32 {
    if (abs(x) >= (*scale).bound) {
        let e = clamp(frexp(abs(x)).exp, (*scale).e, 126);
        let up = e - (*scale).e;
        (*scale) = Scale(e, ldexp(1.0, e), ldexp(1.0, -e));
        return up;
    }
    return 0;
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
/// so that it neither overflows nor flushes small terms to zero: each thread sums its terms
/// scaled by a power of two (exact; see the two branches), and the workgroup adds the
/// (sum, exponent) pairs. Group g writes its sum v and exponent e to dst[2 (out_offset + g)] and
/// the next slot; the host adds v · 2^e in f64. Squared norms bind one buffer as both xs and ys
/// and set `launch.y_is_x = 1`: each element is then loaded once (x_i * x_i).
@compute @workgroup_size(256)
fn dot_product(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let group = group_index(wg);
    if (group >= launch.n_groups) {
        return;
    }
    let start = group * WG_SIZE * DOT_PER_THREAD + lid;
    var v = 0.0;
    var e = 0;
    if (launch.y_is_x == 1u) {
        // Squares: the plain sum, exact enough while the largest |x| is within 2^±40 (no
        // overflow; a square that underflows is below 2^-126, under 2^-40 of the sum's f32
        // precision). Outside that range, a second pass with the exact scale of the largest.
        var m = 0.0;
        for (var k = 0u; k < DOT_PER_THREAD; k = k + 1u) {
            let i = start + k * WG_SIZE;
            if (i >= launch.len) {
                break;
            }
            let x = xs[zograd_shift().y + i];
            v = v + x * x;
            m = max(m, abs(x));
        }
        if (m != 0.0 && !(m >= SAFE_LOW && m <= SAFE_HIGH)) {
            let s = no_scale();
            let ex = clamp(frexp(m).exp, s.e, 126);
            let factor = ldexp(1.0, -ex);
            v = 0.0;
            for (var k = 0u; k < DOT_PER_THREAD; k = k + 1u) {
                let i = start + k * WG_SIZE;
                if (i >= launch.len) {
                    break;
                }
                let t = xs[zograd_shift().y + i] * factor;
                v = v + t * t;
            }
            e = 2 * ex;
        }
    } else {
        // Products: one pass with running scales; when a larger element raises a scale, v is
        // rescaled first (powers of two: exact).
        var sx = no_scale();
        var sy = no_scale();
        for (var k = 0u; k < DOT_PER_THREAD; k = k + 1u) {
            let i = start + k * WG_SIZE;
            if (i >= launch.len) {
                break;
            }
            let x = xs[zograd_shift().y + i];
            let y = ys[zograd_shift().z + i];
            let up = grow(&sx, x) + grow(&sy, y);
            if (up != 0) {
                v = ldexp(v, max(-up, -160));
            }
            v = v + (x * sx.factor) * (y * sy.factor);
        }
        e = sx.e + sy.e;
    }
    let mine = Scaled(v, select(e, EMPTY_EXP, v == 0.0));
    let total = workgroup_scaled_sum(lid, mine);
    if (lid == 0u) {
        let at = 2u * (launch.out_offset + group);
        dst[at] = total.v;
        dst[at + 1u] = f32(total.e);
    }
}
