// SPDX-License-Identifier: MIT OR Apache-2.0
// zograd — the batch interface of a `BatchObjective`: bind group 1 of the user's shader, exported
// as `zograd::wgsl::BATCH`. It follows `shaders/philox.wgsl` (BatchObjective::new prepends both).
//
// A batch is a list of points x + scale_p * z(seed, step, sample_p, .), p = 0 .. count - 1, all
// with the same distribution, seed and step (those live in the uniform; each point has its own
// sample and scale). The user's passes evaluate the loss at every point without writing x,
// regenerating z on the fly, and store the loss of point p with `zograd_set_loss(p, value)`.
// Sphere directions arrive as Gaussian ones with the factor sqrt(n)/|z| folded into the scales.

struct ZogradBatch {
    seed: vec2<u32>,   // Philox key (seed lo, seed hi)
    step: u32,         // Philox counter word 3
    dist: u32,         // ZOGRAD_RADEMACHER, ZOGRAD_GAUSSIAN (also Sphere) or ZOGRAD_UNIFORM
    count: u32,        // points in this dispatch
    first: u32,        // index of this dispatch's point 0 in zograd_points / zograd_losses
    threshold: u32,    // sparse directions: the density threshold T of zograd_keep4 (0: dense)
    reserved1: u32,
}

struct ZogradPoint {
    sample: u32,       // Philox counter word 2
    scale: f32,        // the point is x + scale * z(seed, step, sample, .)
}

@group(1) @binding(0) var<uniform> zograd_batch: ZogradBatch;
@group(1) @binding(1) var<storage, read> zograd_points: array<ZogradPoint>;
@group(1) @binding(2) var<storage, read_write> zograd_losses: array<f32>;

/// Points in this dispatch; point indices p run over 0 .. zograd_point_count() - 1.
fn zograd_point_count() -> u32 {
    return zograd_batch.count;
}

/// Point p of this dispatch (its sample and scale).
fn zograd_point(p: u32) -> ZogradPoint {
    return zograd_points[zograd_batch.first + p];
}

/// The Philox block `block` of point p's direction: for Rademacher, block i / 128 holds the 128
/// signs of elements 128·block .. 128·block + 127 (see `zograd_rademacher`); for the other
/// distributions block i / 4 gives four values through `zograd_quad`.
fn zograd_point_block(p: u32, block: vec2<u32>) -> vec4<u32> {
    return zograd_block(zograd_batch.seed, zograd_batch.step, zograd_point(p).sample, block);
}

/// ±1: element j (0 .. 127) of a Rademacher block.
fn zograd_rademacher(out: vec4<u32>, j: u32) -> f32 {
    return select(-1.0, 1.0, ((out[(j >> 5u) & 3u] >> (j & 31u)) & 1u) == 1u);
}

/// The four values of a Gaussian or uniform block (the batch's distribution).
fn zograd_quad(out: vec4<u32>) -> vec4<f32> {
    if (zograd_batch.dist == ZOGRAD_GAUSSIAN) {
        return zograd_gaussian4(out);
    }
    return zograd_uniform4(out);
}

/// Sparse directions (`Sampler::density`): the factor of element `index` of point p's direction,
/// 1/sqrt(density) where the mask keeps it and 0 where it drops it (`zograd_keep4`); 1 for dense
/// directions. `zograd_dz` applies it; multiply the values of `zograd_rademacher` and
/// `zograd_quad` by it when the shader handles sparse directions
/// (`BatchObjective::handles_sparse_directions`).
fn zograd_point_mask(p: u32, index: vec2<u32>) -> f32 {
    let t = zograd_batch.threshold;
    if (t == 0u || t >= 65536u) {
        return 1.0;
    }
    let keep = zograd_keep4(zograd_batch.seed, zograd_batch.step, zograd_point(p).sample, zograd_shr64(index, 2u), t)[index.x & 3u];
    return keep * inverseSqrt(f32(t) * 1.52587890625e-5);
}

/// scale_p · u_p(index) for one element (index = (lo, hi) of the global element index), the
/// sparse mask included: convenient, but one Philox evaluation per call (two with a sparse
/// mask); loops over many elements share a block through `zograd_point_block`.
fn zograd_dz(p: u32, index: vec2<u32>) -> f32 {
    let pt = zograd_point(p);
    return pt.scale * zograd_z(zograd_batch.dist, zograd_batch.seed, zograd_batch.step, pt.sample, index) * zograd_point_mask(p, index);
}

/// The common-random-numbers seed of point p as (lo, hi): words 0 and 1 of Philox at counter
/// (sample_p, 0, step, 0x43524E00) with the batch's key, the `crn_seed` of the point's
/// `zograd::Evaluation` (`Evaluation::pair_seed`). The points of one sample share it; draw a
/// simulation's noise from it for common random numbers. (The unperturbed point of
/// `BatchObjective::evaluate` has no estimator identity: seed, step and sample 0.)
fn zograd_crn_seed(p: u32) -> vec2<u32> {
    let ctr = vec4<u32>(zograd_point(p).sample, 0u, zograd_batch.step, 0x43524E00u);
    return zograd_philox(ctr, zograd_batch.seed).xy;
}

/// Stores the loss of point p (read back after the last pass).
fn zograd_set_loss(p: u32, value: f32) {
    zograd_losses[zograd_batch.first + p] = value;
}
