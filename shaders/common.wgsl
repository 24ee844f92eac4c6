// SPDX-License-Identifier: MIT OR Apache-2.0
// zograd — the launch uniform and grid helpers shared by every kernel.
//
// Every kernel processes one *chunk*: a range of at most `max_storage_buffer_binding_size` bytes
// of one parameter buffer, bound at binding 1 (or 2, 3). The uniform at binding 0 (a dynamic
// offset selects the chunk's slot) says where the chunk sits in the global element order.
// Grids past `max_compute_workgroups_per_dimension` groups use a second dimension.

struct Launch {
    gbase: vec2<u32>,   // global index (lo, hi) of the chunk's element 0
    seed: vec2<u32>,    // Philox key (seed lo, seed hi)
    len: u32,           // elements in the chunk
    groups_x: u32,      // workgroups along x of the grid
    n_groups: u32,      // workgroups that do work (the grid may have a few more)
    dist: u32,          // ZOGRAD_RADEMACHER / ZOGRAD_GAUSSIAN / ZOGRAD_UNIFORM
    step: u32,
    sample: u32,
    y_is_x: u32,        // dot_product: 1 when ys is xs (a squared norm: one load per element)
    out_offset: u32,    // reductions: first partial-sum slot of this chunk
    coef: vec4<f32>,    // the kernel's scalars: coef.x is the scale of perturb/axpy/scale/fill
    coef2: vec4<f32>,   // more scalars (Adam's bias corrections)
    shift: vec4<u32>,   // per storage binding 1, 2, 3, 4: index of the range's element 0 in
                        // the bound range (ranges that start off the storage offset alignment)
    mask: vec4<u32>,    // sparse directions: mask.x = the density threshold T (keep4 in
                        // philox.wgsl); read by the ZOGRAD_MASKED pipelines only
}

@group(0) @binding(0) var<uniform> launch: Launch;

// Whether this pipeline honours `launch.shift` (ranges bound from an aligned offset below their
// start). zograd builds each kernel plain (false: every shift is the constant 0 and the indices
// are those of whole buffers) and, for launches with a non-zero shift, shifted (true). With
// the shift read from the uniform in every pipeline, lavapipe ran the Rademacher perturb 20 %
// and the 8-term Rademacher accumulate 44 % slower; specialising on the shift value instead
// recompiled the shader for every new shift.
override ZOGRAD_SHIFTED: bool = false;

// Whether this pipeline draws sparse directions (`zograd::kernels::Mask` with a density below
// 1): the direction kernels are built plain (false, the mask is compiled out) and masked (true:
// each value is multiplied by its element's mask, `zograd_keep4`, with threshold launch.mask.x).
override ZOGRAD_MASKED: bool = false;

/// The shifts of the storage bindings 1, 2, 3, 4 (all 0 in plain pipelines).
fn zograd_shift() -> vec4<u32> {
    return select(vec4<u32>(0u), launch.shift, ZOGRAD_SHIFTED);
}
// Every kernel writes one f32 array: the chunk (perturb, accumulate, elementwise) or the
// partial sums (reductions).
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;

const WG_SIZE: u32 = 256u;

/// The linear index of a workgroup in the (possibly 2-D) grid.
fn group_index(wg: vec3<u32>) -> u32 {
    return wg.x + wg.y * launch.groups_x;
}

/// The Rademacher values of bits 4q .. 4q+3 of the Philox word `w`, times c: +c for a set bit,
/// -c for a clear one.
fn signed4(w: u32, q: u32, c: f32) -> vec4<f32> {
    let bits = (vec4<u32>(w >> (4u * q)) >> vec4<u32>(0u, 1u, 2u, 3u)) & vec4<u32>(1u);
    return select(vec4<f32>(-c), vec4<f32>(c), bits == vec4<u32>(1u));
}

/// dst[p - r + e] += v[e] for the lanes e that fall inside the chunk. Kernels whose threads own
/// aligned Philox words or blocks count p from the boundary before the chunk, r elements
/// earlier.
fn add4(p: u32, r: u32, v: vec4<f32>) {
    for (var e = 0u; e < 4u; e = e + 1u) {
        let q = p + e;
        if (q >= r && q - r < launch.len) {
            let j = zograd_shift().x + q - r;
            dst[j] = dst[j] + v[e];
        }
    }
}
