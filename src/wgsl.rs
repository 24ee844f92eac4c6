// SPDX-License-Identifier: MIT OR Apache-2.0
//! WGSL sources exported for users' shaders.

/// The WGSL source of zograd's Philox4x32-10 generator and distributions
/// (`shaders/philox.wgsl`), for a user's shader that must regenerate zograd's perturbations,
/// e.g. to evaluate f(x + h·z) on the fly without writing x.
///
/// Prepend it to your shader source. 64-bit quantities are `vec2<u32>(lo, hi)`. The entry point
/// for one element is
///
/// ```wgsl
/// fn zograd_z(dist: u32, seed: vec2<u32>, step: u32, sample: u32, index: vec2<u32>) -> f32
/// ```
///
/// with `dist` one of `ZOGRAD_RADEMACHER` (0), `ZOGRAD_GAUSSIAN` (1), `ZOGRAD_UNIFORM` (2); for
/// [`Distribution::Sphere`](crate::Distribution::Sphere) use the Gaussian and multiply by
/// `√n / ‖z‖` (see [`crate::kernels::sphere_norm`]). `zograd_block` gives a whole Philox block,
/// from which `zograd_gaussian4` / `zograd_uniform4` make four values at once and a Rademacher
/// block yields 128 signs (bit `i % 32` of word `(i % 128) / 32` of block `i / 128`). All names
/// start with `zograd_` / `ZOGRAD_` to stay out of the way of the user's own.
///
/// ```
/// let src = format!("{}\n@compute @workgroup_size(64) fn main() {{}}", zograd::wgsl::PHILOX);
/// assert!(src.contains("fn zograd_z("));
/// ```
pub const PHILOX: &str = crate::gpu::shaders::PHILOX;

/// The WGSL declarations of a [`BatchObjective`](crate::BatchObjective)'s bind group 1
/// (`shaders/batch.wgsl`): the `ZogradBatch` uniform, the `ZogradPoint` array, the losses
/// array, and the helpers `zograd_point_count`, `zograd_point`, `zograd_point_block`,
/// `zograd_rademacher`, `zograd_quad`, `zograd_dz` and `zograd_set_loss`.
///
/// [`BatchObjective::new`](crate::BatchObjective::new) compiles `PHILOX + BATCH + your source`;
/// this constant is exported for reading and for validating a shader offline (e.g. with naga).
///
/// ```
/// assert!(zograd::wgsl::BATCH.contains("fn zograd_set_loss("));
/// ```
pub const BATCH: &str = crate::gpu::shaders::BATCH;
