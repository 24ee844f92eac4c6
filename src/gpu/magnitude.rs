// SPDX-License-Identifier: MIT OR Apache-2.0
//! The GPU buffers of a magnitude mask (`kernels::Mask`, Sparse MeZO): the bit-packed mask, one
//! bit per element (n/32 words), and the histogram bins of |x|, 32768 per buffer
//! (`shaders/mask.wgsl`).

use std::sync::atomic::{AtomicU64, Ordering};

use super::context::{Gpu, TrackedBuffer};
use crate::Result;

/// Histogram bins per buffer: the top 15 bits of |x|'s bit pattern.
pub(crate) const BINS: u64 = 32_768;

/// Ids of bits and bins buffers, for the bind-group caches.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The bits and bins of one magnitude mask, sized for `n` elements in `buffers` buffers.
#[derive(Debug)]
pub(crate) struct MagnitudeBuffers {
    gpu: Gpu,
    id: u64,
    bits: TrackedBuffer,
    bins: TrackedBuffer,
    n: u64,
    buffers: usize,
}

impl MagnitudeBuffers {
    pub(crate) fn new(gpu: &Gpu, n: u64, buffers: usize) -> Result<Self> {
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST;
        let words = n.div_ceil(32).max(1);
        let bits = gpu.create_buffer("zograd::magnitude_bits", words * 4, usage)?;
        let bins = gpu.create_buffer("zograd::magnitude_bins", BINS * buffers as u64 * 4, usage)?;
        Ok(Self {
            gpu: gpu.clone(),
            id: NEXT_ID.fetch_add(2, Ordering::Relaxed),
            bits,
            bins,
            n,
            buffers,
        })
    }

    /// Whether these buffers serve `n` elements in `buffers` buffers on `gpu`.
    pub(crate) fn fits(&self, gpu: &Gpu, n: u64, buffers: usize) -> bool {
        self.gpu.same(gpu) && self.n == n && self.buffers == buffers
    }

    /// The bits, with their id.
    pub(crate) fn bits(&self) -> (u64, &wgpu::Buffer) {
        (self.id, &self.bits)
    }

    /// The bins, with their id.
    pub(crate) fn bins(&self) -> (u64, &wgpu::Buffer) {
        (self.id + 1, &self.bins)
    }

    /// Bytes of the two buffers.
    pub(crate) fn bytes(&self) -> u64 {
        self.bits.size() + self.bins.size()
    }

    /// Zeroes the bins (submitted now, after the pending launches).
    pub(crate) fn clear_bins(&self) -> Result<()> {
        let gpu = &self.gpu;
        gpu.scoped(|| {
            let mut encoder =
                gpu.device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("zograd::magnitude_clear"),
                    });
            encoder.clear_buffer(&self.bins, 0, None);
            // After zograd's pending launches (`gpu/pending.rs`), in the same submission.
            gpu.submit_pending(&mut gpu.pending(), Some(encoder))
        })
    }

    /// The bins' counts (waits for the GPU).
    pub(crate) fn read_bins(&self) -> Result<Vec<u32>> {
        self.read(&self.bins, BINS * self.buffers as u64)
    }

    /// The mask's words (waits for the GPU).
    pub(crate) fn read_bits(&self) -> Result<Vec<u32>> {
        self.read(&self.bits, self.n.div_ceil(32).max(1))
    }

    fn read(&self, buffer: &wgpu::Buffer, words: u64) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(words as usize);
        self.gpu.read_into_after(None, buffer, 0, words, &mut out)?;
        Ok(out.into_iter().map(f32::to_bits).collect())
    }
}
