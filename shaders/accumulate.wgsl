// SPDX-License-Identifier: MIT OR Apache-2.0
// zograd — multi-sample accumulation in one pass over g:
//   g[i] += sum_t coeff_t * z(seed, step, sample_t, gbase + i)
// The sum runs over the terms in order, from 0, and is added to g once, so g is read and written
// once whatever the number of terms.

@group(0) @binding(1) var<storage, read_write> g: array<f32>;
// (sample, bitcast<u32>(coeff)) per term.
@group(0) @binding(2) var<storage, read> terms: array<vec2<u32>>;

const BITS_PER_THREAD: u32 = 16u;
const BITS_TILE: u32 = 4096u;
const BITS_BLOCKS: u32 = 33u;
const TERMS_PER_BATCH: u32 = 8u;
// TERMS_PER_BATCH terms × BITS_BLOCKS blocks × 4 words.
var<workgroup> words: array<u32, 1056>;

@compute @workgroup_size(256)
fn accumulate_rademacher(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let tile = group_index(wg);
    if (tile >= launch.n_groups) {
        return;
    }
    let tile_start = tile * BITS_TILE;
    let g64 = zograd_add64(launch.gbase, tile_start);
    let first = zograd_shr64(g64, 7u);
    let r = g64.x & 127u;
    var acc: array<f32, 16>;
    for (var k = 0u; k < BITS_PER_THREAD; k = k + 1u) {
        acc[k] = 0.0;
    }
    for (var t0 = 0u; t0 < launch.n_terms; t0 = t0 + TERMS_PER_BATCH) {
        let nb = min(TERMS_PER_BATCH, launch.n_terms - t0);
        for (var j = lid; j < BITS_BLOCKS * nb; j = j + WG_SIZE) {
            let t = j / BITS_BLOCKS;
            let b = j % BITS_BLOCKS;
            let out = zograd_block(launch.seed, launch.step, terms[t0 + t].x, zograd_add64(first, b));
            let w = 4u * j;
            words[w] = out.x;
            words[w + 1u] = out.y;
            words[w + 2u] = out.z;
            words[w + 3u] = out.w;
        }
        workgroupBarrier();
        for (var t = 0u; t < nb; t = t + 1u) {
            let c = bitcast<f32>(terms[t0 + t].y);
            let base = t * 4u * BITS_BLOCKS;
            for (var k = 0u; k < BITS_PER_THREAD; k = k + 1u) {
                let rel = r + k * WG_SIZE + lid;
                let bit = (words[base + (rel >> 5u)] >> (rel & 31u)) & 1u;
                acc[k] = acc[k] + select(-c, c, bit == 1u);
            }
        }
        workgroupBarrier();
    }
    for (var k = 0u; k < BITS_PER_THREAD; k = k + 1u) {
        let idx = tile_start + k * WG_SIZE + lid;
        if (idx < launch.len) {
            g[idx] = g[idx] + acc[k];
        }
    }
}

@compute @workgroup_size(256)
fn accumulate_quad(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let t = group_index(wg) * WG_SIZE + lid;
    let r = launch.gbase.x & 3u;
    let p0 = 4u * t;
    if (p0 >= launch.len + r) {
        return;
    }
    let blk = zograd_add64(zograd_shr64(launch.gbase, 2u), t);
    var acc = vec4<f32>(0.0);
    for (var i = 0u; i < launch.n_terms; i = i + 1u) {
        let term = terms[i];
        let out = zograd_block(launch.seed, launch.step, term.x, blk);
        var z: vec4<f32>;
        if (launch.dist == ZOGRAD_GAUSSIAN) {
            z = zograd_gaussian4(out);
        } else {
            z = zograd_uniform4(out);
        }
        acc = acc + bitcast<f32>(term.y) * z;
    }
    for (var lane = 0u; lane < 4u; lane = lane + 1u) {
        let p = p0 + lane;
        if (p >= r && p - r < launch.len) {
            g[p - r] = g[p - r] + acc[lane];
        }
    }
}
