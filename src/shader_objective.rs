// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`ShaderObjective`]: a loss written as WGSL compute passes over the parameter buffers.

use std::fmt;

use crate::gpu::buffers::{check_usage, Use};
use crate::gpu::program::Program;
use crate::{Error, Gpu, Objective, Params, Result};

pub use crate::gpu::program::Binding;

/// A loss computed by the user's WGSL: one or more compute passes (entry points of one module,
/// each with its workgroup count) over bound buffers — the parameter buffers among them — that
/// leave the loss as one f32 in an output buffer, read back after every evaluation.
///
/// Pipelines, the bind group and the staging buffer are created once, in
/// [`new`](ShaderObjective::new). The shader reads the parameters through the buffers bound at
/// construction, which the estimators perturb in place, so the `params` passed to
/// [`Objective::loss`] must be the `Params` whose buffers were bound.
///
/// ```no_run
/// use zograd::{Binding, Gpu, Objective, Params, ShaderObjective};
/// # fn main() -> zograd::Result<()> {
/// let gpu = Gpu::new()?;
/// let x = Params::from_slices(&gpu, &[&[3.0f32, 4.0][..]])?;
/// let out = ShaderObjective::loss_buffer(&gpu, 1)?;
/// let wgsl = "
///     @group(0) @binding(0) var<storage, read> x: array<f32>;
///     @group(0) @binding(1) var<storage, read_write> out: array<f32>;
///     @compute @workgroup_size(1) fn main() { out[0] = x[0] * x[0] + x[1] * x[1]; }";
/// let mut loss = ShaderObjective::new(
///     &gpu,
///     wgsl,
///     &[Binding::Read(&x.buffers()[0]), Binding::ReadWrite(&out)],
///     &[("main", [1, 1, 1])],
///     (&out, 0),
/// )?;
/// assert_eq!(loss.loss(&x)?, 25.0);
/// # Ok(()) }
/// ```
pub struct ShaderObjective {
    gpu: Gpu,
    program: Program<[u32; 3]>,
    output: wgpu::Buffer,
    offset: u64,
    evaluations: u64,
}

impl fmt::Debug for ShaderObjective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShaderObjective")
            .field("passes", &self.program.passes())
            .field("evaluations", &self.evaluations)
            .finish_non_exhaustive()
    }
}

impl ShaderObjective {
    /// Compiles `wgsl`, lays out `bindings` at group 0 (binding k = `bindings[k]`) and prepares
    /// the `passes` (entry point, workgroups), run in order; the loss is the f32 at byte `offset`
    /// of `output` (which needs `COPY_SRC`) after the last pass.
    ///
    /// # Errors
    /// [`Error::Validation`] for WGSL or binding errors (the message is wgpu's, with the
    /// shader's line); [`Error::InvalidArgument`] for no passes or an output without
    /// `COPY_SRC`.
    pub fn new(
        gpu: &Gpu,
        wgsl: &str,
        bindings: &[Binding<'_>],
        passes: &[(&str, [u32; 3])],
        output: (&wgpu::Buffer, u64),
    ) -> Result<Self> {
        if passes.is_empty() {
            return Err(Error::invalid(
                "passes: at least one compute pass is needed",
            ));
        }
        check_usage(output.0, "output", Use::ReadBack)?;
        let program = Program::new(
            gpu,
            "zograd::ShaderObjective",
            wgsl,
            bindings,
            passes,
            false,
        )?;
        Ok(Self {
            gpu: gpu.clone(),
            program,
            output: output.0.clone(),
            offset: output.1,
            evaluations: 0,
        })
    }

    /// A zeroed storage buffer of `floats` f32 (at least one) with `COPY_SRC`, for the loss (and
    /// any partial sums the passes keep beside it).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `4 · floats` bytes overflow; [`Error::TooLarge`] past the
    /// adapter's `max_buffer_size`; device errors (caught in an error scope, also on a device
    /// adopted with [`Gpu::from_wgpu`]).
    pub fn loss_buffer(gpu: &Gpu, floats: u64) -> Result<wgpu::Buffer> {
        let bytes = floats.max(1).checked_mul(4).ok_or_else(|| {
            Error::invalid(format!(
                "floats: {floats} f32 do not fit in a buffer (4 · floats overflows)"
            ))
        })?;
        gpu.create_user_storage("zograd::ShaderObjective loss", bytes)
    }

    /// Runs the passes and reads the loss back (one readback, in the same submission as the
    /// passes).
    ///
    /// # Errors
    /// Device errors.
    pub fn evaluate(&mut self) -> Result<f32> {
        if !self.offset.is_multiple_of(4) || self.offset + 4 > self.output.size() {
            return Err(Error::InvalidArgument(format!(
                "offset: bytes {}..{} are not 4-aligned inside the buffer of {} bytes",
                self.offset,
                self.offset + 4,
                self.output.size()
            )));
        }
        // The passes and the readback of the loss: one submission.
        let out = self
            .program
            .run_and_read(&self.gpu, |g| g, (&self.output, self.offset, 1))?;
        self.evaluations += 1;
        Ok(out[0])
    }

    /// Evaluations so far.
    #[must_use]
    pub fn evaluations(&self) -> u64 {
        self.evaluations
    }
}

impl Objective for ShaderObjective {
    fn loss(&mut self, _params: &Params) -> Result<f32> {
        self.evaluate()
    }
}
