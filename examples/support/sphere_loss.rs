// SPDX-License-Identifier: MIT OR Apache-2.0
//! The quadratic f(x) = Σᵢ xᵢ² written as a user's WGSL loss, in two forms over the same
//! buffers: a [`BatchObjective`] that evaluates a whole batch of perturbed points
//! x + scale_p·z_p in one pass over x (Rademacher directions), and a plain [`ShaderObjective`]
//! for f(x) itself (the one-at-a-time path). Both sum in the same order, so for points that are
//! exact in f32 they give bit-identical losses. Shared by `examples/population.rs` and
//! `examples/bench_report.rs` (included with `#[path]`).
//!
//! The batched pass: a thread owns 4 Philox blocks (512 elements) and walks the points in tiles
//! of (up to) 16: it loads each xᵢ once per tile and updates 16 sums, taking the signs from one Philox
//! block per 128 elements and sample (consecutive points of one sample — the +h and −h points of
//! central differences — share it). Per point and thread it writes one partial sum; a second
//! pass (one workgroup per point) adds them in order. Loads are what a software adapter pays
//! most for (lavapipe gathers each lane's element with a bounds check), so amortising them over
//! a tile of points is what makes batching pay there; on a real GPU the same layout keeps x in
//! cache for the tile.

use wgpu::util::DeviceExt;
use zograd::wgsl::{BATCH, PHILOX};
use zograd::{BatchObjective, Binding, Gpu, Params, ShaderObjective, Workgroups};

/// Philox blocks (of 128 elements) per thread; the WGSL's `BLOCKS`.
const BLOCKS_PER_THREAD: u32 = 4;

/// The loss's WGSL: `batch_partials` + `batch_finish` for a batch of points, `plain_partials` +
/// `plain_finish` for f(x), with the same summation order. `TILE_POINTS` is replaced by the
/// tile size (see [`SphereLoss::new`]).
const SPHERE_WGSL: &str = r#"
struct Dims { n: u32, threads: u32, plain_slot: u32, pad: u32 }
@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> x: array<f32>;
// partial[p * threads + thread]; the plain loss goes to partial[plain_slot].
@group(0) @binding(2) var<storage, read_write> partial: array<f32>;

const BLOCKS: u32 = 4u;
/// Points evaluated per load of x.
const TILE: u32 = TILE_POINTSu;
var<workgroup> sums: array<f32, 64>;

/// Per point p of the batch: Σ (x_i + scale_p·z_p,i)² over this thread's elements.
@compute @workgroup_size(64)
fn batch_partials(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    if (t >= dims.threads) {
        return;
    }
    let count = zograd_point_count();
    for (var p0 = 0u; p0 < count; p0 = p0 + TILE) {
        var scale: array<f32, TILE>;
        var sample: array<u32, TILE>;
        var acc: array<f32, TILE>;
        for (var q = 0u; q < TILE; q = q + 1u) {
            // Points past the end of the batch repeat the last one with scale 0 (ignored).
            let pt = zograd_point(min(p0 + q, count - 1u));
            scale[q] = select(0.0, pt.scale, p0 + q < count);
            sample[q] = pt.sample;
            acc[q] = 0.0;
        }
        for (var k = 0u; k < BLOCKS; k = k + 1u) {
            let blk = t * BLOCKS + k;
            let base = blk * 128u;
            if (base >= dims.n) {
                break;
            }
            var block: array<vec4<u32>, TILE>;
            block[0] = zograd_block(zograd_batch.seed, zograd_batch.step, sample[0], vec2<u32>(blk, 0u));
            for (var q = 1u; q < TILE; q = q + 1u) {
                if (sample[q] == sample[q - 1u]) {
                    block[q] = block[q - 1u];
                } else {
                    block[q] = zograd_block(zograd_batch.seed, zograd_batch.step, sample[q], vec2<u32>(blk, 0u));
                }
            }
            for (var w = 0u; w < 4u; w = w + 1u) {
                var bits: array<u32, TILE>;
                for (var q = 0u; q < TILE; q = q + 1u) {
                    bits[q] = block[q][w];
                }
                let first = base + 32u * w;
                let len = min(32u, max(dims.n, first) - first);
                for (var j = 0u; j < len; j = j + 1u) {
                    let xi = x[first + j];
                    for (var q = 0u; q < TILE; q = q + 1u) {
                        let v = xi + select(-scale[q], scale[q], (bits[q] & 1u) == 1u);
                        acc[q] = acc[q] + v * v;
                        bits[q] = bits[q] >> 1u;
                    }
                }
            }
        }
        for (var q = 0u; q < TILE; q = q + 1u) {
            if (p0 + q < count) {
                partial[(p0 + q) * dims.threads + t] = acc[q];
            }
        }
    }
}

/// Σ x_i² over this thread's elements, in the order of `batch_partials`.
@compute @workgroup_size(64)
fn plain_partials(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x;
    if (t >= dims.threads) {
        return;
    }
    var s = 0.0;
    let first = t * BLOCKS * 128u;
    let len = min(BLOCKS * 128u, max(dims.n, first) - first);
    for (var j = 0u; j < len; j = j + 1u) {
        let v = x[first + j];
        s = s + v * v;
    }
    partial[t] = s;
}

/// The sum of partial[first .. first + threads], by 64 threads and a tree.
fn total(first: u32, lid: u32) -> f32 {
    var s = 0.0;
    for (var k = lid; k < dims.threads; k = k + 64u) {
        s = s + partial[first + k];
    }
    sums[lid] = s;
    workgroupBarrier();
    for (var w = 32u; w > 0u; w = w >> 1u) {
        if (lid < w) {
            sums[lid] = sums[lid] + sums[lid + w];
        }
        workgroupBarrier();
    }
    return sums[0];
}

@compute @workgroup_size(64)
fn batch_finish(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let v = total(wg.z * dims.threads, lid);
    if (lid == 0u) {
        zograd_set_loss(wg.z, v);
    }
}

@compute @workgroup_size(64)
fn plain_finish(@builtin(local_invocation_index) lid: u32) {
    let v = total(0u, lid);
    if (lid == 0u) {
        partial[dims.plain_slot] = v;
    }
}
"#;

/// f(x) = Σ xᵢ² over the single buffer of `x`, batched (up to `max_points` points per
/// dispatch) and plain.
pub struct SphereLoss {
    /// All points of a batch in one pass over x, one readback.
    pub batched: BatchObjective,
    /// f(x) as it is: one pass, one readback.
    pub plain: ShaderObjective,
}

impl SphereLoss {
    /// Builds both objectives over `x` (one buffer). The batched pass works on tiles of
    /// min(16, `max_points`) points (rounded up to a power of two): 2 for MeZO's pair of points.
    pub fn new(gpu: &Gpu, x: &Params, max_points: u32) -> zograd::Result<Self> {
        assert_eq!(x.buffers().len(), 1, "the example loss reads one buffer");
        let tile = max_points.clamp(1, 16).next_power_of_two();
        let wgsl = SPHERE_WGSL.replace("TILE_POINTS", &tile.to_string());
        let n = x.len() as u32;
        let threads = n.div_ceil(128 * BLOCKS_PER_THREAD);
        let slot = max_points * threads;
        let dims = gpu
            .device()
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("dims"),
                contents: bytemuck::cast_slice(&[n, threads, slot, 0]),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        let partial = ShaderObjective::loss_buffer(gpu, u64::from(slot) + 1)?;
        let bindings = [
            Binding::Uniform(&dims),
            Binding::Read(&x.buffers()[0]),
            Binding::ReadWrite(&partial),
        ];
        let groups = threads.div_ceil(64);
        let batched = BatchObjective::new(
            gpu,
            &wgsl,
            &bindings,
            &[
                ("batch_partials", Workgroups::Fixed([groups, 1, 1])),
                ("batch_finish", Workgroups::PerPoint([1, 1])),
            ],
            max_points,
        )?;
        // The plain passes use no batch binding; the module still needs the declarations.
        let plain = ShaderObjective::new(
            gpu,
            &format!("{PHILOX}\n{BATCH}\n{wgsl}"),
            &bindings,
            &[
                ("plain_partials", [groups, 1, 1]),
                ("plain_finish", [1, 1, 1]),
            ],
            (&partial, 4 * u64::from(slot)),
        )?;
        Ok(Self { batched, plain })
    }
}
