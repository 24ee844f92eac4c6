// SPDX-License-Identifier: MIT OR Apache-2.0
//! Reading buffers back to the host through a small pool of reused staging buffers.

use std::sync::mpsc;

use super::context::{lock, Gpu, TrackedBuffer};
use crate::{Error, Result};

/// The largest piece copied through one staging buffer; bigger reads loop.
const PIECE_BYTES: u64 = 32 << 20;
/// Staging buffers kept for reuse.
const POOL_SIZE: usize = 4;

impl Gpu {
    fn take_staging(&self, size: u64) -> Result<TrackedBuffer> {
        {
            let mut pool = lock(&self.inner.staging);
            // Best fit: a one-float loss readback should not map a large buffer kept from a
            // download.
            let best = pool
                .iter()
                .enumerate()
                .filter(|(_, b)| b.size() >= size)
                .min_by_key(|(_, b)| b.size())
                .map(|(k, _)| k);
            if let Some(k) = best {
                return Ok(pool.swap_remove(k));
            }
        }
        let size = size.next_power_of_two().max(4096);
        self.create_buffer(
            "zograd::staging",
            size,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )
    }

    fn return_staging(&self, buffer: TrackedBuffer) {
        let mut pool = lock(&self.inner.staging);
        if pool.len() < POOL_SIZE {
            pool.push(buffer);
        } else if let Some(k) = pool.iter().position(|b| b.size() < buffer.size()) {
            pool[k] = buffer;
        }
    }

    /// Reads `count` f32 values starting at byte `offset` of `buffer` (which needs `COPY_SRC`),
    /// through a reused staging buffer: the one readback a user's loss closure needs after its
    /// own shaders wrote the loss (a closure that records its shaders into an encoder instead
    /// of submitting them saves a submission with [`read_f32_after`](Gpu::read_f32_after)).
    /// Waits for the GPU (submitted work included).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a range outside the buffer, an unaligned offset or a buffer
    /// without `COPY_SRC`; device errors.
    ///
    /// # Example
    /// ```no_run
    /// # fn main() -> zograd::Result<()> {
    /// let gpu = zograd::Gpu::new()?;
    /// let x = zograd::Params::from_slices(&gpu, &[&[1.5f32, 2.5][..]])?;
    /// assert_eq!(gpu.read_f32s(&x.buffers()[0], 4, 1)?, vec![2.5]);
    /// # Ok(()) }
    /// ```
    pub fn read_f32s(&self, buffer: &wgpu::Buffer, offset: u64, count: u64) -> Result<Vec<f32>> {
        check_read(buffer, offset, count)?;
        let mut out = Vec::with_capacity(count as usize);
        self.read_f32(buffer, offset, count, &mut out)?;
        Ok(out)
    }

    /// Submits the work the caller recorded into `encoder` together with the readback of the
    /// f32 at byte `offset` of `buffer` (which needs `COPY_SRC`), and returns it: ONE submission
    /// and one wait for a loss closure's own passes and its scalar, where
    /// `queue.submit` + [`read_f32s`](Gpu::read_f32s) take two. Waits for the GPU.
    ///
    /// wgpu reports a mistake in the recorded work (a bind group that does not match its
    /// pipeline, a buffer of another device) when the encoder is finished; this finishes and
    /// submits it inside validation and out-of-memory error scopes, so the mistake is an
    /// [`Error::Validation`], not a panic, also on a device adopted with
    /// [`Gpu::from_wgpu`]. `encoder` must come from this `Gpu`'s [`device`](Gpu::device).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an offset that is not 4-aligned or not inside the buffer,
    /// or a buffer without `COPY_SRC` (the encoder is then dropped, its work not submitted);
    /// device errors.
    ///
    /// # Example
    /// A closure loss that records its own pass and reads the loss in the same submission:
    /// ```no_run
    /// use zograd::{Gpu, Params};
    /// # fn main() -> zograd::Result<()> {
    /// let gpu = Gpu::new()?;
    /// # let out = zograd::ShaderObjective::loss_buffer(&gpu, 1)?;
    /// # let (pipeline, bind_group): (zograd::wgpu::ComputePipeline, zograd::wgpu::BindGroup) =
    /// #     todo!();
    /// let mut loss = |_p: &Params| -> zograd::Result<f32> {
    ///     let mut encoder = gpu.device().create_command_encoder(&Default::default());
    ///     {
    ///         let mut pass = encoder.begin_compute_pass(&Default::default());
    ///         pass.set_pipeline(&pipeline);
    ///         pass.set_bind_group(0, &bind_group, &[]);
    ///         pass.dispatch_workgroups(1, 1, 1);
    ///     }
    ///     gpu.read_f32_after(encoder, &out, 0)
    /// };
    /// # let _ = &mut loss;
    /// # Ok(()) }
    /// ```
    pub fn read_f32_after(
        &self,
        encoder: wgpu::CommandEncoder,
        buffer: &wgpu::Buffer,
        offset: u64,
    ) -> Result<f32> {
        check_read(buffer, offset, 1)?;
        let mut out = Vec::with_capacity(1);
        self.read_into_after(Some(encoder), buffer, offset, 1, &mut out)?;
        Ok(out[0])
    }

    /// Reads `len` f32 values starting at byte `offset` of `src` (which needs COPY_SRC) and
    /// appends them to `out`. Waits for the GPU.
    pub(crate) fn read_f32(
        &self,
        src: &wgpu::Buffer,
        offset: u64,
        len: u64,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        self.read_into_after(None, src, offset, len, out)
    }

    /// [`read_f32`](Gpu::read_f32) with the first copy recorded into `encoder` (work the caller
    /// recorded but did not submit, e.g. the dispatch that wrote `src`): the work and the
    /// readback go to the GPU in one submission.
    pub(crate) fn read_into_after(
        &self,
        mut encoder: Option<wgpu::CommandEncoder>,
        src: &wgpu::Buffer,
        offset: u64,
        len: u64,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let total = len * 4;
        let mut done = 0;
        while done < total {
            let piece = (total - done).min(PIECE_BYTES);
            let staging = self.take_staging(piece)?;
            let result = self.read_piece(encoder.take(), src, offset + done, piece, &staging, out);
            // A failed read may leave the staging buffer mapped or with a map pending (a
            // submission wgpu refused still runs map_async): drop it rather than hand it to
            // the next read, whose submission would fail with "still mapped".
            if result.is_ok() {
                self.return_staging(staging);
            }
            result?;
            done += piece;
        }
        if let Some(encoder) = encoder {
            // Nothing to read: still run the caller's work (after the pending launches).
            self.scoped(|| self.submit_pending(&mut self.pending(), Some(encoder)))?;
        }
        Ok(())
    }

    fn read_piece(
        &self,
        encoder: Option<wgpu::CommandEncoder>,
        src: &wgpu::Buffer,
        offset: u64,
        piece: u64,
        staging: &wgpu::Buffer,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        self.scoped(|| {
            let mut encoder = encoder.unwrap_or_else(|| {
                self.device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("zograd::readback"),
                    })
            });
            encoder.copy_buffer_to_buffer(src, offset, staging, 0, piece);
            // The pending launches, then the caller's work and the copy: one submission.
            self.submit_pending(&mut self.pending(), Some(encoder))?;
            staging.map_async(wgpu::MapMode::Read, 0..piece, move |r| {
                let _ = tx.send(r);
            });
            Ok(())
        })?;
        self.device().poll(wgpu::PollType::wait_indefinitely())?;
        self.check_alive()?;
        let mapped = rx
            .recv()
            .map_err(|_| Error::DeviceLost("the readback callback never ran".into()))?;
        mapped?;
        {
            let view = staging
                .get_mapped_range(0..piece)
                .map_err(|e| Error::Validation(e.to_string()))?;
            out.extend_from_slice(bytemuck::cast_slice(&view));
        }
        staging.unmap();
        Ok(())
    }
}

/// Fails unless `count` f32 from byte `offset` of `buffer` can be read back: `COPY_SRC`, a
/// 4-aligned offset, the range inside the buffer.
fn check_read(buffer: &wgpu::Buffer, offset: u64, count: u64) -> Result<()> {
    if !buffer.usage().contains(wgpu::BufferUsages::COPY_SRC) {
        return Err(Error::InvalidArgument(format!(
            "buffer: usage {:?} lacks COPY_SRC, needed to read it back",
            buffer.usage()
        )));
    }
    let end = count.checked_mul(4).and_then(|b| offset.checked_add(b));
    if !offset.is_multiple_of(4) || end.is_none_or(|end| end > buffer.size()) {
        return Err(Error::InvalidArgument(format!(
            "offset: {count} f32 from byte {offset} are not 4-aligned inside the buffer of {} \
             bytes",
            buffer.size()
        )));
    }
    Ok(())
}
