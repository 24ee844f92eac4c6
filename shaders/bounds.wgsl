// SPDX-License-Identifier: MIT OR Apache-2.0
// zograd — box bounds (`Params::set_bounds`): the projection x ← clamp(x, lo, hi) on one chunk.
// Each thread handles 4 elements, 256 apart (coalesced), as the elementwise kernels.

@group(0) @binding(2) var<storage, read> lower: array<f32>;
@group(0) @binding(3) var<storage, read> upper: array<f32>;

const PER_THREAD: u32 = 4u;

/// dst = min(max(dst, lower), upper): a bound of ±inf leaves that side open; a NaN element
/// stays NaN only where the adapter's min/max propagate it (WGSL leaves it unspecified).
@compute @workgroup_size(256)
fn project(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let base = group_index(wg) * WG_SIZE * PER_THREAD + lid;
    for (var k = 0u; k < PER_THREAD; k = k + 1u) {
        let i = base + k * WG_SIZE;
        if (i < launch.len) {
            let d = zograd_shift().x + i;
            dst[d] = min(max(dst[d], lower[zograd_shift().y + i]), upper[zograd_shift().z + i]);
        }
    }
}
