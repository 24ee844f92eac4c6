// SPDX-License-Identifier: MIT OR Apache-2.0
//! Binding f32 buffers to the kernels: chunking (a buffer bound in ranges of at most the
//! adapter's storage-binding size), the launches over those ranges, and the cache of bind
//! groups that makes a repeated launch create nothing.
//!
//! Callers describe their buffers as plain [`Operand`]s (buffers, chunks and a cache key): this
//! module knows nothing of `Params`, which owns one [`BindCache`] and calls in.
//!
//! Operands of one launch may be chunked differently (their `set_max_chunk_len` differ): the
//! launch is split at the union of all operands' chunk boundaries, so that every dispatch binds
//! one range of each operand, all over the same global indices.

use super::context::{Gpu, TrackedBuffer};
use super::kernel::{Kernel, LayoutKind};
use super::launch::{Launch, Slots};
use crate::Result;

/// How many other operand sets one [`BindCache`] keeps bind groups for (copy/axpy sources,
/// optimiser state, dot-product partners).
const PAIR_CACHE: usize = 8;

/// A range of one buffer bound at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// The buffer.
    pub part: usize,
    /// First element within the buffer.
    pub first: u64,
    pub len: u64,
    /// Global index of the first element.
    pub global: u64,
}

/// The ranges [`make_chunks`] cuts buffer ranges into: buffer k's elements
/// `starts[k] .. starts[k] + lens[k]` (global offsets `offsets`), each in order, in ranges of at
/// most `chunk_len` (a multiple of `align`, the storage offset alignment in elements) that, bound
/// from the aligned element at or below their start, span at most `chunk_len` elements: the first
/// chunk of a range that starts off the alignment is shorter, the following ones start aligned.
pub(crate) fn make_chunks(
    lens: &[u64],
    starts: &[u64],
    offsets: &[u64],
    chunk_len: u64,
    align: u64,
) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    for (part, ((&len, &start), &off)) in lens.iter().zip(starts).zip(offsets).enumerate() {
        let mut j = 0;
        while j < len {
            let first = start + j;
            let n = (len - j).min(chunk_len - first % align);
            chunks.push(Chunk {
                part,
                first,
                len: n,
                global: off + j,
            });
            j += n;
        }
    }
    chunks
}

/// The storage offset alignment in elements.
pub(crate) fn storage_align_elems(gpu: &Gpu) -> u64 {
    (u64::from(gpu.limits().min_storage_buffer_offset_alignment) / 4).max(1)
}

/// Elements per chunk: the binding limit, at most 2^30 (u32 index math) and at most what a 2-D
/// grid of the adapter's size covers (1024 elements per workgroup, one group spare for chunks
/// that start inside a Philox block), aligned down to the storage offset alignment.
pub(crate) fn default_chunk_len(gpu: &Gpu) -> u64 {
    let align = storage_align_elems(gpu);
    let by_limit = gpu.limits().max_storage_buffer_binding_size / 4;
    let by_grid = super::launch::grid_capacity(gpu);
    ((by_limit.min(by_grid).min(1 << 30)) / align) * align
}

/// f32 buffers as a launch sees them. Every operand of one launch has the same total length
/// and the same buffer boundaries; only the chunking may differ.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Operand<'a> {
    pub buffers: &'a [wgpu::Buffer],
    pub chunks: &'a [Chunk],
    /// Equal keys mean the same buffers chunked the same way (the bind-group cache's key).
    pub key: (u64, u64),
}

/// One dispatch's ranges: `len` elements from global index `global`, and for each operand the
/// (buffer, first element) it binds.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Piece {
    global: u64,
    len: u64,
    at: Vec<(usize, u64)>,
}

/// The launch ranges of `operands`: their chunks cut at the union of all chunk boundaries.
/// With equal chunkings these are the chunks themselves.
fn pieces(operands: &[Operand<'_>]) -> Vec<Piece> {
    let total: u64 = operands[0].chunks.iter().map(|c| c.len).sum();
    let mut next = vec![0usize; operands.len()];
    let mut out = Vec::new();
    let mut g = 0;
    while g < total {
        let mut end = total;
        let mut at = Vec::with_capacity(operands.len());
        for (k, o) in operands.iter().enumerate() {
            while o.chunks[next[k]].global + o.chunks[next[k]].len <= g {
                next[k] += 1;
            }
            let c = o.chunks[next[k]];
            end = end.min(c.global + c.len);
            at.push((c.part, c.first + (g - c.global)));
        }
        out.push(Piece {
            global: g,
            len: end - g,
            at,
        });
        g = end;
    }
    out
}

/// The bind groups of one set of operands, one per piece, with their own launch uniforms.
#[derive(Debug)]
struct Groups {
    slots: Slots,
    pieces: Vec<Piece>,
    /// Per piece, the [`Launch::shift`] of each storage binding.
    shifts: Vec<[u32; 4]>,
    groups: Vec<wgpu::BindGroup>,
}

/// One launch of `kernel` per piece, completed by `fill`.
fn launches_over(
    gpu: &Gpu,
    kernel: Kernel,
    pieces: &[Piece],
    fill: &dyn Fn(&mut Launch),
) -> Result<Vec<Launch>> {
    pieces
        .iter()
        .map(|p| {
            let mut l = Launch::new(gpu, kernel, p.len, p.global)?;
            fill(&mut l);
            Ok(l)
        })
        .collect()
}

impl Groups {
    /// Groups of `layout` over the pieces of `operands`, bound at bindings 1, 2, … in order,
    /// with each `(k, buffer)` of `wholes` (in increasing k) bound entire as the k-th storage
    /// binding (binding k + 1) and the operands after it moved up by one.
    fn new(
        gpu: &Gpu,
        layout: LayoutKind,
        operands: &[Operand<'_>],
        wholes: &[(usize, &wgpu::Buffer)],
    ) -> Result<Self> {
        let pieces = pieces(operands);
        let slots = Slots::for_launches(gpu, "zograd::launch_uniforms", pieces.len())?;
        let align = storage_align_elems(gpu);
        // A range is bound from the aligned element at or below its start; the kernel adds the
        // shift. Bindings are at most 4 storage buffers, so the shifts fit a vec4.
        let shifts: Vec<[u32; 4]> = pieces
            .iter()
            .map(|p| {
                let mut list: Vec<u32> = p.at.iter().map(|(_, at)| (at % align) as u32).collect();
                for (k, _) in wholes {
                    list.insert(*k, 0);
                }
                let mut out = [0u32; 4];
                out[..list.len()].copy_from_slice(&list);
                out
            })
            .collect();
        let groups = gpu.scoped(|| {
            Ok(pieces
                .iter()
                .map(|p| {
                    let mut storage: Vec<wgpu::BindingResource<'_>> =
                        p.at.iter()
                            .enumerate()
                            .map(|(k, (part, at))| {
                                let shift = at % align;
                                wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                    buffer: &operands[k].buffers[*part],
                                    offset: (at - shift) * 4,
                                    size: wgpu::BufferSize::new((p.len + shift) * 4),
                                })
                            })
                            .collect();
                    for (k, buffer) in wholes {
                        storage.insert(*k, buffer.as_entire_binding());
                    }
                    let mut entries = vec![slots.entry(0)];
                    entries.extend(storage.into_iter().enumerate().map(|(k, resource)| {
                        wgpu::BindGroupEntry {
                            binding: 1 + k as u32,
                            resource,
                        }
                    }));
                    gpu.device().create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some("zograd::operands"),
                        layout: gpu.inner.layouts.bind_group_layout(layout),
                        entries: &entries,
                    })
                })
                .collect())
        })?;
        Ok(Self {
            slots,
            pieces,
            shifts,
            groups,
        })
    }

    fn launches(
        &self,
        gpu: &Gpu,
        kernel: Kernel,
        fill: &dyn Fn(&mut Launch),
    ) -> Result<Vec<Launch>> {
        let mut launches = launches_over(gpu, kernel, &self.pieces, fill)?;
        self.set_shifts(&mut launches);
        Ok(launches)
    }

    /// Writes each piece's binding shifts into its launch.
    fn set_shifts(&self, launches: &mut [Launch]) {
        for (l, shift) in launches.iter_mut().zip(&self.shifts) {
            l.shift = *shift;
        }
    }

    /// Writes the launches into the uniforms and records their dispatches, one per piece.
    fn encode(
        &self,
        gpu: &Gpu,
        kernel: Kernel,
        launches: &[Launch],
    ) -> Result<wgpu::CommandEncoder> {
        let items: Vec<_> = launches.iter().copied().zip(&self.groups).collect();
        self.slots.encode(gpu, kernel, &items)
    }

    fn submit(&self, gpu: &Gpu, kernel: Kernel, launches: &[Launch]) -> Result<()> {
        let items: Vec<_> = launches.iter().copied().zip(&self.groups).collect();
        self.slots.submit(gpu, kernel, &items)
    }
}

/// The accumulate kernels' terms buffer and its groups.
#[derive(Debug)]
struct Terms {
    buffer: TrackedBuffer,
    capacity: usize,
    groups: Groups,
    /// The groups with the destination's scales at binding 3, keyed by the scales' key.
    scaled: Option<((u64, u64), Groups)>,
    /// The groups with a magnitude mask's bits at binding 3, keyed by the bits' id.
    bits: Option<(u64, Groups)>,
}

/// The reductions' partial sums and their groups per second operand.
#[derive(Debug)]
struct Reduce {
    partials: TrackedBuffer,
    n_partials: u64,
    sets: Vec<((u64, u64), Groups)>,
}

/// The cached launch uniforms and bind groups of one operand (created once, reused by every
/// launch): the uniforms and groups of the single-operand kernels, the accumulate terms, the
/// groups with other operands and those of the reductions.
#[derive(Debug)]
pub(crate) struct BindCache {
    single: Groups,
    terms: Option<Terms>,
    pairs: Vec<(Vec<(u64, u64)>, Groups)>,
    reduce: Option<Reduce>,
    /// Groups with whole buffers besides `x` (magnitude-mask bits, histogram bins), keyed by
    /// (layout, the buffers' ids).
    wholes: Vec<((LayoutKind, u64), Groups)>,
}

/// Keeps at most [`PAIR_CACHE`] entries, dropping the oldest.
fn make_room<T>(v: &mut Vec<T>) {
    if v.len() >= PAIR_CACHE {
        v.remove(0);
    }
}

impl BindCache {
    /// The cache of `x`, with the groups of the single-operand kernels made now (a buffer of
    /// another device fails here, as a validation error).
    pub(crate) fn new(gpu: &Gpu, x: Operand<'_>) -> Result<Self> {
        Ok(Self {
            single: Groups::new(gpu, LayoutKind::One, &[x], &[])?,
            terms: None,
            pairs: Vec::new(),
            reduce: None,
            wholes: Vec::new(),
        })
    }

    /// Launches `kernel` (layout One) over `x`, whose cache this is; `fill` completes each
    /// launch. Submits without waiting.
    pub(crate) fn launch(
        &self,
        gpu: &Gpu,
        kernel: Kernel,
        fill: &dyn Fn(&mut Launch),
    ) -> Result<()> {
        let launches = self.single.launches(gpu, kernel, fill)?;
        self.single.submit(gpu, kernel, &launches)
    }

    /// Launches an accumulate `kernel` over `x` with `terms` (sample, coefficient) at binding 2
    /// and, for the scaled kernels, `scales` at binding 3.
    pub(crate) fn launch_terms(
        &mut self,
        gpu: &Gpu,
        kernel: Kernel,
        x: Operand<'_>,
        scales: Option<Operand<'_>>,
        terms: &[(u32, f32)],
        fill: &dyn Fn(&mut Launch),
    ) -> Result<()> {
        self.launch_terms_bits(gpu, kernel, x, scales, None, terms, fill)
    }

    /// [`launch_terms`](BindCache::launch_terms) with, for the magnitude-masked kernels,
    /// `bits = (id, buffer)` bound entire at binding 3 (not with scales).
    #[allow(
        clippy::too_many_arguments,
        reason = "launch_terms' arguments and the bits"
    )]
    pub(crate) fn launch_terms_bits(
        &mut self,
        gpu: &Gpu,
        kernel: Kernel,
        x: Operand<'_>,
        scales: Option<Operand<'_>>,
        bits: Option<(u64, &wgpu::Buffer)>,
        terms: &[(u32, f32)],
        fill: &dyn Fn(&mut Launch),
    ) -> Result<()> {
        // Slot 0 holds the count, then one (sample, coeff bits) pair per term.
        let need = terms.len() + 1;
        if self.terms.as_ref().is_none_or(|t| t.capacity < need) {
            let capacity = need.next_power_of_two().max(16);
            let buffer = gpu.create_buffer(
                "zograd::terms",
                capacity as u64 * 8,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            )?;
            let groups = Groups::new(gpu, LayoutKind::Two, &[x], &[(1, &buffer)])?;
            self.terms = Some(Terms {
                buffer,
                capacity,
                groups,
                scaled: None,
                bits: None,
            });
        }
        let t = self
            .terms
            .as_mut()
            .expect("the terms binding was just created");
        if let Some(s) = scales {
            if t.scaled.as_ref().is_none_or(|(k, _)| *k != s.key) {
                let groups = Groups::new(gpu, LayoutKind::Three, &[x, s], &[(1, &t.buffer)])?;
                t.scaled = Some((s.key, groups));
            }
        }
        if let Some((id, b)) = bits {
            if t.bits.as_ref().is_none_or(|(k, _)| *k != id) {
                let groups = Groups::new(gpu, LayoutKind::Three, &[x], &[(1, &t.buffer), (2, b)])?;
                t.bits = Some((id, groups));
            }
        }
        let t = &*t;
        let groups = match (&t.scaled, scales, &t.bits, bits) {
            (_, _, Some((_, g)), Some(_)) => g,
            (Some((_, g)), Some(_), _, _) => g,
            _ => &t.groups,
        };
        let packed: Vec<[u32; 2]> = std::iter::once([terms.len() as u32, 0])
            .chain(terms.iter().map(|(s, c)| [*s, c.to_bits()]))
            .collect();
        let launches = groups.launches(gpu, kernel, fill)?;
        // In order with the pending launches (a pending accumulate may still read the terms).
        gpu.scoped(|| {
            let bytes = bytemuck::cast_slice(&packed).to_vec();
            gpu.stage_write(&mut gpu.pending(), &t.buffer, 0, bytes)
        })?;
        groups.submit(gpu, kernel, &launches)
    }

    /// Launches `kernel` with `x` at binding 1 and the buffer `whole = (id, buffer)` bound entire
    /// at binding 2 (the kernel's layout: `Two` read-only, `TwoRw` read-write).
    pub(crate) fn launch_whole(
        &mut self,
        gpu: &Gpu,
        kernel: Kernel,
        x: Operand<'_>,
        whole: (u64, &wgpu::Buffer),
        fill: &dyn Fn(&mut Launch),
    ) -> Result<()> {
        let key = (kernel.layout(), whole.0);
        let pos = match self.wholes.iter().position(|(k, _)| *k == key) {
            Some(p) => p,
            None => {
                let groups = Groups::new(gpu, kernel.layout(), &[x], &[(1, whole.1)])?;
                make_room(&mut self.wholes);
                self.wholes.push((key, groups));
                self.wholes.len() - 1
            }
        };
        let groups = &self.wholes[pos].1;
        let launches = groups.launches(gpu, kernel, fill)?;
        groups.submit(gpu, kernel, &launches)
    }

    /// Launches `kernel` with `x` read-write at binding 1 and `others` at bindings 2, 3 (read
    /// only or read-write as the kernel's layout says), split at the union of their chunk
    /// boundaries.
    pub(crate) fn launch_with(
        &mut self,
        gpu: &Gpu,
        kernel: Kernel,
        x: Operand<'_>,
        others: &[Operand<'_>],
        fill: &dyn Fn(&mut Launch),
    ) -> Result<()> {
        debug_assert_eq!(others.len(), kernel.layout().extra());
        let key: Vec<(u64, u64)> = others.iter().map(|o| o.key).collect();
        let pos = match self.pairs.iter().position(|(k, _)| *k == key) {
            Some(p) => p,
            None => {
                let mut operands = vec![x];
                operands.extend_from_slice(others);
                let groups = Groups::new(gpu, kernel.layout(), &operands, &[])?;
                make_room(&mut self.pairs);
                self.pairs.push((key, groups));
                self.pairs.len() - 1
            }
        };
        let groups = &self.pairs[pos].1;
        let launches = groups.launches(gpu, kernel, fill)?;
        groups.submit(gpu, kernel, &launches)
    }

    /// Σ xᵢ·yᵢ over all elements (`y = None`: y = x, the squared norm; the buffer is then bound
    /// twice, read-only, and read once): per-workgroup scaled partial sums on the GPU (no
    /// overflow, no underflow of small products), added in f64 on the host. Waits for the GPU
    /// (one readback).
    pub(crate) fn reduce(
        &mut self,
        gpu: &Gpu,
        x: Operand<'_>,
        y: Option<Operand<'_>>,
    ) -> Result<f64> {
        let y_is_x = y.is_none();
        let y = y.unwrap_or(x);
        let mut launches = launches_over(gpu, Kernel::Dot, &pieces(&[x, y]), &|l| {
            l.y_is_x = u32::from(y_is_x);
        })?;
        let mut offset = 0u32;
        for l in &mut launches {
            l.out_offset = offset;
            offset += l.n_groups;
        }
        let total = u64::from(offset);
        if self.reduce.as_ref().is_none_or(|r| r.n_partials < total) {
            // Two floats per group. The cached groups bind the old buffer: they go with it.
            self.reduce = Some(Reduce {
                partials: gpu.create_buffer(
                    "zograd::partials",
                    total * 8,
                    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                )?,
                n_partials: total,
                sets: Vec::new(),
            });
        }
        let r = self.reduce.as_mut().expect("the reduce binding exists");
        let pos = match r.sets.iter().position(|(k, _)| *k == y.key) {
            Some(p) => p,
            None => {
                let groups = Groups::new(gpu, LayoutKind::Three, &[x, y], &[(0, &r.partials)])?;
                make_room(&mut r.sets);
                r.sets.push((y.key, groups));
                r.sets.len() - 1
            }
        };
        r.sets[pos].1.set_shifts(&mut launches);
        // The reduction and the readback of its partial sums: one submission.
        let encoder = r.sets[pos].1.encode(gpu, Kernel::Dot, &launches)?;
        let mut partial = Vec::with_capacity(2 * total as usize);
        gpu.read_into_after(Some(encoder), &r.partials, 0, 2 * total, &mut partial)?;
        Ok(partial
            .chunks_exact(2)
            .map(|p| f64::from(p[0]) * 2f64.powi(p[1] as i32))
            .sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operand<'a>(chunks: &'a [Chunk]) -> Operand<'a> {
        Operand {
            buffers: &[],
            chunks,
            key: (0, 0),
        }
    }

    /// Pieces cut at the union of both chunkings, over two buffers of 300 and 100 elements
    /// chunked by 128 and by 64.
    #[test]
    fn pieces_cut_at_the_union_of_the_boundaries() {
        let (lens, starts, offsets) = ([300, 100], [0, 0], [0, 300]);
        let a = make_chunks(&lens, &starts, &offsets, 128, 1);
        let b = make_chunks(&lens, &starts, &offsets, 192, 1);
        let p = pieces(&[operand(&a), operand(&b)]);
        let cuts: Vec<(u64, u64)> = p.iter().map(|p| (p.global, p.len)).collect();
        assert_eq!(
            cuts,
            vec![(0, 128), (128, 64), (192, 64), (256, 44), (300, 100)]
        );
        // The third piece: elements 192.. of buffer 0 are element 64 of a's second chunk and
        // element 0 of b's second chunk, both at buffer offset 192.
        assert_eq!(p[2].at, vec![(0, 192), (0, 192)]);
        assert_eq!(p[4].at, vec![(1, 0), (1, 0)]);
        // Equal chunkings: the chunks themselves.
        let same = pieces(&[operand(&a), operand(&a)]);
        assert_eq!(same.len(), a.len());
    }

    /// A range that starts off the alignment: its first chunk ends at the next aligned element
    /// less than a chunk past the aligned start, so every chunk bound from its aligned start spans
    /// at most the chunk length.
    #[test]
    fn unaligned_ranges_chunk_within_the_binding_limit() {
        let c = make_chunks(&[300, 5], &[70, 3], &[0, 300], 128, 64);
        let got: Vec<(usize, u64, u64, u64)> = c
            .iter()
            .map(|c| (c.part, c.first, c.len, c.global))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 70, 122, 0),
                (0, 192, 128, 122),
                (0, 320, 50, 250),
                (1, 3, 5, 300)
            ]
        );
        for c in &c {
            assert!(c.first % 64 + c.len <= 128, "{c:?}");
        }
    }
}
