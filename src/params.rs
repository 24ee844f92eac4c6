// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`Params`]: an ordered set of f32 storage buffers with global element offsets.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::bounds::{Attached, Bounds};
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
    /// The element of each buffer where its range starts (0 for whole buffers).
    starts: Vec<u64>,
    lens: Vec<u64>,
    offsets: Vec<u64>,
    chunks: Vec<Chunk>,
    len: u64,
    max_chunk: u64,
    _owned: Vec<TrackedBuffer>,
    /// The uniforms and bind groups of the kernels launched over these buffers.
    bind_cache: Mutex<BindCache>,
    /// Per-element scales ([`Params::set_scales`]): on the GPU, shaped like these parameters,
    /// and on the host.
    scales: Option<(Box<Params>, Vec<f32>)>,
    /// Box bounds ([`Params::set_bounds`]): on the GPU and on the host.
    bounds: Option<Box<Attached>>,
}

/// Per-parameter scales for [`Params::set_scales`]: positive (or zero, which freezes an
/// element) finite factors s with x = s⊙y.
#[derive(Clone, Debug, PartialEq)]
pub enum Scales {
    /// One scale for all elements of each buffer (range), in order.
    PerBuffer(Vec<f32>),
    /// One scale per element, in global order.
    PerElement(Vec<f32>),
}

impl Scales {
    /// Relative scales sᵢ = max(1, |xᵢ|) for the values `x` (global order): with them every
    /// estimator steps by h·max(1, |xᵢ|) (the relative steps of
    /// [`Fdm::relative_step`](crate::approx::Fdm::relative_step), for the random estimators) —
    /// and, since x = s⊙y, the estimate and the optimiser's updates are in the relative units y
    /// too. That is the consistent way to give a random estimator relative steps: along a
    /// direction u, a step of h·(s⊙u) measures ∇f·(s⊙u), an unbiased estimate of s⊙∇f, not of
    /// ∇f, and turning it back into ∇f would take one more n-sized pass and buffer (which the
    /// fused MeZO step does not have); in y-units it needs neither.
    ///
    /// ```
    /// use zograd::{Params, Scales};
    /// # fn main() -> zograd::Result<()> {
    /// let gpu = zograd::Gpu::new()?;
    /// let start = [2.0e4f32, -0.5, 300.0];
    /// let mut x = Params::from_slices(&gpu, &[&start[..]])?;
    /// x.set_scales(Scales::relative(&start))?;
    /// assert_eq!(x.scales(), Some(&[2.0e4f32, 1.0, 300.0][..]));
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn relative(x: &[f32]) -> Self {
        Self::PerElement(x.iter().map(|v| v.abs().max(1.0)).collect())
    }
}

impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Params")
            .field("len", &self.len)
            .field("buffer_lens", &self.lens)
            .field("buffer_starts", &self.starts)
            .field("chunks", &self.chunks.len())
            .field("scaled", &self.scales.is_some())
            .field("bounded", &self.bounds.is_some())
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
        let ranges = slices.iter().map(|s| 0..s.len() as u64).collect();
        Self::assemble(
            gpu,
            owned.iter().map(|b| (**b).clone()).collect(),
            ranges,
            owned,
        )
    }

    /// Adopts existing f32 storage buffers, without copying; element order follows `buffers`.
    ///
    /// Each buffer needs `STORAGE` usage and a size that is a positive multiple of 4 bytes;
    /// [`Params::to_vec`] also needs `COPY_SRC`. The buffers must belong to `gpu`'s device. For
    /// parts of buffers, see [`Params::from_buffer_ranges`].
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
        let ranges = buffers.iter().map(|b| 0..b.size() / 4).collect();
        Self::assemble(gpu, buffers, ranges, Vec::new())
    }

    /// Adopts element ranges of existing f32 storage buffers, without copying: the parameters
    /// are elements `range.start .. range.end` (f32 elements, not bytes) of each buffer, in the
    /// order given. Nothing outside the ranges is ever read or written by zograd, so a range can
    /// be part of a larger block (e.g. 6 of the 7 floats of a simulation's uniform-and-storage
    /// parameter buffer). Several disjoint ranges of one buffer may be given (e.g. one field of
    /// each struct of an array, one range per struct; a strided field is not a single range).
    ///
    /// A range may start at any element: one that starts off the adapter's
    /// `min_storage_buffer_offset_alignment` is bound from the aligned offset below it and the
    /// kernels shift their indices. Usage flags as [`Params::from_buffers`]. Element j of range k
    /// has global index `offsets()[k] + j`, so random directions do not depend on where the
    /// ranges lie.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the range (`ranges[k]`) for none given, an empty or
    /// reversed range, one past the buffer's end, overlapping ranges of one buffer, or a buffer
    /// without `STORAGE` usage or whose size is not a multiple of 4 bytes.
    ///
    /// # Example
    /// ```
    /// # fn main() -> zograd::Result<()> {
    /// let gpu = zograd::Gpu::new()?;
    /// // A simulation's parameter block of 7 floats, read by its shaders as a uniform.
    /// let block = gpu.device().create_buffer(&wgpu::BufferDescriptor {
    ///     label: Some("sim params"),
    ///     size: 7 * 4,
    ///     usage: wgpu::BufferUsages::UNIFORM
    ///         | wgpu::BufferUsages::STORAGE
    ///         | wgpu::BufferUsages::COPY_SRC
    ///         | wgpu::BufferUsages::COPY_DST,
    ///     mapped_at_creation: false,
    /// });
    /// // Fit elements 1..7; element 0 (say, the time step) stays untouched.
    /// let mut x = zograd::Params::from_buffer_ranges(&gpu, vec![(block.clone(), 1..7)])?;
    /// assert_eq!((x.len(), x.buffer_starts()), (6, &[1u64][..]));
    /// x.write(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])?;
    /// zograd::kernels::scale(&mut x, 2.0)?;
    /// assert_eq!(gpu.read_f32s(&block, 0, 7)?, vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0]);
    /// # Ok(()) }
    /// ```
    pub fn from_buffer_ranges(gpu: &Gpu, ranges: Vec<(wgpu::Buffer, Range<u64>)>) -> Result<Self> {
        if ranges.is_empty() {
            return Err(Error::invalid(
                "ranges: 0 ranges given (Params needs at least one range)",
            ));
        }
        for (k, (b, r)) in ranges.iter().enumerate() {
            let what = format!("ranges[{k}]");
            check_usage(b, &what, Use::Kernel)?;
            if b.size() % 4 != 0 {
                return Err(Error::invalid(format!(
                    "{what}: buffer size {} bytes is not a multiple of 4 (f32 elements)",
                    b.size()
                )));
            }
            if r.start >= r.end {
                return Err(Error::invalid(format!(
                    "{what}: elements {}..{} form an empty or reversed range",
                    r.start, r.end
                )));
            }
            if r.end > b.size() / 4 {
                return Err(Error::invalid(format!(
                    "{what}: elements {}..{} pass the end of the buffer ({} elements)",
                    r.start,
                    r.end,
                    b.size() / 4
                )));
            }
            for (j, (b2, r2)) in ranges[..k].iter().enumerate() {
                if b2 == b && r.start < r2.end && r2.start < r.end {
                    return Err(Error::invalid(format!(
                        "{what}: elements {}..{} overlap ranges[{j}] ({}..{}) of the same buffer",
                        r.start, r.end, r2.start, r2.end
                    )));
                }
            }
        }
        let (buffers, ranges): (Vec<_>, Vec<_>) = ranges.into_iter().unzip();
        Self::assemble(gpu, buffers, ranges, Vec::new())
    }

    fn assemble(
        gpu: &Gpu,
        buffers: Vec<wgpu::Buffer>,
        ranges: Vec<Range<u64>>,
        owned: Vec<TrackedBuffer>,
    ) -> Result<Self> {
        let starts: Vec<u64> = ranges.iter().map(|r| r.start).collect();
        let lens: Vec<u64> = ranges.iter().map(|r| r.end - r.start).collect();
        let mut offsets = Vec::with_capacity(lens.len());
        let mut len = 0u64;
        for l in &lens {
            offsets.push(len);
            len += l;
        }
        let max_chunk = default_chunk_len(gpu);
        let chunks = make_chunks(
            &lens,
            &starts,
            &offsets,
            max_chunk,
            storage_align_elems(gpu),
        );
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
            starts,
            lens,
            offsets,
            chunks,
            len,
            max_chunk,
            _owned: owned,
            bind_cache: Mutex::new(bind_cache),
            scales: None,
            bounds: None,
        })
    }

    /// New zero-filled buffers with the same lengths (a gradient or a state buffer): whole
    /// buffers of the ranges' lengths, without scales.
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
        let ranges = self.lens.iter().map(|l| 0..*l).collect();
        let mut p = Self::assemble(
            &self.gpu,
            owned.iter().map(|b| (**b).clone()).collect(),
            ranges,
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
    ///
    /// zograd may hold kernel launches on these buffers recorded and not yet submitted (with
    /// one of zograd's own objectives, an optimiser step's last update joins the next
    /// evaluation's submission): work of your own
    /// that you submit *outside* an objective call (and `queue.write_buffer` into them) must
    /// come after [`Gpu::flush`]. Inside an objective call, and through zograd's own reads and
    /// writes, nothing is needed.
    #[must_use]
    pub fn buffers(&self) -> &[wgpu::Buffer] {
        &self.buffers
    }

    /// The element of each buffer where its range starts (0 for whole buffers; see
    /// [`Params::from_buffer_ranges`]).
    #[must_use]
    pub fn buffer_starts(&self) -> &[u64] {
        &self.starts
    }

    /// Elements per buffer (per range).
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
        let chunks = make_chunks(&self.lens, &self.starts, &self.offsets, elems, align);
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
            self.gpu
                .read_f32(b, self.starts[k] * 4, self.lens[k], &mut out)?;
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
                (b, self.starts[k] * 4, &data[at..at + self.lens[k] as usize])
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
                (self.starts[k] + a - lo) * 4,
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

    /// Bytes of the GPU buffers zograd created for these parameters (adopted ones excluded;
    /// the scales' and bounds' buffers included).
    #[must_use]
    pub fn owned_bytes(&self) -> u64 {
        let scales = self.scales.as_ref().map_or(0, |(s, _)| s.owned_bytes());
        let bounds = self
            .bounds
            .as_ref()
            .map_or(0, |b| b.lo.owned_bytes() + b.hi.owned_bytes());
        self._owned.iter().map(|b| b.size()).sum::<u64>() + scales + bounds
    }

    /// Gives the parameters per-element scales s (a diagonal preconditioner): from now on the
    /// parameters x are treated as x = s⊙y and every estimator, optimiser module and step works
    /// in the units y. Concretely, the kernels that *move* these parameters multiply what they
    /// add by s elementwise: [`perturb`](crate::kernels::perturb) adds h·sᵢ·zᵢ,
    /// [`accumulate`](crate::kernels::accumulate) and
    /// [`scale_accumulate`](crate::kernels::scale_accumulate) add sᵢ·Σ cₜ·zₜᵢ, and
    /// [`axpy`](crate::kernels::axpy) into them adds a·sᵢ·uᵢ; `Fdm` moves element i by h·sᵢ.
    /// Gradients and updates (which live in other `Params`, without scales) are then in
    /// y-units, and an optimiser step is x ← x − s⊙update (the fused MeZO step
    /// x ← a·x + s⊙(h − lr·c)·z). Kernels that set values ([`copy`](crate::kernels::copy),
    /// [`fill`](crate::kernels::fill), [`Params::write`], [`Params::write_at`]) and
    /// [`scale`](crate::kernels::scale) are unchanged, as are [`Params::to_vec`] and the
    /// user's view of the buffers: x stays in its own (physical) units.
    ///
    /// Pick sᵢ as the typical magnitude of element i (e.g. its initial value): one h and one
    /// learning rate then fit parameters of very different magnitudes. A scale of 0 freezes
    /// the element. The scales live in one more zograd buffer of `len()` floats (and a host
    /// copy); objectives that batch through [`loss_batch`](crate::Objective::loss_batch)
    /// regenerate x + h·z without the scales, so estimators evaluate them point by point while
    /// scales are set, and [`Jvp::User`](crate::approx::Jvp::User) is refused (a user JVP gives
    /// ∇f·z, not ∇f·(s⊙z)).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the number of scales differs from the number of buffers
    /// (`PerBuffer`) or elements (`PerElement`), or a scale is negative, NaN or infinite.
    ///
    /// # Example
    /// ```no_run
    /// # fn main() -> zograd::Result<()> {
    /// use zograd::{Params, Scales};
    /// let gpu = zograd::Gpu::new()?;
    /// // A rate near 0.005 and a distance near 30: step both in units of their own size.
    /// let mut x = Params::from_slices(&gpu, &[&[0.005f32][..], &[30.0][..]])?;
    /// x.set_scales(Scales::PerBuffer(vec![0.005, 30.0]))?;
    /// assert_eq!(x.scale_at(1), 30.0);
    /// # Ok(()) }
    /// ```
    pub fn set_scales(&mut self, scales: Scales) -> Result<()> {
        let host: Vec<f32> = match scales {
            Scales::PerBuffer(v) => {
                if v.len() != self.lens.len() {
                    return Err(Error::invalid(format!(
                        "scales: {} per-buffer scales for {} buffers",
                        v.len(),
                        self.lens.len()
                    )));
                }
                check_scales(&v)?;
                v.iter()
                    .zip(&self.lens)
                    .flat_map(|(s, l)| std::iter::repeat_n(*s, *l as usize))
                    .collect()
            }
            Scales::PerElement(v) => {
                if v.len() as u64 != self.len {
                    return Err(Error::invalid(format!(
                        "scales: {} per-element scales for {} elements",
                        v.len(),
                        self.len
                    )));
                }
                check_scales(&v)?;
                v
            }
        };
        let mut device = self.zeros_like()?;
        device.write(&host)?;
        self.scales = Some((Box::new(device), host));
        Ok(())
    }

    /// Removes the scales of [`Params::set_scales`] (all scales 1 again).
    pub fn clear_scales(&mut self) {
        self.scales = None;
    }

    /// The per-element scales of [`Params::set_scales`] in global order, if set.
    #[must_use]
    pub fn scales(&self) -> Option<&[f32]> {
        self.scales.as_ref().map(|(_, h)| h.as_slice())
    }

    /// The scale of the element with global index `index` (1 without scales; panics-free: an
    /// index past the end gives 1 as well).
    #[must_use]
    pub fn scale_at(&self, index: u64) -> f32 {
        self.scales
            .as_ref()
            .and_then(|(_, h)| h.get(index as usize).copied())
            .unwrap_or(1.0)
    }

    /// Whether [`Params::set_scales`] gave these parameters scales.
    #[must_use]
    pub fn has_scales(&self) -> bool {
        self.scales.is_some()
    }

    /// Attaches box bounds lo ≤ x ≤ hi (x's physical units, also with
    /// [`set_scales`](Params::set_scales)); they replace any bounds set before. They live in two
    /// more zograd buffers shaped like x (2·`len()` floats, counted in
    /// [`owned_bytes`](Params::owned_bytes)) and on the host. x itself is not changed: project it
    /// with [`kernels::project`](crate::kernels::project) or the optimiser module
    /// [`Project`](crate::optim::Project).
    ///
    /// With bounds attached:
    /// - [`Project`](crate::optim::Project) clamps x into the box after every update (a GPU
    ///   kernel), on the fused MeZO path too.
    /// - [`Fdm`](crate::approx::Fdm) never evaluates outside the box: an element whose points
    ///   would leave it uses the formula's one-sided partner
    ///   ([`Formula::one_sided`](crate::approx::Formula::one_sided): Central → Forward3,
    ///   Central4 → Forward5; mirrored to point away from the near bound), and when
    ///   neither side has room for the step, the side with more room and a shrunk step (scipy's
    ///   `approx_derivative`). An element with lo = hi gets the gradient 0 and no evaluation.
    /// - The random estimators keep every point x + k·h·u in the box. Each sample's step is
    ///   shrunk to h_s = r_s·h with r_s = min(1, min_i room_i/(k·|u_i|)) (room: the distance to
    ///   the bound on the side the point moves to, in y-units), computed on the host after one
    ///   download of x per call: for Rademacher and Uniform directions from |u_i| ≤ 1 or √3
    ///   whichever side each element moves to (one pass over x, the same r for every sample;
    ///   Uniform's step up to √3 shorter than needed), for Gaussian, Sphere and stored
    ///   directions from each direction regenerated by the CPU twin (O(n·S) host work). A
    ///   shrunk step is exact geometry — the estimate stays unbiased on linear functions and
    ///   only the O(h_sᵖ) truncation changes — but for Gaussian directions r_s depends on u_s,
    ///   so on curved functions the weighting of directions changes slightly. When a sample would
    ///   need r_s < 0.1 (an element on or next to its bound: Project puts elements exactly
    ///   there), the call instead projects every point onto the box, x ← clamp(x₀ + k·h·u), and
    ///   restores x by copy (one saved copy of x, n floats, as `exact_restore(true)`): the
    ///   elements clipped at a bound contribute (h + roomᵢ)/(2h) ≤ 1 of their central
    ///   difference, a bias towards 0 of those gradient components (none elsewhere). Gaussian
    ///   and Sphere directions work the same way (their larger |uᵢ| only shrink h more often).
    ///   Objectives that batch ([`loss_batch`](crate::Objective::loss_batch)) are evaluated
    ///   point by point while points are projected.
    /// - x itself must lie in the box when an estimator is called
    ///   ([`Error::InvalidArgument`] naming the element otherwise).
    ///
    /// Not covered: the trial points of [`Backtracking`](crate::optim::Backtracking) and the
    /// shifted points of [`NewtonCg`](crate::optim::NewtonCg) are not projected.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (message starting with `bounds:`) for a count that does not
    /// match the buffers (`PerBuffer`) or elements (`PerElement`), a NaN bound, or lo > hi.
    pub fn set_bounds(&mut self, bounds: Bounds) -> Result<()> {
        let (host_lo, host_hi) = bounds.expand(&self.lens, self.len)?;
        let mut lo = self.zeros_like()?;
        lo.write(&host_lo)?;
        let mut hi = self.zeros_like()?;
        hi.write(&host_hi)?;
        self.bounds = Some(Box::new(Attached {
            lo,
            hi,
            host_lo,
            host_hi,
        }));
        Ok(())
    }

    /// Removes the bounds of [`Params::set_bounds`].
    pub fn clear_bounds(&mut self) {
        self.bounds = None;
    }

    /// The bounds of [`Params::set_bounds`] per element in global order, `(lo, hi)`, if set.
    #[must_use]
    pub fn bounds(&self) -> Option<(&[f32], &[f32])> {
        self.bounds
            .as_ref()
            .map(|b| (b.host_lo.as_slice(), b.host_hi.as_slice()))
    }

    /// Whether [`Params::set_bounds`] gave these parameters bounds.
    #[must_use]
    pub fn has_bounds(&self) -> bool {
        self.bounds.is_some()
    }

    pub(crate) fn attached_bounds(&self) -> Option<&Attached> {
        self.bounds.as_deref()
    }

    /// x ← clamp(x, lo, hi) with the attached bounds, one GPU pass (nothing without bounds).
    pub(crate) fn project_into_bounds(&mut self) -> Result<()> {
        let Some(b) = &self.bounds else {
            return Ok(());
        };
        lock(&self.bind_cache).launch_with(
            &self.gpu,
            Kernel::Project,
            self.operand(),
            &[b.lo.operand(), b.hi.operand()],
            &|_| {},
        )
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

    /// A move of these parameters: `plain` (layout One) without scales, `scaled` (layout Two,
    /// the scales at binding 2) with them.
    pub(crate) fn launch_move(
        &mut self,
        plain: Kernel,
        scaled: Kernel,
        fill: impl Fn(&mut Launch),
    ) -> Result<()> {
        match &self.scales {
            None => self.launch(plain, fill),
            Some((s, _)) => lock(&self.bind_cache).launch_with(
                &self.gpu,
                scaled,
                self.operand(),
                &[s.operand()],
                &fill,
            ),
        }
    }

    /// Launches an accumulate `kernel` with `terms` (sample, coefficient) in binding 2; with
    /// scales, `scaled` with the scales at binding 3.
    pub(crate) fn launch_terms(
        &mut self,
        kernel: Kernel,
        scaled: Kernel,
        terms: &[(u32, f32)],
        fill: impl Fn(&mut Launch),
    ) -> Result<()> {
        let (kernel, scales) = match &self.scales {
            None => (kernel, None),
            Some((s, _)) => (scaled, Some(s.operand())),
        };
        lock(&self.bind_cache).launch_terms(&self.gpu, kernel, self.operand(), scales, terms, &fill)
    }

    /// Launches `kernel` over these buffers with `whole = (id, buffer)` bound entire at binding 2
    /// (a magnitude mask's bits, its histogram's bins): the magnitude-mask kernels.
    pub(crate) fn launch_whole(
        &mut self,
        kernel: Kernel,
        whole: (u64, &wgpu::Buffer),
        fill: impl Fn(&mut Launch),
    ) -> Result<()> {
        let x = self.operand();
        lock(&self.bind_cache).launch_whole(&self.gpu, kernel, x, whole, &fill)
    }

    /// Launches an accumulate `kernel` with `terms` at binding 2 and a magnitude mask's bits
    /// `bits = (id, buffer)` at binding 3 (parameters without scales).
    pub(crate) fn launch_terms_bits(
        &mut self,
        kernel: Kernel,
        bits: (u64, &wgpu::Buffer),
        terms: &[(u32, f32)],
        fill: impl Fn(&mut Launch),
    ) -> Result<()> {
        let x = self.operand();
        lock(&self.bind_cache).launch_terms_bits(
            &self.gpu,
            kernel,
            x,
            None,
            Some(bits),
            terms,
            &fill,
        )
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

    /// [`launch_with`](Params::launch_with) of `plain` without scales; with them, `scaled` with
    /// the scales after the others.
    pub(crate) fn launch_move_with(
        &mut self,
        plain: Kernel,
        scaled: Kernel,
        other: &Params,
        what: &str,
        fill: impl Fn(&mut Launch),
    ) -> Result<()> {
        let Some((s, _)) = &self.scales else {
            return self.launch_with(plain, &[other], what, fill);
        };
        self.check_compatible(other, what)?;
        if self.id == other.id {
            return Err(Error::invalid(format!(
                "{what}: the same Params as the destination"
            )));
        }
        let others = [other.operand(), s.operand()];
        lock(&self.bind_cache).launch_with(&self.gpu, scaled, self.operand(), &others, &fill)
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

impl Drop for Params {
    /// Submits zograd's pending kernel launches ([`Gpu::flush`]), which may use these buffers:
    /// the owner of adopted buffers may use them on its own afterwards. A failure is reported by
    /// the next call on the device.
    fn drop(&mut self) {
        let _ = self.gpu.flush();
    }
}

/// Fails unless every scale is finite and not negative.
fn check_scales(v: &[f32]) -> Result<()> {
    match v.iter().position(|s| !(s.is_finite() && *s >= 0.0)) {
        Some(k) => Err(Error::invalid(format!(
            "scales: scales[{k}] = {} is not a finite number >= 0",
            v[k]
        ))),
        None => Ok(()),
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
