// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`BatchObjective`]: a loss written in WGSL that evaluates a whole batch of perturbed points
//! `x + scale·z(seed, step, sample, ·)` in one dispatch, regenerating z on the fly, without
//! writing x.

use std::fmt;
use std::ops::Range;

use crate::gpu::program::{BatchBuffers, BatchUniform, Program};
use crate::kernels::{Direction, Mask};
use crate::{Binding, Distribution, Error, Gpu, Objective, Params, Result};

/// How many workgroups a pass of a [`BatchObjective`] dispatches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workgroups {
    /// The same grid `[x, y, z]` whatever the number of points (a pass that loops over the
    /// points itself, e.g. the pass that reads x once for all of them).
    Fixed([u32; 3]),
    /// `[x, y]` workgroups per point: the grid is `[x, y, count]` and `workgroup_id.z` is the
    /// point index p (e.g. a pass that reduces each point's partial sums).
    PerPoint([u32; 2]),
}

/// A loss computed by the user's WGSL that evaluates many perturbed points in **one dispatch**:
/// f(x + scale_p·z(seed, step, sample_p, ·)) for p = 0 … P−1, with z regenerated on the fly
/// from zograd's Philox stream (README, "Random-number contract") and x never written. It
/// implements [`Objective`] with [`has_batch`](Objective::has_batch) = true, so the random
/// estimators ([`Spsa`](crate::approx::Spsa), [`MeZo`](crate::approx::MeZo), …) hand all S
/// samples' formula points to one [`loss_batch`](Objective::loss_batch) call: one submission
/// and **one readback** per estimate, instead of a perturb pass, a loss pass and a readback per
/// point.
///
/// # The shader
/// The module compiled is [`wgsl::PHILOX`](crate::wgsl::PHILOX), then
/// [`wgsl::BATCH`](crate::wgsl::BATCH), then your source (do not include the first two
/// yourself). Your bindings sit in **group 0** exactly as for a
/// [`ShaderObjective`](crate::ShaderObjective) (binding k = `bindings[k]`, the parameter buffers
/// among them); zograd binds **group 1**:
///
/// ```wgsl
/// struct ZogradBatch { seed: vec2<u32>, step: u32, dist: u32, count: u32, first: u32,
///                      threshold: u32, reserved1: u32 }
/// struct ZogradPoint { sample: u32, scale: f32 }
/// @group(1) @binding(0) var<uniform> zograd_batch: ZogradBatch;          // one per dispatch
/// @group(1) @binding(1) var<storage, read> zograd_points: array<ZogradPoint>;
/// @group(1) @binding(2) var<storage, read_write> zograd_losses: array<f32>;
/// ```
///
/// Point p (0 ≤ p < `zograd_point_count()`) is `x + scale_p·z(seed, step, sample_p, ·)`; the
/// helpers handle the `first` offset, so use them rather than the arrays:
///
/// | helper | gives |
/// |---|---|
/// | `zograd_point_count() -> u32` | points in this dispatch |
/// | `zograd_point(p) -> ZogradPoint` | sample and scale of point p |
/// | `zograd_dz(p, index: vec2<u32>) -> f32` | scale_p·u_p(i) for one element (one Philox call; the sparse mask included) |
/// | `zograd_point_mask(p, index: vec2<u32>) -> f32` | sparse directions: 1/√density where point p's mask keeps element i, 0 where it drops it, 1 when dense |
/// | `zograd_point_block(p, block: vec2<u32>) -> vec4<u32>` | point p's Philox block (Rademacher: block i/128, 128 signs; others: block i/4, 4 values) |
/// | `zograd_rademacher(out, j) -> f32` | ±1 of element j (0‥127) of a Rademacher block |
/// | `zograd_quad(out) -> vec4<f32>` | the 4 values of a Gaussian / uniform block |
/// | `zograd_crn_seed(p) -> vec2<u32>` | point p's common-random-numbers seed (lo, hi): [`Evaluation::crn_seed`](crate::Evaluation::crn_seed), the same for the points of one sample |
/// | `zograd_set_loss(p, value)` | stores the loss of point p |
///
/// All points of one dispatch share the distribution, seed and step (`zograd_batch.dist` is
/// `ZOGRAD_RADEMACHER`, `ZOGRAD_GAUSSIAN` or `ZOGRAD_UNIFORM`); a batch whose points differ in
/// them, or that has more than `max_points` points, runs as several dispatches in the same
/// submission, still with one readback (the readback's copy is recorded into the same
/// submission as the passes). [`Distribution::Sphere`] points arrive as Gaussian ones
/// with √n/‖z‖ folded into the scale (one reduction per new (seed, step, sample), computed by
/// [`crate::kernels::sphere_norm`]'s cached path; n = the `Params` passed to `loss_batch`).
/// Elements are indexed globally (buffer k starts at [`Params::offsets`]`[k]`).
///
/// Each pass is an entry point with its [`Workgroups`]; the passes run in order, all in one
/// compute pass, once per dispatch. [`loss`](Objective::loss) (and
/// [`evaluate`](BatchObjective::evaluate)) evaluates the unperturbed point: one point with
/// scale 0.
///
/// Pipelines, bind groups and buffers are created in [`new`](BatchObjective::new); the batch
/// buffers grow (once) when a batch needs more room than the largest before.
///
/// # Example
/// f(x) = Σ xᵢ² over one buffer of n elements, one thread per element and point (a real loss
/// would give each thread many elements and reduce in a second pass, see
/// `examples/population.rs`):
///
/// ```
/// use zograd::approx::{GradApproximator, Spsa};
/// use zograd::{BatchObjective, Binding, Gpu, Params, Workgroups};
/// # fn main() -> zograd::Result<()> {
/// let gpu = Gpu::new()?;
/// let mut x = Params::from_slices(&gpu, &[&[0.5f32; 64][..]])?;
/// let wgsl = "
///     @group(0) @binding(0) var<storage, read> x: array<f32>;
///     @compute @workgroup_size(1)
///     fn main(@builtin(workgroup_id) wg: vec3<u32>) {
///         let p = wg.z;
///         var s = 0.0;
///         for (var i = 0u; i < 64u; i++) {
///             let v = x[i] + zograd_dz(p, vec2<u32>(i, 0u));
///             s += v * v;
///         }
///         zograd_set_loss(p, s);
///     }";
/// let mut loss = BatchObjective::new(
///     &gpu,
///     wgsl,
///     &[Binding::Read(&x.buffers()[0])],
///     &[("main", Workgroups::PerPoint([1, 1]))],
///     64,
/// )?;
/// assert_eq!(loss.evaluate()?, 16.0);
/// let mut g = x.zeros_like()?;
/// // 8 samples × 2 points: one dispatch, one readback.
/// let e = Spsa::new().n_samples(8).seed(1).approximate(&gpu, &mut x, &mut loss, &mut g)?;
/// assert_eq!((e.evaluations, loss.readbacks()), (16, 2));
/// # Ok(()) }
/// ```
pub struct BatchObjective {
    gpu: Gpu,
    program: Program<Workgroups>,
    max_points: u32,
    batch: BatchBuffers,
    evaluations: u64,
    readbacks: u64,
    /// Whether the shader applies the sparse mask ([`BatchObjective::handles_sparse_directions`]).
    sparse: bool,
}

impl fmt::Debug for BatchObjective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchObjective")
            .field("passes", &self.program.passes())
            .field("max_points", &self.max_points)
            .field("evaluations", &self.evaluations)
            .field("readbacks", &self.readbacks)
            .finish_non_exhaustive()
    }
}

impl BatchObjective {
    /// Compiles `PHILOX + BATCH + wgsl`, binds `bindings` at group 0 (binding k = `bindings[k]`)
    /// and zograd's batch buffers at group 1, and prepares the `passes` (entry point,
    /// workgroups), run in order for every dispatch. A dispatch holds at most `max_points`
    /// points: size the shader's own scratch (partial sums per point) for that many.
    ///
    /// # Errors
    /// [`Error::Validation`] for WGSL or binding errors (the message is wgpu's; line numbers
    /// count from the start of the prepended sources); [`Error::InvalidArgument`] for no passes,
    /// `max_points = 0`, or `max_points` above the adapter's
    /// `max_compute_workgroups_per_dimension` (the z extent of [`Workgroups::PerPoint`]).
    pub fn new(
        gpu: &Gpu,
        wgsl: &str,
        bindings: &[Binding<'_>],
        passes: &[(&str, Workgroups)],
        max_points: u32,
    ) -> Result<Self> {
        if passes.is_empty() {
            return Err(Error::invalid(
                "passes: at least one compute pass is needed",
            ));
        }
        let max_z = gpu.limits().max_compute_workgroups_per_dimension;
        if max_points == 0 || max_points > max_z {
            return Err(Error::invalid(format!(
                "max_points: must be in 1..={max_z} (the adapter's workgroups per dimension), \
                 got {max_points}"
            )));
        }
        let source = format!(
            "{}\n{}\n{}",
            crate::gpu::shaders::PHILOX,
            crate::gpu::shaders::BATCH,
            wgsl
        );
        let program = Program::new(
            gpu,
            "zograd::BatchObjective",
            &source,
            bindings,
            passes,
            true,
        )?;
        let batch = BatchBuffers::new(gpu, &program, max_points as usize, 1)?;
        Ok(Self {
            gpu: gpu.clone(),
            program,
            max_points,
            batch,
            evaluations: 0,
            readbacks: 0,
            sparse: false,
        })
    }

    /// f at the bound parameters as they are: one point with scale 0 (one dispatch, one
    /// readback).
    ///
    /// # Errors
    /// Device errors.
    pub fn evaluate(&mut self) -> Result<f32> {
        let here = Direction {
            distribution: Distribution::Rademacher,
            seed: 0,
            step: 0,
            sample: 0,
        };
        Ok(self.run(&[(here, 0.0)], None, 0)?[0])
    }

    /// The losses at `points` = (direction, scale), in order, for parameters of `n` elements
    /// (n matters only for [`Distribution::Sphere`]): [`Objective::loss_batch`] without a
    /// `Params`. One submission and one readback whatever the number of points.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a non-finite scale; device errors.
    pub fn evaluate_points(&mut self, n: u64, points: &[(Direction, f32)]) -> Result<Vec<f32>> {
        self.run(points, Some(n), 0)
    }

    /// Declares that the shader applies the sparse-direction mask (default false): it reads the
    /// directions only through `zograd_dz`, or multiplies the values of `zograd_rademacher` and
    /// `zograd_quad` by `zograd_point_mask`. The estimators then batch sparse directions
    /// ([`Sampler::density`](crate::approx::Sampler::density)) through this objective; without
    /// it, and always with frozen buffers or a magnitude mask (which the shader cannot see), they
    /// perturb x in place and call [`evaluate`](BatchObjective::evaluate) per point.
    #[must_use]
    pub fn handles_sparse_directions(mut self, handles: bool) -> Self {
        self.sparse = handles;
        self
    }

    /// The most points one dispatch holds.
    #[must_use]
    pub fn max_points(&self) -> u32 {
        self.max_points
    }

    /// Points evaluated so far ([`evaluate`](BatchObjective::evaluate) counts one).
    #[must_use]
    pub fn evaluations(&self) -> u64 {
        self.evaluations
    }

    /// Readbacks so far: one per [`evaluate`](BatchObjective::evaluate),
    /// [`evaluate_points`](BatchObjective::evaluate_points) or non-empty
    /// [`loss_batch`](Objective::loss_batch) call.
    #[must_use]
    pub fn readbacks(&self) -> u64 {
        self.readbacks
    }

    /// Runs the points: consecutive points with the same (distribution, seed, step) share a
    /// dispatch of at most `max_points`; every dispatch goes into one submission; one readback.
    fn run(
        &mut self,
        points: &[(Direction, f32)],
        n: Option<u64>,
        threshold: u32,
    ) -> Result<Vec<f32>> {
        if points.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(k) = points.iter().position(|(_, s)| !s.is_finite()) {
            return Err(Error::invalid(format!(
                "points[{k}]: the scale must be finite, got {}",
                points[k].1
            )));
        }
        let runs = runs(points, self.max_points as usize);
        let mut packed: Vec<[u32; 2]> = Vec::with_capacity(points.len());
        let mut uniforms = Vec::with_capacity(runs.len());
        for r in &runs {
            let dir = points[r.start].0;
            let scales: Vec<f32> = if dir.distribution == Distribution::Sphere {
                let n = n.ok_or_else(|| {
                    Error::invalid("points: Sphere directions need the number of parameters")
                })?;
                let samples: Vec<u32> = points[r.clone()].iter().map(|p| p.0.sample).collect();
                let norms = self.gpu.sphere_norms(dir.seed, dir.step, &samples, n)?;
                points[r.clone()]
                    .iter()
                    .zip(norms)
                    .map(|((_, s), norm)| (f64::from(*s) * (n as f64).sqrt() / norm) as f32)
                    .collect()
            } else {
                points[r.clone()].iter().map(|p| p.1).collect()
            };
            for ((d, _), s) in points[r.clone()].iter().zip(scales) {
                packed.push([d.sample, s.to_bits()]);
            }
            uniforms.push(BatchUniform {
                seed: [dir.seed as u32, (dir.seed >> 32) as u32],
                step: dir.step,
                dist: dir.distribution.code(),
                count: r.len() as u32,
                first: r.start as u32,
                threshold,
                reserved: 0,
            });
        }
        if !self.batch.fits(points.len(), runs.len()) {
            let (capacity, slots) = self.batch.room();
            self.batch = BatchBuffers::new(
                &self.gpu,
                &self.program,
                points.len().max(capacity),
                runs.len().max(slots),
            )?;
        }
        // The passes and the readback of the losses: one submission.
        let out = self.program.run_batch(
            &self.gpu,
            &self.batch,
            &uniforms,
            &packed,
            |groups, count| match groups {
                Workgroups::Fixed(g) => g,
                Workgroups::PerPoint([x, y]) => [x, y, count],
            },
        )?;
        self.evaluations += points.len() as u64;
        self.readbacks += 1;
        Ok(out)
    }
}

/// Consecutive ranges of points with the same distribution, seed and step, each at most `max`
/// long.
fn runs(points: &[(Direction, f32)], max: usize) -> Vec<Range<usize>> {
    let key = |d: &Direction| (d.distribution, d.seed, d.step);
    let mut out = Vec::new();
    let mut start = 0;
    for k in 1..=points.len() {
        if k == points.len() || k - start == max || key(&points[k].0) != key(&points[start].0) {
            out.push(start..k);
            start = k;
        }
    }
    out
}

impl Objective for BatchObjective {
    /// f at the parameters as they are ([`evaluate`](BatchObjective::evaluate)); `params` must
    /// be the `Params` whose buffers were bound.
    fn loss(&mut self, _params: &Params) -> Result<f32> {
        self.evaluate()
    }

    /// True: [`loss_batch`](Objective::loss_batch) evaluates all points in one dispatch.
    fn has_batch(&self) -> bool {
        true
    }

    /// True: the dispatches go into the submission of zograd's pending kernel launches (e.g.
    /// the previous step's fused update).
    fn zograd_own(&self, _: crate::objective::sealed::Own) -> bool {
        true
    }

    /// The losses at `params + scale·z(dir)` for every point, computed by the shader from the
    /// bound buffers without writing them: one submission, one readback.
    fn loss_batch(&mut self, params: &mut Params, points: &[(Direction, f32)]) -> Result<Vec<f32>> {
        if !params.gpu().same(&self.gpu) {
            return Err(Error::invalid(
                "params: live on another Gpu than the BatchObjective",
            ));
        }
        self.run(points, Some(params.len()), 0)
    }

    /// Sparse directions (a [`Mask`] without frozen buffers or magnitude mask) when the shader
    /// declared it handles them ([`handles_sparse_directions`](BatchObjective::handles_sparse_directions)).
    fn batches_mask(&self, mask: &Mask) -> bool {
        mask.is_all()
            || (self.sparse
                && mask.frozen_buffers().is_empty()
                && mask.magnitude_thresholds().is_none())
    }

    /// The points with the mask's density threshold in the batch uniform (the shader computes
    /// each point's identity itself, `zograd_crn_seed`).
    fn loss_batch_masked(
        &mut self,
        params: &mut Params,
        points: &[(Direction, f32)],
        _at: &[crate::Evaluation],
        mask: &Mask,
    ) -> Result<Vec<f32>> {
        if !self.batches_mask(mask) {
            return Err(Error::invalid(
                "mask: this BatchObjective evaluates sparse directions only (no frozen buffers, \
                 no magnitude mask), and only with handles_sparse_directions(true)",
            ));
        }
        if !params.gpu().same(&self.gpu) {
            return Err(Error::invalid(
                "params: live on another Gpu than the BatchObjective",
            ));
        }
        self.run(points, Some(params.len()), mask.threshold())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_by_key_and_size() {
        let d = |seed, step| Direction {
            distribution: Distribution::Rademacher,
            seed,
            step,
            sample: 0,
        };
        let pts: Vec<(Direction, f32)> = [d(1, 0), d(1, 0), d(1, 0), d(2, 0), d(2, 1)]
            .into_iter()
            .map(|x| (x, 1.0))
            .collect();
        assert_eq!(runs(&pts, 8), vec![0..3, 3..4, 4..5]);
        assert_eq!(runs(&pts, 2), vec![0..2, 2..3, 3..4, 4..5]);
    }

    /// The batch declarations validate with naga after the Philox source, as users get them.
    #[test]
    fn batch_wgsl_validates() {
        let src = format!(
            "{}\n{}\n@compute @workgroup_size(1) fn main() {{\n\
             let b = zograd_point_block(0u, vec2<u32>(0u, 0u));\n\
             zograd_set_loss(0u, zograd_dz(0u, vec2<u32>(3u, 0u)) + zograd_rademacher(b, 5u) + zograd_quad(b).x + f32(zograd_point_count()) + f32(zograd_crn_seed(0u).x));\n}}",
            crate::gpu::shaders::PHILOX,
            crate::gpu::shaders::BATCH
        );
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{}", e.emit_to_string(&src)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}", e.emit_to_string(&src)));
    }
}
