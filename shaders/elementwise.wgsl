// SPDX-License-Identifier: MIT OR Apache-2.0
// zograd — elementwise kernels on one chunk: copy (the bandwidth yardstick), axpy, lerp, scale, fill,
// and the optimiser modules' updates (sign, heavy-ball momentum, Adam).
// Each thread handles 4 elements, 256 apart (coalesced).

@group(0) @binding(2) var<storage, read> src: array<f32>;
// axpy_scaled: the destination's per-element scales (`Params::set_scales`).
@group(0) @binding(3) var<storage, read> dst_scales: array<f32>;

const PER_THREAD: u32 = 4u;

/// dst = src.
@compute @workgroup_size(256)
fn copy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let base = group_index(wg) * WG_SIZE * PER_THREAD + lid;
    for (var k = 0u; k < PER_THREAD; k = k + 1u) {
        let i = base + k * WG_SIZE;
        if (i < launch.len) {
            dst[zograd_shift().x + i] = src[zograd_shift().y + i];
        }
    }
}

/// dst += scale * src.
@compute @workgroup_size(256)
fn axpy(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let base = group_index(wg) * WG_SIZE * PER_THREAD + lid;
    for (var k = 0u; k < PER_THREAD; k = k + 1u) {
        let i = base + k * WG_SIZE;
        if (i < launch.len) {
            dst[zograd_shift().x + i] = dst[zograd_shift().x + i] + launch.coef.x * src[zograd_shift().y + i];
        }
    }
}

/// dst += scale * dst_scales * src: a move of parameters with scales (x = s * y moved by a * u
/// in y units).
@compute @workgroup_size(256)
fn axpy_scaled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let base = group_index(wg) * WG_SIZE * PER_THREAD + lid;
    for (var k = 0u; k < PER_THREAD; k = k + 1u) {
        let i = base + k * WG_SIZE;
        if (i < launch.len) {
            let d = zograd_shift().x + i;
            dst[d] = dst[d] + launch.coef.x * (dst_scales[zograd_shift().z + i] * src[zograd_shift().y + i]);
        }
    }
}

/// dst += w * (src - dst): one step of a running mean (Polyak–Ruppert averaging, w = 1/m).
@compute @workgroup_size(256)
fn lerp(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let base = group_index(wg) * WG_SIZE * PER_THREAD + lid;
    for (var k = 0u; k < PER_THREAD; k = k + 1u) {
        let i = base + k * WG_SIZE;
        if (i < launch.len) {
            let d = zograd_shift().x + i;
            dst[d] = dst[d] + launch.coef.x * (src[zograd_shift().y + i] - dst[d]);
        }
    }
}

/// dst *= scale.
@compute @workgroup_size(256)
fn scale(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let base = group_index(wg) * WG_SIZE * PER_THREAD + lid;
    for (var k = 0u; k < PER_THREAD; k = k + 1u) {
        let i = base + k * WG_SIZE;
        if (i < launch.len) {
            dst[zograd_shift().x + i] = launch.coef.x * dst[zograd_shift().x + i];
        }
    }
}

/// dst = scale (a constant).
@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let base = group_index(wg) * WG_SIZE * PER_THREAD + lid;
    for (var k = 0u; k < PER_THREAD; k = k + 1u) {
        let i = base + k * WG_SIZE;
        if (i < launch.len) {
            dst[zograd_shift().x + i] = launch.coef.x;
        }
    }
}

/// dst = sign(dst) (0 stays 0): ZO-SignSGD.
@compute @workgroup_size(256)
fn sign_update(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let base = group_index(wg) * WG_SIZE * PER_THREAD + lid;
    for (var k = 0u; k < PER_THREAD; k = k + 1u) {
        let i = base + k * WG_SIZE;
        if (i < launch.len) {
            dst[zograd_shift().x + i] = sign(dst[zograd_shift().x + i]);
        }
    }
}
