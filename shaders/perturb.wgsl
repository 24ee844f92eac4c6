// SPDX-License-Identifier: MIT OR Apache-2.0
// zograd — in-place perturbation: x[i] += scale * z(seed, step, sample, gbase + i).

@group(0) @binding(1) var<storage, read_write> x: array<f32>;

// Rademacher: a workgroup owns a tile of 4096 consecutive elements. The (at most) 33 Philox
// blocks of 128 elements that the tile touches are computed once, by 33 threads, into workgroup
// memory; every thread then applies 16 elements, 256 apart (coalesced).
const BITS_PER_THREAD: u32 = 16u;
const BITS_TILE: u32 = 4096u;        // WG_SIZE * BITS_PER_THREAD
const BITS_BLOCKS: u32 = 33u;        // BITS_TILE / 128 + 1 for a tile that starts mid-block
var<workgroup> words: array<u32, 132>;

@compute @workgroup_size(256)
fn perturb_rademacher(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let tile = group_index(wg);
    if (tile >= launch.n_groups) {
        return;
    }
    let tile_start = tile * BITS_TILE;
    let g = zograd_add64(launch.gbase, tile_start);
    let r = g.x & 127u;
    if (lid < BITS_BLOCKS) {
        let out = zograd_block(launch.seed, launch.step, launch.sample, zograd_add64(zograd_shr64(g, 7u), lid));
        words[4u * lid] = out.x;
        words[4u * lid + 1u] = out.y;
        words[4u * lid + 2u] = out.z;
        words[4u * lid + 3u] = out.w;
    }
    workgroupBarrier();
    let s = launch.scale;
    for (var k = 0u; k < BITS_PER_THREAD; k = k + 1u) {
        let local = k * WG_SIZE + lid;
        let idx = tile_start + local;
        if (idx < launch.len) {
            let rel = r + local;
            let bit = (words[rel >> 5u] >> (rel & 31u)) & 1u;
            x[idx] = x[idx] + select(-s, s, bit == 1u);
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
    let s = launch.scale;
    for (var lane = 0u; lane < 4u; lane = lane + 1u) {
        let p = p0 + lane;
        if (p >= r && p - r < launch.len) {
            x[p - r] = x[p - r] + s * z[lane];
        }
    }
}
