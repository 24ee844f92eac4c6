// SPDX-License-Identifier: MIT OR Apache-2.0
//! f32 storage buffers for the layers above: creation, host writes and usage checks, so that
//! those layers name no wgpu type beyond the buffers themselves.

use super::context::{Gpu, TrackedBuffer};
use crate::{Error, Result};

/// What a buffer is about to be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Use {
    /// Bound to a kernel (`STORAGE`).
    Kernel,
    /// Read back to the host (`COPY_SRC`).
    ReadBack,
    /// Written from the host (`COPY_DST`).
    HostWrite,
}

/// Fails with [`Error::InvalidArgument`] naming `what` when `buffer`'s usage does not allow
/// `purpose`.
pub(crate) fn check_usage(buffer: &wgpu::Buffer, what: &str, purpose: Use) -> Result<()> {
    let (flag, name, why) = match purpose {
        Use::Kernel => (wgpu::BufferUsages::STORAGE, "STORAGE", ""),
        Use::ReadBack => (
            wgpu::BufferUsages::COPY_SRC,
            "COPY_SRC",
            ", needed to read it back",
        ),
        Use::HostWrite => (
            wgpu::BufferUsages::COPY_DST,
            "COPY_DST",
            ", needed to write it",
        ),
    };
    if buffer.usage().contains(flag) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what}: usage {:?} lacks {name}{why}",
            buffer.usage()
        )))
    }
}

impl Gpu {
    /// A new buffer of `len` f32 (usage `STORAGE | COPY_SRC | COPY_DST`, zeroed), holding `data`
    /// when given (`data.len() == len`).
    pub(crate) fn create_f32_storage(
        &self,
        label: &str,
        len: u64,
        data: Option<&[f32]>,
    ) -> Result<TrackedBuffer> {
        let buffer = self.create_buffer(
            label,
            len * 4,
            wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
        )?;
        if let Some(data) = data {
            self.write_f32s(&[(&buffer, 0, data)])?;
        }
        Ok(buffer)
    }

    /// A `STORAGE | COPY_SRC | COPY_DST` buffer holding `data` (at least 4 bytes), handed to the
    /// user like [`Gpu::create_user_storage`]'s (not counted in [`Gpu::allocated_bytes`]): the
    /// read-only data of a user-level program such as `zograd::testfns`'s.
    pub(crate) fn create_user_data(&self, label: &str, data: &[u32]) -> Result<wgpu::Buffer> {
        let bytes = (data.len().max(1) * 4) as u64;
        if bytes > self.limits().max_buffer_size {
            return Err(crate::Error::TooLarge(format!(
                "{label}: {bytes} bytes exceeds the adapter's max_buffer_size of {}",
                self.limits().max_buffer_size
            )));
        }
        self.scoped(|| {
            let buffer = self.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            if !data.is_empty() {
                self.queue()
                    .write_buffer(&buffer, 0, bytemuck::cast_slice(data));
            }
            Ok(buffer)
        })
    }

    /// Queues host writes `(buffer, byte offset, values)` (they land before the next
    /// submission), inside one error scope. The pending launches are submitted first: a write
    /// lands before every command of the submission after it, and they may use these buffers.
    pub(crate) fn write_f32s(&self, writes: &[(&wgpu::Buffer, u64, &[f32])]) -> Result<()> {
        self.scoped(|| {
            self.submit_pending(&mut self.pending(), None)?;
            for (buffer, offset, values) in writes {
                self.queue()
                    .write_buffer(buffer, *offset, bytemuck::cast_slice(values));
            }
            Ok(())
        })
    }
}
