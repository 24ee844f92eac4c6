// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`Params`]: an ordered set of f32 storage buffers with global element offsets.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::gpu::context::{lock, TrackedBuffer};
use crate::gpu::launch::{Launch, Slots};
use crate::gpu::pipelines::{Kernel, LayoutKind};
use crate::{Error, Gpu, Result};

static NEXT_PARAMS_ID: AtomicU64 = AtomicU64::new(1);

/// How many sets of other `Params` a `Params` keeps bind groups for (copy/axpy sources,
/// optimiser state).
const PAIR_CACHE: usize = 8;

/// The parameters (or a gradient, or optimiser state): f32 storage buffers on one [`Gpu`], in an
/// order that defines the global element index.
///
/// Element `j` of buffer `k` has global index `offsets()[k] + j`; random directions are defined on
/// global indices, so they do not depend on how the elements are split into buffers. A buffer may
/// be larger than the adapter's `max_storage_buffer_binding_size`: zograd's kernels bind it in
/// chunks. The buffers stay where they are: the user's shaders read them through
/// [`Params::buffers`].
///
/// # Example
/// ```no_run
/// # fn main() -> zograd::Result<()> {
/// let gpu = zograd::Gpu::new()?;
/// let w = vec![0.5f32; 1000];
/// let b = vec![0.0f32; 10];
/// let x = zograd::Params::from_slices(&gpu, &[&w[..], &b[..]])?;
/// assert_eq!(x.len(), 1010);
/// assert_eq!(x.offsets(), &[0, 1000]);
/// # Ok(()) }
/// ```
pub struct Params {
    gpu: Gpu,
    id: u64,
    buffers: Vec<wgpu::Buffer>,
    lens: Vec<u64>,
    offsets: Vec<u64>,
    chunks: Vec<Chunk>,
    len: u64,
    max_chunk: u64,
    _owned: Vec<TrackedBuffer>,
    binding: Mutex<Binding>,
}

/// A range of one buffer bound at once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Chunk {
    pub part: usize,
    /// First element within the buffer.
    pub first: u64,
    pub len: u64,
    /// Global index of the first element.
    pub global: u64,
}

/// Cached uniforms and bind groups of one `Params` (created once, reused by every launch).
#[derive(Debug)]
struct Binding {
    slots: Slots,
    single: Vec<wgpu::BindGroup>,
    terms: Option<TermsBinding>,
    /// Bind groups with other `Params` at bindings 2 (and 3), keyed by their ids.
    pairs: Vec<(Vec<u64>, Vec<wgpu::BindGroup>)>,
    reduce: Option<ReduceBinding>,
}

#[derive(Debug)]
struct TermsBinding {
    buffer: TrackedBuffer,
    capacity: usize,
    groups: Vec<wgpu::BindGroup>,
}

#[derive(Debug)]
struct ReduceBinding {
    partials: TrackedBuffer,
    n_partials: u64,
    /// Bind groups per second operand (its id; our own id for the squared norm).
    groups: Vec<(u64, Vec<wgpu::BindGroup>)>,
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Params")
            .field("len", &self.len)
            .field("buffer_lens", &self.lens)
            .field("chunks", &self.chunks.len())
            .finish_non_exhaustive()
    }
}

fn storage_entry<'a>(
    binding: u32,
    buffer: &'a wgpu::Buffer,
    chunk: &Chunk,
) -> wgpu::BindGroupEntry<'a> {
    wgpu::BindGroupEntry {
        binding,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer,
            offset: chunk.first * 4,
            size: wgpu::BufferSize::new(chunk.len * 4),
        }),
    }
}

impl Params {
    /// Uploads each slice into a new buffer (usage STORAGE | COPY_SRC | COPY_DST), in order.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for no slices or an empty slice, [`Error::TooLarge`] for a
    /// slice over the adapter's `max_buffer_size`.
    pub fn from_slices(gpu: &Gpu, slices: &[&[f32]]) -> Result<Self> {
        if slices.is_empty() {
            return Err(Error::invalid(
                "slices: 0 slices given (Params needs at least one buffer)",
            ));
        }
        if let Some(k) = slices.iter().position(|s| s.is_empty()) {
            return Err(Error::invalid(format!(
                "slices[{k}]: length 0 (an empty slice; every buffer needs an element)"
            )));
        }
        let mut owned = Vec::with_capacity(slices.len());
        for (k, s) in slices.iter().enumerate() {
            let buffer = gpu.create_buffer(
                &format!("zograd::params[{k}]"),
                s.len() as u64 * 4,
                wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
            )?;
            gpu.scoped(|| {
                gpu.queue()
                    .write_buffer(&buffer, 0, bytemuck::cast_slice(s));
                Ok(())
            })?;
            owned.push(buffer);
        }
        Self::assemble(gpu, owned.iter().map(|b| (**b).clone()).collect(), owned)
    }

    /// Adopts existing f32 storage buffers, without copying; element order follows `buffers`.
    ///
    /// Each buffer needs `STORAGE` usage and a size that is a positive multiple of 4 bytes;
    /// [`Params::to_vec`] also needs `COPY_SRC`. The buffers must belong to `gpu`'s device.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the offending buffer.
    pub fn from_buffers(gpu: &Gpu, buffers: Vec<wgpu::Buffer>) -> Result<Self> {
        if buffers.is_empty() {
            return Err(Error::invalid(
                "buffers: 0 buffers given (Params needs at least one buffer)",
            ));
        }
        for (k, b) in buffers.iter().enumerate() {
            if !b.usage().contains(wgpu::BufferUsages::STORAGE) {
                return Err(Error::invalid(format!(
                    "buffers[{k}]: usage {:?} lacks STORAGE",
                    b.usage()
                )));
            }
            if b.size() == 0 || b.size() % 4 != 0 {
                return Err(Error::invalid(format!(
                    "buffers[{k}]: size {} bytes is not a positive multiple of 4 (f32 elements)",
                    b.size()
                )));
            }
        }
        Self::assemble(gpu, buffers, Vec::new())
    }

    fn assemble(gpu: &Gpu, buffers: Vec<wgpu::Buffer>, owned: Vec<TrackedBuffer>) -> Result<Self> {
        let lens: Vec<u64> = buffers.iter().map(|b| b.size() / 4).collect();
        let mut offsets = Vec::with_capacity(lens.len());
        let mut len = 0u64;
        for l in &lens {
            offsets.push(len);
            len += l;
        }
        let max_chunk = default_chunk_len(gpu);
        let chunks = make_chunks(&lens, &offsets, max_chunk);
        let binding = Binding::new(gpu, &buffers, &chunks).map_err(|e| match e {
            Error::Validation(msg) => Error::invalid(format!(
                "buffers: cannot be bound on this Gpu's device (from another device?): {msg}"
            )),
            other => other,
        })?;
        Ok(Self {
            gpu: gpu.clone(),
            id: NEXT_PARAMS_ID.fetch_add(1, Ordering::Relaxed),
            buffers,
            lens,
            offsets,
            chunks,
            len,
            max_chunk,
            _owned: owned,
            binding: Mutex::new(binding),
        })
    }

    /// New zero-filled buffers with the same lengths (a gradient or a state buffer).
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] or [`Error::TooLarge`] when the buffers cannot be created.
    pub fn zeros_like(&self) -> Result<Self> {
        let mut owned = Vec::with_capacity(self.lens.len());
        for (k, l) in self.lens.iter().enumerate() {
            owned.push(self.gpu.create_buffer(
                &format!("zograd::params[{k}]"),
                l * 4,
                wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
            )?);
        }
        let mut p = Self::assemble(
            &self.gpu,
            owned.iter().map(|b| (**b).clone()).collect(),
            owned,
        )?;
        if p.chunk_len() != self.chunk_len() {
            p.set_max_chunk_len(self.chunk_len())?;
        }
        Ok(p)
    }

    /// Total number of elements over all buffers.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: a `Params` holds at least one non-empty buffer.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffers in order, for the user's own shaders.
    #[must_use]
    pub fn buffers(&self) -> &[wgpu::Buffer] {
        &self.buffers
    }

    /// Elements per buffer.
    #[must_use]
    pub fn buffer_lens(&self) -> &[u64] {
        &self.lens
    }

    /// The global index of each buffer's first element.
    #[must_use]
    pub fn offsets(&self) -> &[u64] {
        &self.offsets
    }

    /// The [`Gpu`] the buffers live on.
    #[must_use]
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The largest number of elements one kernel dispatch binds at once (the adapter's
    /// `max_storage_buffer_binding_size` / 4, aligned, unless lowered by
    /// [`Params::set_max_chunk_len`]).
    #[must_use]
    pub fn chunk_len(&self) -> u64 {
        self.max_chunk
    }

    /// Lowers the number of elements bound per dispatch below the adapter's limit (rounded down
    /// to the storage offset alignment), e.g. to keep single dispatches short, or to exercise
    /// chunk boundaries in tests. Rebuilds the cached bind groups.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `elems` is below the alignment (usually 64 elements).
    pub fn set_max_chunk_len(&mut self, elems: u64) -> Result<()> {
        let align = storage_align_elems(&self.gpu);
        let asked = elems;
        let elems = (elems.min(default_chunk_len(&self.gpu)) / align) * align;
        if elems == 0 {
            return Err(Error::invalid(format!(
                "max_chunk_len: must be at least the storage offset alignment ({align} elements), \
                 got {asked}"
            )));
        }
        let chunks = make_chunks(&self.lens, &self.offsets, elems);
        let binding = Binding::new(&self.gpu, &self.buffers, &chunks)?;
        self.chunks = chunks;
        self.max_chunk = elems;
        *lock(&self.binding) = binding;
        Ok(())
    }

    /// Downloads all elements in global order. Waits for the GPU.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when an adopted buffer lacks `COPY_SRC`; device errors.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(self.len as usize);
        for (k, b) in self.buffers.iter().enumerate() {
            if !b.usage().contains(wgpu::BufferUsages::COPY_SRC) {
                return Err(Error::invalid(format!(
                    "buffers[{k}]: usage {:?} lacks COPY_SRC, needed to read it back",
                    b.usage()
                )));
            }
            self.gpu.read_f32(b, 0, self.lens[k], &mut out)?;
        }
        Ok(out)
    }

    /// Uploads `data` (all elements, global order) into the existing buffers.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `data.len() != self.len()` or a buffer lacks `COPY_DST`.
    pub fn write(&mut self, data: &[f32]) -> Result<()> {
        if data.len() as u64 != self.len {
            return Err(Error::invalid(format!(
                "data: length {} differs from the parameters' {}",
                data.len(),
                self.len
            )));
        }
        for (k, b) in self.buffers.iter().enumerate() {
            if !b.usage().contains(wgpu::BufferUsages::COPY_DST) {
                return Err(Error::invalid(format!(
                    "buffers[{k}]: usage {:?} lacks COPY_DST, needed to write it",
                    b.usage()
                )));
            }
        }
        self.gpu.scoped(|| {
            for (k, b) in self.buffers.iter().enumerate() {
                let at = self.offsets[k] as usize;
                let piece = &data[at..at + self.lens[k] as usize];
                self.gpu
                    .queue()
                    .write_buffer(b, 0, bytemuck::cast_slice(piece));
            }
            Ok(())
        })
    }

    /// Overwrites the elements with global indices `index..index + values.len()` (which may span
    /// buffers) from the host, touching nothing else: a small `write_buffer` per buffer touched.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the range passes the end or a buffer lacks `COPY_DST`.
    pub fn write_at(&mut self, index: u64, values: &[f32]) -> Result<()> {
        let end = index.saturating_add(values.len() as u64);
        if end > self.len {
            return Err(Error::invalid(format!(
                "index: elements {index}..{end} pass the end ({})",
                self.len
            )));
        }
        self.gpu.scoped(|| {
            for (k, b) in self.buffers.iter().enumerate() {
                let (lo, hi) = (self.offsets[k], self.offsets[k] + self.lens[k]);
                let (a, z) = (index.max(lo), end.min(hi));
                if a >= z {
                    continue;
                }
                if !b.usage().contains(wgpu::BufferUsages::COPY_DST) {
                    return Err(Error::invalid(format!(
                        "buffers[{k}]: usage {:?} lacks COPY_DST, needed to write it",
                        b.usage()
                    )));
                }
                let piece = &values[(a - index) as usize..(z - index) as usize];
                self.gpu
                    .queue()
                    .write_buffer(b, (a - lo) * 4, bytemuck::cast_slice(piece));
            }
            Ok(())
        })
    }

    /// Whether `other` has the same buffer lengths (and so the same chunks).
    #[must_use]
    pub fn same_shape(&self, other: &Params) -> bool {
        self.lens == other.lens
    }

    /// Fails unless `other` lives on the same device and has the same shape.
    pub(crate) fn check_compatible(&self, other: &Params, what: &str) -> Result<()> {
        if !self.gpu.same(&other.gpu) {
            return Err(Error::invalid(format!(
                "{what}: lives on another Gpu ({}) than the destination ({})",
                other.gpu.label(),
                self.gpu.label()
            )));
        }
        if !self.same_shape(other) {
            return Err(Error::invalid(format!(
                "{what}: buffer lengths {:?} differ from {:?}",
                other.lens, self.lens
            )));
        }
        Ok(())
    }

    /// Bytes of the GPU buffers zograd created for these parameters (adopted ones excluded).
    #[must_use]
    pub fn owned_bytes(&self) -> u64 {
        self._owned.iter().map(|b| b.size()).sum()
    }

    /// Launches `kernel` (layout One) over every chunk; `fill` completes each chunk's launch.
    pub(crate) fn launch(&mut self, kernel: Kernel, fill: impl Fn(&mut Launch)) -> Result<()> {
        let launches = self.launches(kernel, &fill)?;
        let b = lock(&self.binding);
        let items: Vec<_> = launches.iter().copied().zip(b.single.iter()).collect();
        b.slots.submit(&self.gpu, kernel, &items)
    }

    /// Launches an accumulate `kernel` with `terms` (sample, coefficient) in binding 2.
    pub(crate) fn launch_terms(
        &mut self,
        kernel: Kernel,
        terms: &[(u32, f32)],
        fill: impl Fn(&mut Launch),
    ) -> Result<()> {
        let launches = self.launches(kernel, &|l: &mut Launch| {
            fill(l);
            l.n_terms = terms.len() as u32;
        })?;
        let mut b = lock(&self.binding);
        // Slot 0 holds the count, then one (sample, coeff bits) pair per term.
        let need = terms.len() + 1;
        if b.terms.as_ref().is_none_or(|t| t.capacity < need) {
            let capacity = need.next_power_of_two().max(16);
            let buffer = self.gpu.create_buffer(
                "zograd::terms",
                capacity as u64 * 8,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            )?;
            let groups = self.gpu.scoped(|| {
                Ok(self
                    .chunks
                    .iter()
                    .map(|c| {
                        self.bind(
                            LayoutKind::Two,
                            &b.slots,
                            &[
                                storage_entry(1, &self.buffers[c.part], c),
                                wgpu::BindGroupEntry {
                                    binding: 2,
                                    resource: buffer.as_entire_binding(),
                                },
                            ],
                        )
                    })
                    .collect())
            })?;
            b.terms = Some(TermsBinding {
                buffer,
                capacity,
                groups,
            });
        }
        let t = b.terms.as_ref().expect("terms binding was just created");
        let packed: Vec<[u32; 2]> = std::iter::once([terms.len() as u32, 0])
            .chain(terms.iter().map(|(s, c)| [*s, c.to_bits()]))
            .collect();
        self.gpu.scoped(|| {
            self.gpu
                .queue()
                .write_buffer(&t.buffer, 0, bytemuck::cast_slice(&packed));
            Ok(())
        })?;
        let items: Vec<_> = launches.iter().copied().zip(t.groups.iter()).collect();
        b.slots.submit(&self.gpu, kernel, &items)
    }

    /// Launches `kernel` with `self` read-write at binding 1 and `others` at bindings 2, 3 (read
    /// only or read-write as the kernel's layout says), chunk by chunk. `what` names the others
    /// in errors.
    pub(crate) fn launch_with(
        &mut self,
        kernel: Kernel,
        others: &[&Params],
        what: &str,
        fill: impl Fn(&mut Launch),
    ) -> Result<()> {
        debug_assert_eq!(others.len(), kernel.layout().extra());
        for o in others {
            self.check_compatible(o, what)?;
            if self.id == o.id {
                return Err(Error::invalid(format!(
                    "{what}: the same Params as the destination"
                )));
            }
            if self.chunks.len() != o.chunks.len() {
                return Err(Error::invalid(format!(
                    "{what}: chunked differently from the destination (set_max_chunk_len differs)"
                )));
            }
        }
        let key: Vec<u64> = others.iter().map(|o| o.id).collect();
        let launches = self.launches(kernel, &fill)?;
        let mut b = lock(&self.binding);
        let pos = match b.pairs.iter().position(|(k, _)| *k == key) {
            Some(p) => p,
            None => {
                let groups = self.gpu.scoped(|| {
                    Ok((0..self.chunks.len())
                        .map(|i| {
                            let c = &self.chunks[i];
                            let mut entries = vec![storage_entry(1, &self.buffers[c.part], c)];
                            for (k, o) in others.iter().enumerate() {
                                let oc = &o.chunks[i];
                                entries.push(storage_entry(2 + k as u32, &o.buffers[oc.part], oc));
                            }
                            self.bind(kernel.layout(), &b.slots, &entries)
                        })
                        .collect())
                })?;
                if b.pairs.len() >= PAIR_CACHE {
                    b.pairs.remove(0);
                }
                b.pairs.push((key, groups));
                b.pairs.len() - 1
            }
        };
        let items: Vec<_> = launches
            .iter()
            .copied()
            .zip(b.pairs[pos].1.iter())
            .collect();
        b.slots.submit(&self.gpu, kernel, &items)
    }

    /// Σ xᵢ·yᵢ over all elements (`other = None`: y = x, the squared norm; the buffer is then
    /// bound twice, read-only): per-workgroup partial sums on the GPU, added in f64 on the
    /// host. Waits for the GPU (one readback).
    pub(crate) fn reduce(&self, other: Option<&Params>) -> Result<f64> {
        let other = other.unwrap_or(self);
        self.check_compatible(other, "y")?;
        // y = x: the kernel loads each element once (`dist = 1` in `shaders/reduce.wgsl`).
        let squares = u32::from(other.id == self.id);
        let mut launches = self.launches(Kernel::Dot, &|l| l.dist = squares)?;
        let mut offset = 0u32;
        for l in &mut launches {
            l.out_offset = offset;
            offset += l.n_groups;
        }
        let total = u64::from(offset);
        let mut b = lock(&self.binding);
        if b.reduce.as_ref().is_none_or(|r| r.n_partials < total) {
            let partials = self.gpu.create_buffer(
                "zograd::partials",
                total * 4,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            )?;
            b.reduce = Some(ReduceBinding {
                partials,
                n_partials: total,
                groups: Vec::new(),
            });
        }
        let r = b.reduce.as_ref().expect("the reduce binding exists");
        let groups = match r.groups.iter().find(|(id, _)| *id == other.id) {
            Some((_, g)) => g.clone(),
            None => {
                let g: Vec<wgpu::BindGroup> = self.gpu.scoped(|| {
                    Ok(self
                        .chunks
                        .iter()
                        .zip(&other.chunks)
                        .map(|(c, oc)| {
                            self.bind(
                                LayoutKind::Three,
                                &b.slots,
                                &[
                                    wgpu::BindGroupEntry {
                                        binding: 1,
                                        resource: r.partials.as_entire_binding(),
                                    },
                                    storage_entry(2, &self.buffers[c.part], c),
                                    storage_entry(3, &other.buffers[oc.part], oc),
                                ],
                            )
                        })
                        .collect())
                })?;
                let r = b.reduce.as_mut().expect("the reduce binding exists");
                if r.groups.len() >= PAIR_CACHE {
                    r.groups.remove(0);
                }
                r.groups.push((other.id, g.clone()));
                g
            }
        };
        let items: Vec<_> = launches.iter().copied().zip(groups.iter()).collect();
        // The reduction and the readback of its partial sums: one submission.
        let encoder = b.slots.encode(&self.gpu, Kernel::Dot, &items)?;
        let mut partial = Vec::with_capacity(total as usize);
        let r = b.reduce.as_ref().expect("the reduce binding exists");
        self.gpu
            .read_f32_after(Some(encoder), &r.partials, 0, total, &mut partial)?;
        Ok(partial.iter().map(|v| f64::from(*v)).sum())
    }

    fn launches(&self, kernel: Kernel, fill: &dyn Fn(&mut Launch)) -> Result<Vec<Launch>> {
        self.chunks
            .iter()
            .map(|c| {
                let mut l = Launch::new(&self.gpu, kernel, c.len, c.global)?;
                fill(&mut l);
                Ok(l)
            })
            .collect()
    }

    fn bind(
        &self,
        kind: LayoutKind,
        slots: &Slots,
        rest: &[wgpu::BindGroupEntry<'_>],
    ) -> wgpu::BindGroup {
        let mut entries = vec![slots.entry()];
        entries.extend_from_slice(rest);
        self.gpu
            .device()
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("zograd::params"),
                layout: self.gpu.inner.layouts.bind_group_layout(kind),
                entries: &entries,
            })
    }
}

impl Binding {
    fn new(gpu: &Gpu, buffers: &[wgpu::Buffer], chunks: &[Chunk]) -> Result<Self> {
        let slots = Slots::new(gpu, "zograd::launch_uniforms", chunks.len())?;
        let single = gpu.scoped(|| {
            Ok(chunks
                .iter()
                .map(|c| {
                    gpu.device().create_bind_group(&wgpu::BindGroupDescriptor {
                        label: Some("zograd::params"),
                        layout: gpu.inner.layouts.bind_group_layout(LayoutKind::One),
                        entries: &[slots.entry(), storage_entry(1, &buffers[c.part], c)],
                    })
                })
                .collect())
        })?;
        Ok(Self {
            slots,
            single,
            terms: None,
            pairs: Vec::new(),
            reduce: None,
        })
    }
}

/// The storage offset alignment in elements.
fn storage_align_elems(gpu: &Gpu) -> u64 {
    (u64::from(gpu.limits().min_storage_buffer_offset_alignment) / 4).max(1)
}

/// Elements per chunk: the binding limit, at most 2^30 (u32 index math) and at most what a 2-D
/// grid of the adapter's size covers (1024 elements per workgroup, one group spare for chunks
/// that start inside a Philox block), aligned down to the storage offset alignment.
fn default_chunk_len(gpu: &Gpu) -> u64 {
    let align = storage_align_elems(gpu);
    let by_limit = gpu.limits().max_storage_buffer_binding_size / 4;
    let by_grid = crate::gpu::launch::grid_capacity(gpu);
    ((by_limit.min(by_grid).min(1 << 30)) / align) * align
}

fn make_chunks(lens: &[u64], offsets: &[u64], chunk_len: u64) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    for (part, (&len, &off)) in lens.iter().zip(offsets).enumerate() {
        let mut first = 0;
        while first < len {
            let n = (len - first).min(chunk_len);
            chunks.push(Chunk {
                part,
                first,
                len: n,
                global: off + first,
            });
            first += n;
        }
    }
    chunks
}

/// A buffer shaped and chunked like `params` in `slot` (zeroed when created), made on first use
/// and again only if the shape, chunking or device changed: the saved copies of
/// `exact_restore` and the optimiser's and modules' state buffers.
pub(crate) fn ensure_like<'a>(
    slot: &'a mut Option<Params>,
    params: &Params,
) -> Result<&'a mut Params> {
    let fits = slot.as_ref().is_some_and(|s| {
        s.gpu().same(params.gpu()) && s.same_shape(params) && s.chunk_len() == params.chunk_len()
    });
    if !fits {
        *slot = None;
        *slot = Some(params.zeros_like()?);
    }
    Ok(slot.as_mut().expect("the buffer was just created"))
}
