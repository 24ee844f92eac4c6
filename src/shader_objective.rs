// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`ShaderObjective`]: a loss written as WGSL compute passes over the parameter buffers.

use std::fmt;

use crate::gpu::buffers::{check_usage, Use};
use crate::gpu::program::{run_steps_and_read, Program};
use crate::{Error, Gpu, Objective, Params, Result};

pub use crate::gpu::program::{Binding, Step};

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
///
/// A simulation that already has its own pipelines (and alternates source and destination
/// buffers between frames) uses [`from_steps`](ShaderObjective::from_steps) instead: its WGSL,
/// layouts and bind groups stay as they are.
pub struct ShaderObjective {
    gpu: Gpu,
    work: Work,
    output: wgpu::Buffer,
    offset: u64,
    evaluations: u64,
}

/// What one evaluation runs.
enum Work {
    /// The passes of the WGSL given to [`ShaderObjective::new`].
    Program(Program<[u32; 3]>),
    /// The user's own steps, [`ShaderObjective::from_steps`].
    Steps(Vec<Step>),
}

impl fmt::Debug for ShaderObjective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let passes = match &self.work {
            Work::Program(p) => p.passes(),
            Work::Steps(s) => s.len(),
        };
        f.debug_struct("ShaderObjective")
            .field("passes", &passes)
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
            work: Work::Program(program),
            output: output.0.clone(),
            offset: output.1,
            evaluations: 0,
        })
    }

    /// A loss computed by the user's own pipelines: `steps` (dispatches with their own bind
    /// groups, and buffer copies) run in order in one submission, and the loss is the f32 at
    /// byte `offset` of `output` (which needs `COPY_SRC`) after the last step, read back in the
    /// same submission.
    ///
    /// This is the form for a simulation that owns its pipelines: reset the state with a
    /// [`Step::copy`], run `k` frames with [`Step::dispatch`] — alternating the bind groups of
    /// a ping-pong pair frame by frame — then a reduction against the target. The parameter
    /// buffers the pipelines read must be those of the [`Params`] the estimators perturb (e.g.
    /// adopted with [`Params::from_buffers`]). Errors of the recorded work (a bind group that
    /// does not match its pipeline) are caught in error scopes and returned as
    /// [`Error::Validation`] when the loss is evaluated.
    ///
    /// ```no_run
    /// use zograd::{Gpu, Objective, Params, ShaderObjective, Step};
    /// # fn main() -> zograd::Result<()> {
    /// # let (device, queue): (zograd::wgpu::Device, zograd::wgpu::Queue) = todo!();
    /// # let (initial, state_a, loss_out): (zograd::wgpu::Buffer, zograd::wgpu::Buffer,
    /// #     zograd::wgpu::Buffer) = todo!();
    /// # let (frame, reduce): (zograd::wgpu::ComputePipeline, zograd::wgpu::ComputePipeline) =
    /// #     todo!();
    /// # let (a_to_b, b_to_a, reduce_b): (zograd::wgpu::BindGroup, zograd::wgpu::BindGroup,
    /// #     zograd::wgpu::BindGroup) = todo!();
    /// # let params: Params = todo!();
    /// let gpu = Gpu::from_wgpu(device, queue)?;
    /// let mut steps = vec![Step::copy(&initial, &state_a)];
    /// for f in 0..8 {
    ///     let group = if f % 2 == 0 { &a_to_b } else { &b_to_a };
    ///     steps.push(Step::dispatch(&frame, &[group], [16, 1, 1]));
    /// }
    /// steps.push(Step::dispatch(&reduce, &[&reduce_b], [1, 1, 1]));
    /// let mut loss = ShaderObjective::from_steps(&gpu, steps, (&loss_out, 0))?;
    /// let f = loss.loss(&params)?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no steps, a dispatch past the device's
    /// `max_compute_workgroups_per_dimension`, a copy that is unaligned, outside its buffers or
    /// lacks `COPY_SRC`/`COPY_DST`, or an output without `COPY_SRC` or with `offset` not
    /// 4-aligned inside it.
    pub fn from_steps(gpu: &Gpu, steps: Vec<Step>, output: (&wgpu::Buffer, u64)) -> Result<Self> {
        if steps.is_empty() {
            return Err(Error::invalid("steps: at least one step is needed"));
        }
        for (k, step) in steps.iter().enumerate() {
            step.check(k, gpu.limits())?;
        }
        check_usage(output.0, "output", Use::ReadBack)?;
        check_offset(output.0, output.1)?;
        Ok(Self {
            gpu: gpu.clone(),
            work: Work::Steps(steps),
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
    /// passes, which also carries zograd's pending kernel launches, e.g. the perturbation of the
    /// parameters the passes read: one submission per evaluation).
    ///
    /// # Errors
    /// Device errors.
    pub fn evaluate(&mut self) -> Result<f32> {
        check_offset(&self.output, self.offset)?;
        // The passes and the readback of the loss: one submission.
        let out = match &self.work {
            Work::Program(p) => {
                p.run_and_read(&self.gpu, |g| g, (&self.output, self.offset, 1))?[0]
            }
            Work::Steps(steps) => {
                run_steps_and_read(&self.gpu, steps, (&self.output, self.offset))?
            }
        };
        self.evaluations += 1;
        Ok(out)
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

    /// True: the passes go into the submission of zograd's pending kernel launches.
    fn zograd_own(&self, _: crate::objective::sealed::Own) -> bool {
        true
    }
}

/// Fails unless the f32 at byte `offset` lies 4-aligned inside `output`.
fn check_offset(output: &wgpu::Buffer, offset: u64) -> Result<()> {
    if !offset.is_multiple_of(4) || offset.checked_add(4).is_none_or(|end| end > output.size()) {
        return Err(Error::InvalidArgument(format!(
            "offset: bytes {offset}..{} are not 4-aligned inside the buffer of {} bytes",
            offset.saturating_add(4),
            output.size()
        )));
    }
    Ok(())
}
