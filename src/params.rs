// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`Params`]: an ordered set of f32 storage buffers with global element offsets.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::gpu::bind::{
    default_chunk_len, make_chunks, storage_align_elems, BindCache, Chunk, Operand,
};
use crate::gpu::buffers::{check_usage, Use};
use crate::gpu::context::{lock, TrackedBuffer};
use crate::gpu::kernel::Kernel;
use crate::gpu::launch::Launch;
use crate::{Error, Gpu, Result};

static NEXT_PARAMS_ID: AtomicU64 = AtomicU64::new(1);

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
    /// The uniforms and bind groups of the kernels launched over these buffers.
    bind_cache: Mutex<BindCache>,
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
            owned.push(gpu.create_f32_storage(
                &format!("zograd::params[{k}]"),
                s.len() as u64,
                Some(s),
            )?);
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
            check_usage(b, &format!("buffers[{k}]"), Use::Kernel)?;
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
        let id = NEXT_PARAMS_ID.fetch_add(1, Ordering::Relaxed);
        let operand = Operand {
            buffers: &buffers,
            chunks: &chunks,
            key: (id, max_chunk),
        };
        let bind_cache = BindCache::new(gpu, operand).map_err(|e| match e {
            Error::Validation(msg) => Error::invalid(format!(
                "buffers: cannot be bound on this Gpu's device (from another device?): {msg}"
            )),
            other => other,
        })?;
        Ok(Self {
            gpu: gpu.clone(),
            id,
            buffers,
            lens,
            offsets,
            chunks,
            len,
            max_chunk,
            _owned: owned,
            bind_cache: Mutex::new(bind_cache),
        })
    }

    /// New zero-filled buffers with the same lengths (a gradient or a state buffer).
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] or [`Error::TooLarge`] when the buffers cannot be created.
    pub fn zeros_like(&self) -> Result<Self> {
        let mut owned = Vec::with_capacity(self.lens.len());
        for (k, l) in self.lens.iter().enumerate() {
            owned.push(
                self.gpu
                    .create_f32_storage(&format!("zograd::params[{k}]"), *l, None)?,
            );
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
    /// chunk boundaries in tests. Rebuilds the cached bind groups. Other `Params` a kernel
    /// combines with this one may keep another chunking: launches are split at the union of
    /// both operands' chunk boundaries.
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
        let bind_cache = BindCache::new(
            &self.gpu,
            Operand {
                buffers: &self.buffers,
                chunks: &chunks,
                key: (self.id, elems),
            },
        )?;
        self.chunks = chunks;
        self.max_chunk = elems;
        *lock(&self.bind_cache) = bind_cache;
        Ok(())
    }

    /// Downloads all elements in global order. Waits for the GPU.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when an adopted buffer lacks `COPY_SRC`; device errors.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(self.len as usize);
        for (k, b) in self.buffers.iter().enumerate() {
            check_usage(b, &format!("buffers[{k}]"), Use::ReadBack)?;
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
            check_usage(b, &format!("buffers[{k}]"), Use::HostWrite)?;
        }
        let writes: Vec<_> = self
            .buffers
            .iter()
            .enumerate()
            .map(|(k, b)| {
                let at = self.offsets[k] as usize;
                (b, 0, &data[at..at + self.lens[k] as usize])
            })
            .collect();
        self.gpu.write_f32s(&writes)
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
        let mut writes = Vec::new();
        for (k, b) in self.buffers.iter().enumerate() {
            let (lo, hi) = (self.offsets[k], self.offsets[k] + self.lens[k]);
            let (a, z) = (index.max(lo), end.min(hi));
            if a >= z {
                continue;
            }
            check_usage(b, &format!("buffers[{k}]"), Use::HostWrite)?;
            writes.push((
                b,
                (a - lo) * 4,
                &values[(a - index) as usize..(z - index) as usize],
            ));
        }
        self.gpu.write_f32s(&writes)
    }

    /// Whether `other` has the same buffer lengths: the kernels combine such `Params` element by
    /// element, whatever their chunking.
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

    /// These buffers and their chunking, as the launch code sees them.
    fn operand(&self) -> Operand<'_> {
        Operand {
            buffers: &self.buffers,
            chunks: &self.chunks,
            key: (self.id, self.max_chunk),
        }
    }

    /// Launches `kernel` (layout One) over every chunk; `fill` completes each chunk's launch.
    pub(crate) fn launch(&mut self, kernel: Kernel, fill: impl Fn(&mut Launch)) -> Result<()> {
        lock(&self.bind_cache).launch(&self.gpu, kernel, &fill)
    }

    /// Launches an accumulate `kernel` with `terms` (sample, coefficient) in binding 2.
    pub(crate) fn launch_terms(
        &mut self,
        kernel: Kernel,
        terms: &[(u32, f32)],
        fill: impl Fn(&mut Launch),
    ) -> Result<()> {
        lock(&self.bind_cache).launch_terms(&self.gpu, kernel, self.operand(), terms, &fill)
    }

    /// Launches `kernel` with `self` read-write at binding 1 and `others` at bindings 2, 3 (read
    /// only or read-write as the kernel's layout says). The operands may be chunked
    /// differently. `what` names the others in errors.
    pub(crate) fn launch_with(
        &mut self,
        kernel: Kernel,
        others: &[&Params],
        what: &str,
        fill: impl Fn(&mut Launch),
    ) -> Result<()> {
        for o in others {
            self.check_compatible(o, what)?;
            if self.id == o.id {
                return Err(Error::invalid(format!(
                    "{what}: the same Params as the destination"
                )));
            }
        }
        let others: Vec<Operand<'_>> = others.iter().map(|o| o.operand()).collect();
        lock(&self.bind_cache).launch_with(&self.gpu, kernel, self.operand(), &others, &fill)
    }

    /// Σ xᵢ·yᵢ over all elements (`other = None`, or `self` itself: the squared norm), chunked
    /// alike or not: scaled per-workgroup partial sums on the GPU, added in f64 on the host.
    /// Waits for the GPU (one readback).
    pub(crate) fn reduce(&self, other: Option<&Params>) -> Result<f64> {
        let y = match other {
            Some(o) if o.id != self.id => {
                self.check_compatible(o, "y")?;
                Some(o.operand())
            }
            _ => None,
        };
        lock(&self.bind_cache).reduce(&self.gpu, self.operand(), y)
    }
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
