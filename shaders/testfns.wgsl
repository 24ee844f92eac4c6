// SPDX-License-Identifier: MIT OR Apache-2.0
// zograd — the standard test functions of `zograd::testfns` (Sphere, Ellipsoid, Rosenbrock,
// Rastrigin, Ackley, Styblinski–Tang, Different Powers, Levy), as the passes of a
// `BatchObjective` (tf_batch_partials + tf_batch_finish: every point x + scale_p·z_p of a batch,
// z regenerated from Philox, x never written) and of a `ShaderObjective` (tf_plain_partials +
// tf_plain_finish: f(x) itself). It follows `philox.wgsl` and `batch.wgsl`, which
// `BatchObjective::new` prepends (the `ShaderObjective` is compiled from the same three sources;
// its entry points touch no batch binding).
//
// The function value at x: f(x) = g(z), z = zstar + B·y, y_k = (x − c)_{perm(k)}, where g is
// the textbook function (minimiser zstar·1), c the centre (the shift x_opt, or zstar·1 without a
// shift), perm a permutation (or the identity) and B block-diagonal orthogonal (blocks of
// `rot_block` coordinates, matrices from a pool in tf_rot; or the identity). g is a sum of per-coordinate terms in up to two sums;
// Ackley and Different Powers finish with a scalar function of the sums.
//
// Reduction: a thread sums its 128 consecutive coordinates (rotated: its block of at most 40), a workgroup of 64 threads adds its
// threads' sums by a tree into one partial per workgroup and point, and the finish pass (one
// workgroup per point) adds the partials by a strided sum and a tree. The worst-case f32 error is
// about (128 + 6 + log2(groups))·2⁻²⁴·Σ|terms| (tests/testfns.rs derives its tolerances from it).

struct TfDims {
    n: u32,          // coordinates
    func: u32,       // TF_SPHERE … TF_LEVY
    groups: u32,     // workgroups of the partials pass per point
    permuted: u32,   // 1: z_i reads coordinate perm[i]
    plain_base: u32, // first slot of the plain evaluation's partials; its loss sits at plain_base + 2·groups
    zstar: f32,      // the minimiser of g in every coordinate
    per_thread: u32, // coordinates per thread: 128, or rot_block when rotated
    rot_block: u32,  // 0: no rotation; else the block size s (<= 40)
    rot_pool: u32,   // full blocks b use the s×s matrix b % rot_pool at tf_rot[(b % rot_pool)·s²]
    rot_last: u32,   // offset in tf_rot of the last block's matrix when it is smaller than s
}

@group(0) @binding(0) var<storage, read> tf_dims: TfDims;
@group(0) @binding(1) var<storage, read> tf_x: array<f32>;
@group(0) @binding(2) var<storage, read> tf_centre: array<f32>;
@group(0) @binding(3) var<storage, read> tf_perm: array<u32>;
// Point p's partials: tf_partial[2·(p·groups + g) + k], k = 0, 1 (the two sums).
@group(0) @binding(4) var<storage, read_write> tf_partial: array<f32>;
// Block rotation matrices, row-major.
@group(0) @binding(5) var<storage, read> tf_rot: array<f32>;

const TF_SPHERE: u32 = 0u;
const TF_ELLIPSOID: u32 = 1u;
const TF_ROSENBROCK: u32 = 2u;
const TF_RASTRIGIN: u32 = 3u;
const TF_ACKLEY: u32 = 4u;
const TF_STYBLINSKI_TANG: u32 = 5u;
const TF_DIFFERENT_POWERS: u32 = 6u;
const TF_LEVY: u32 = 7u;

const TF_WG: u32 = 64u;
const TF_PI: f32 = 3.14159265358979;
const TF_LOG2_10: f32 = 3.32192809488736;

var<workgroup> tf_sums: array<vec2<f32>, 64>;

// The Philox block of the current thread's point, cached across consecutive coordinates.
var<private> tf_cached: u32 = 0xFFFFFFFFu;
var<private> tf_block: vec4<u32>;
var<private> tf_quad: vec4<f32>;

// The y values of the thread's rotation block and of the next one (Rosenbrock's z_{i+1}).
var<private> tf_y: array<f32, 40>;
var<private> tf_y2: array<f32, 40>;

/// The source coordinate of z_i.
fn tf_source(i: u32) -> u32 {
    if (tf_dims.permuted == 1u) {
        return tf_perm[i];
    }
    return i;
}

/// scale_p · z_p(j): the perturbation of coordinate j at point p (one Philox block per 128
/// Rademacher or 4 Gaussian / uniform coordinates while j runs in order).
fn tf_dz(p: u32, j: u32) -> f32 {
    let pt = zograd_point(p);
    if (pt.scale == 0.0) {
        return 0.0;
    }
    let rademacher = zograd_batch.dist == ZOGRAD_RADEMACHER;
    let b = select(j >> 2u, j >> 7u, rademacher);
    if (b != tf_cached) {
        tf_block = zograd_point_block(p, vec2<u32>(b, 0u));
        if (!rademacher) {
            tf_quad = zograd_quad(tf_block);
        }
        tf_cached = b;
    }
    // Sparse directions: the mask's factor (1 when dense).
    let m = zograd_point_mask(p, vec2<u32>(j, 0u));
    if (rademacher) {
        return pt.scale * zograd_rademacher(tf_block, j & 127u) * m;
    }
    return pt.scale * tf_quad[j & 3u] * m;
}

/// z_i at point p of the batch.
fn tf_z_point(p: u32, i: u32) -> f32 {
    let j = tf_source(i);
    let v = tf_x[j] + tf_dz(p, j);
    return tf_dims.zstar + (v - tf_centre[j]);
}

/// z_i at x itself.
fn tf_z_plain(i: u32) -> f32 {
    let j = tf_source(i);
    return tf_dims.zstar + (tf_x[j] - tf_centre[j]);
}

/// w − round(w): exact in f32, so sin/cos of π·(this) stay accurate for any w.
fn tf_frac(w: f32) -> f32 {
    return w - round(w);
}

/// The contribution of coordinate i to the two sums; `zn` is z_{i+1} (Rosenbrock only).
fn tf_term(i: u32, z: f32, zn: f32) -> vec2<f32> {
    let n = tf_dims.n;
    switch tf_dims.func {
        case TF_SPHERE: {
            return vec2<f32>(z * z, 0.0);
        }
        case TF_ELLIPSOID: {
            var e = 0.0;
            if (n > 1u) {
                e = 6.0 * f32(i) / f32(n - 1u);
            }
            return vec2<f32>(exp2(TF_LOG2_10 * e) * z * z, 0.0);
        }
        case TF_ROSENBROCK: {
            if (i + 1u >= n) {
                return vec2<f32>(0.0);
            }
            let a = z * z - zn;
            let b = z - 1.0;
            return vec2<f32>(100.0 * a * a + b * b, 0.0);
        }
        case TF_RASTRIGIN: {
            return vec2<f32>(z * z + 10.0 * (1.0 - cos(2.0 * TF_PI * tf_frac(z))), 0.0);
        }
        case TF_ACKLEY: {
            return vec2<f32>(z * z, cos(2.0 * TF_PI * tf_frac(z)));
        }
        case TF_STYBLINSKI_TANG: {
            let z2 = z * z;
            return vec2<f32>(0.5 * (z2 * z2 - 16.0 * z2 + 5.0 * z), 0.0);
        }
        case TF_DIFFERENT_POWERS: {
            var e = 2.0;
            if (n > 1u) {
                e = 2.0 + 4.0 * f32(i) / f32(n - 1u);
            }
            let a = abs(z);
            if (a == 0.0) {
                return vec2<f32>(0.0);
            }
            return vec2<f32>(exp2(e * log2(a)), 0.0);
        }
        default: { // TF_LEVY
            let w = 1.0 + (z - 1.0) * 0.25;
            let r = tf_frac(w);
            var s = 0.0;
            if (i == 0u) {
                let s0 = sin(TF_PI * r);
                s = s0 * s0;
            }
            let d = (w - 1.0) * (w - 1.0);
            if (i + 1u < n) {
                let s1 = sin(TF_PI * r + 1.0);
                s = s + d * (1.0 + 10.0 * s1 * s1);
            } else {
                let s2 = sin(2.0 * TF_PI * r);
                s = s + d * (1.0 + s2 * s2);
            }
            return vec2<f32>(s, 0.0);
        }
    }
}

/// The function value from the two sums.
fn tf_final(s: vec2<f32>) -> f32 {
    let n = f32(tf_dims.n);
    switch tf_dims.func {
        case TF_ACKLEY: {
            return -20.0 * exp(-0.2 * sqrt(s.x / n)) - exp(s.y / n) + 20.0 + 2.71828182845905;
        }
        case TF_DIFFERENT_POWERS: {
            return sqrt(s.x);
        }
        default: {
            return s.x;
        }
    }
}

/// The workgroup's sum of `s` by a tree (all 64 threads call it).
fn tf_tree(lid: u32, s: vec2<f32>) -> vec2<f32> {
    tf_sums[lid] = s;
    workgroupBarrier();
    for (var w = TF_WG / 2u; w > 0u; w = w >> 1u) {
        if (lid < w) {
            tf_sums[lid] = tf_sums[lid] + tf_sums[lid + w];
        }
        workgroupBarrier();
    }
    return tf_sums[0];
}

/// The sums over the `groups` partials that start at slot `first`.
fn tf_total(first: u32, lid: u32) -> vec2<f32> {
    var s = vec2<f32>(0.0);
    for (var g = lid; g < tf_dims.groups; g = g + TF_WG) {
        s = s + vec2<f32>(tf_partial[first + 2u * g], tf_partial[first + 2u * g + 1u]);
    }
    return tf_tree(lid, s);
}

/// The offset in tf_rot of the matrix of the block starting at coordinate a, of cnt coordinates.
fn tf_rot_offset(a: u32, cnt: u32) -> u32 {
    let s = tf_dims.rot_block;
    if (cnt < s) {
        return tf_dims.rot_last;
    }
    return ((a / s) % tf_dims.rot_pool) * s * s;
}

/// z_{a+i} = zstar + Σ_k B[i, k]·y_k over the block (cnt coordinates, matrix at `off`).
fn tf_rot_row(off: u32, cnt: u32, i: u32, y: ptr<private, array<f32, 40>>) -> f32 {
    var s = 0.0;
    for (var k = 0u; k < cnt; k = k + 1u) {
        s = s + tf_rot[off + i * cnt + k] * (*y)[k];
    }
    return tf_dims.zstar + s;
}

/// The sums over the rotated block [a, a + cnt) with y in tf_y (and the next block's, of ncnt
/// coordinates, in tf_y2 when ncnt > 0).
fn tf_rot_sum(a: u32, cnt: u32, ncnt: u32) -> vec2<f32> {
    var s = vec2<f32>(0.0);
    let off = tf_rot_offset(a, cnt);
    var z = tf_rot_row(off, cnt, 0u, &tf_y);
    for (var i = 0u; i < cnt; i = i + 1u) {
        var zn = 0.0;
        if (i + 1u < cnt) {
            zn = tf_rot_row(off, cnt, i + 1u, &tf_y);
        } else if (ncnt > 0u) {
            zn = tf_rot_row(tf_rot_offset(a + cnt, ncnt), ncnt, 0u, &tf_y2);
        }
        s = s + tf_term(a + i, z, zn);
        z = zn;
    }
    return s;
}

/// Coordinates in the block after the one of `cnt` coordinates at a, when Rosenbrock needs it.
fn tf_next_count(a: u32, cnt: u32) -> u32 {
    if (tf_dims.func != TF_ROSENBROCK || a + cnt >= tf_dims.n) {
        return 0u;
    }
    return min(tf_dims.rot_block, tf_dims.n - a - cnt);
}

/// y_k = (x + dz_p − c)_{perm(a+k)} for k < cnt, into tf_y (second = false) or tf_y2.
fn tf_load_point(p: u32, a: u32, cnt: u32, second: bool) {
    for (var k = 0u; k < cnt; k = k + 1u) {
        let j = tf_source(a + k);
        let v = (tf_x[j] + tf_dz(p, j)) - tf_centre[j];
        if (second) {
            tf_y2[k] = v;
        } else {
            tf_y[k] = v;
        }
    }
}

/// y_k = (x − c)_{perm(a+k)} for k < cnt.
fn tf_load_plain(a: u32, cnt: u32, second: bool) {
    for (var k = 0u; k < cnt; k = k + 1u) {
        let j = tf_source(a + k);
        let v = tf_x[j] - tf_centre[j];
        if (second) {
            tf_y2[k] = v;
        } else {
            tf_y[k] = v;
        }
    }
}

/// One partial per workgroup and point: grid [groups, 1, points], point p = workgroup_id.z.
@compute @workgroup_size(64)
fn tf_batch_partials(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let p = wg.z;
    let n = tf_dims.n;
    let a = (wg.x * TF_WG + lid) * tf_dims.per_thread;
    var s = vec2<f32>(0.0);
    if (a < n && tf_dims.rot_block > 0u) {
        let cnt = min(tf_dims.rot_block, n - a);
        let ncnt = tf_next_count(a, cnt);
        tf_load_point(p, a, cnt, false);
        tf_load_point(p, a + cnt, ncnt, true);
        s = tf_rot_sum(a, cnt, ncnt);
    } else if (a < n) {
        let end = min(a + tf_dims.per_thread, n);
        let rosenbrock = tf_dims.func == TF_ROSENBROCK;
        var z = tf_z_point(p, a);
        for (var i = a; i < end; i = i + 1u) {
            var zn = 0.0;
            if (i + 1u < n && (i + 1u < end || rosenbrock)) {
                zn = tf_z_point(p, i + 1u);
            }
            s = s + tf_term(i, z, zn);
            z = zn;
        }
    }
    let t = tf_tree(lid, s);
    if (lid == 0u) {
        let slot = 2u * (p * tf_dims.groups + wg.x);
        tf_partial[slot] = t.x;
        tf_partial[slot + 1u] = t.y;
    }
}

/// The loss of each point: grid [1, 1, points].
@compute @workgroup_size(64)
fn tf_batch_finish(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let s = tf_total(2u * wg.z * tf_dims.groups, lid);
    if (lid == 0u) {
        zograd_set_loss(wg.z, tf_final(s));
    }
}

/// f(x) itself, partials: grid [groups, 1, 1].
@compute @workgroup_size(64)
fn tf_plain_partials(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n = tf_dims.n;
    let a = (wg.x * TF_WG + lid) * tf_dims.per_thread;
    var s = vec2<f32>(0.0);
    if (a < n && tf_dims.rot_block > 0u) {
        let cnt = min(tf_dims.rot_block, n - a);
        let ncnt = tf_next_count(a, cnt);
        tf_load_plain(a, cnt, false);
        tf_load_plain(a + cnt, ncnt, true);
        s = tf_rot_sum(a, cnt, ncnt);
    } else if (a < n) {
        let end = min(a + tf_dims.per_thread, n);
        let rosenbrock = tf_dims.func == TF_ROSENBROCK;
        var z = tf_z_plain(a);
        for (var i = a; i < end; i = i + 1u) {
            var zn = 0.0;
            if (i + 1u < n && (i + 1u < end || rosenbrock)) {
                zn = tf_z_plain(i + 1u);
            }
            s = s + tf_term(i, z, zn);
            z = zn;
        }
    }
    let t = tf_tree(lid, s);
    if (lid == 0u) {
        let slot = tf_dims.plain_base + 2u * wg.x;
        tf_partial[slot] = t.x;
        tf_partial[slot + 1u] = t.y;
    }
}

/// f(x) itself: grid [1, 1, 1]; the loss goes to tf_partial[plain_base + 2·groups].
@compute @workgroup_size(64)
fn tf_plain_finish(@builtin(local_invocation_index) lid: u32) {
    let s = tf_total(tf_dims.plain_base, lid);
    if (lid == 0u) {
        tf_partial[tf_dims.plain_base + 2u * tf_dims.groups] = tf_final(s);
    }
}
