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
    scale: f32,
    n_terms: u32,       // accumulate: entries of `terms`
    out_offset: u32,    // reductions: first partial-sum slot of this chunk
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

@group(0) @binding(0) var<uniform> launch: Launch;

const WG_SIZE: u32 = 256u;

/// The linear index of a workgroup in the (possibly 2-D) grid.
fn group_index(wg: vec3<u32>) -> u32 {
    return wg.x + wg.y * launch.groups_x;
}
