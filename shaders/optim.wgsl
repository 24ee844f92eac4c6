// SPDX-License-Identifier: MIT OR Apache-2.0
// zograd — optimiser modules with state: each reads and writes the update (binding 1) and its
// state buffers (bindings 2, 3) once per element, 4 elements per thread, 256 apart.

@group(0) @binding(2) var<storage, read_write> state1: array<f32>;
@group(0) @binding(3) var<storage, read_write> state2: array<f32>;

const PER_THREAD: u32 = 4u;

/// Heavy-ball momentum, m = coef.x: v = m * v + u; u = v.
@compute @workgroup_size(256)
fn heavy_ball(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let base = group_index(wg) * WG_SIZE * PER_THREAD + lid;
    for (var k = 0u; k < PER_THREAD; k = k + 1u) {
        let i = base + k * WG_SIZE;
        if (i < launch.len) {
            let v = launch.coef.x * state1[zograd_shift().y + i] + dst[zograd_shift().x + i];
            state1[zograd_shift().y + i] = v;
            dst[zograd_shift().x + i] = v;
        }
    }
}

/// Adam with bias correction: coef = (beta1, beta2, eps, _), coef2 = (1/(1-beta1^t), 1/(1-beta2^t)).
/// m = b1 m + (1 - b1) u; v = b2 v + (1 - b2) u^2; u = (m c1) / (sqrt(v c2) + eps).
@compute @workgroup_size(256)
fn adam(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let base = group_index(wg) * WG_SIZE * PER_THREAD + lid;
    let b1 = launch.coef.x;
    let b2 = launch.coef.y;
    let eps = launch.coef.z;
    let c1 = launch.coef2.x;
    let c2 = launch.coef2.y;
    for (var k = 0u; k < PER_THREAD; k = k + 1u) {
        let i = base + k * WG_SIZE;
        if (i < launch.len) {
            let u = dst[zograd_shift().x + i];
            let m = b1 * state1[zograd_shift().y + i] + (1.0 - b1) * u;
            let v = b2 * state2[zograd_shift().z + i] + (1.0 - b2) * u * u;
            state1[zograd_shift().y + i] = m;
            state2[zograd_shift().z + i] = v;
            dst[zograd_shift().x + i] = (m * c1) / (sqrt(v * c2) + eps);
        }
    }
}
