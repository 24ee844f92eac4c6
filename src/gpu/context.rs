// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`Gpu`]: the device and queue zograd works on, the adapter's limits and the pipeline cache.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use super::kernel::Kernel;
use super::pipelines::Layouts;
use crate::{Error, Result};

static NEXT_GPU_ID: AtomicU64 = AtomicU64::new(1);

/// A wgpu device and queue with zograd's compiled kernels.
///
/// Cheap to clone (an `Arc`), `Send + Sync`; every [`Params`](crate::Params) keeps the `Gpu` it
/// was created on. Pipelines are compiled once, on first use, and cached.
///
/// # Example
/// ```no_run
/// let gpu = zograd::Gpu::new()?;
/// println!("running on {}", gpu.adapter_info().name);
/// # Ok::<(), zograd::Error>(())
/// ```
#[derive(Clone)]
pub struct Gpu {
    pub(crate) inner: Arc<GpuInner>,
}

pub(crate) struct GpuInner {
    pub(crate) id: u64,
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) info: wgpu::AdapterInfo,
    pub(crate) limits: wgpu::Limits,
    pub(crate) layouts: Layouts,
    /// Keyed by kernel and whether it is the shifted variant (`ZOGRAD_SHIFTED`).
    pipelines: Mutex<HashMap<(Kernel, bool), wgpu::ComputePipeline>>,
    modules: Mutex<HashMap<super::shaders::Family, wgpu::ShaderModule>>,
    lost: Arc<Mutex<Option<String>>>,
    uncaptured: Arc<Mutex<Option<String>>>,
    pub(crate) staging: Mutex<Vec<TrackedBuffer>>,
    pub(crate) sphere: Mutex<super::sphere::SphereState>,
    /// Launches recorded and not yet submitted (`gpu/pending.rs`).
    pub(crate) pending: Mutex<super::pending::Pending>,
    /// Bytes of buffers zograd created on this device and still holds (for leak checks).
    pub(crate) allocated: Arc<AtomicU64>,
}

impl fmt::Debug for Gpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.inner.info.name)
            .field("backend", &self.inner.info.backend)
            .finish_non_exhaustive()
    }
}

/// Locks a mutex, ignoring poisoning (the guarded state stays consistent: every critical section
/// either completes or leaves the previous value).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Gpu {
    /// Opens the default adapter and creates a device, blocking until done.
    ///
    /// Honours `WGPU_BACKEND` (e.g. `vulkan`, `gl`, `metal`, `dx12`; a comma list) and
    /// `WGPU_ADAPTER_NAME` (a case-insensitive substring of the adapter's name). Software adapters
    /// (lavapipe, llvmpipe, WARP) are accepted. The device is created with the adapter's own
    /// limits, so storage bindings reach the adapter's maximum.
    ///
    /// # Errors
    /// [`Error::NoAdapter`] when no adapter matches, [`Error::RequestDevice`] when the device
    /// cannot be created, [`Error::Unsupported`] when the adapter has no compute shaders.
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async())
    }

    /// The asynchronous form of [`Gpu::new`].
    ///
    /// # Errors
    /// As [`Gpu::new`].
    pub async fn new_async() -> Result<Self> {
        let instance = shared_instance();
        let adapter = select_adapter(&instance).await?;
        let downlevel = adapter.get_downlevel_capabilities();
        if !downlevel
            .flags
            .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
        {
            return Err(Error::Unsupported(format!(
                "adapter {:?} has no compute shaders",
                adapter.get_info().name
            )));
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("zograd"),
                required_features: wgpu::Features::empty(),
                required_limits: adapter.limits(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await?;
        Self::build(device, queue, true)
    }

    /// Adopts a device and queue the caller already has (for sharing buffers with the caller's
    /// own pipelines). zograd uses only the limits the device was created with.
    ///
    /// zograd installs no error or device-lost handler on an adopted device; errors inside
    /// zograd's calls — the objective's calls included, so a validation error in the caller's
    /// own GPU work inside a loss — are still caught with error scopes and returned as
    /// [`Error::Validation`] with the parameters restored. To have a lost device reported as
    /// [`Error::DeviceLost`] by the next zograd call, opt in with
    /// [`watch_device_loss`](Gpu::watch_device_loss). Buffers given to
    /// [`Params::from_buffers`](crate::Params::from_buffers) must come from this device: a buffer
    /// of a device of *another* `wgpu::Instance` cannot be detected by wgpu-core (its id lookup
    /// panics), while one of another device of the same instance is reported as an error.
    ///
    /// # wgpu versions
    /// `device` and `queue` are types of the wgpu zograd is built against, re-exported as
    /// [`zograd::wgpu`](crate::wgpu): zograd 0.1 ↔ wgpu 30 (each zograd minor version follows
    /// one wgpu major version). A device of another wgpu version is another type, and the call
    /// does not compile: error E0308, "expected `wgpu::Device`, found `wgpu::Device`", with the
    /// note that the two "have similar names, but are actually distinct types" (rustc adds that
    /// two versions of crate `wgpu` are in the dependency graph). The mismatch, shown with a
    /// stand-in type:
    ///
    /// ```compile_fail,E0308
    /// // Stands in for `wgpu::Device` of another wgpu major version: a distinct type.
    /// mod other_wgpu { pub struct Device; pub struct Queue; }
    /// let _ = zograd::Gpu::from_wgpu(other_wgpu::Device, other_wgpu::Queue);
    /// ```
    ///
    /// With the matching version (or [`zograd::wgpu`](crate::wgpu) itself) it compiles:
    ///
    /// ```no_run
    /// use zograd::wgpu;
    /// # fn main() -> zograd::Result<()> {
    /// let instance = wgpu::Instance::default();
    /// let adapter = pollster::block_on(instance.request_adapter(&Default::default()))
    ///     .expect("an adapter");
    /// let (device, queue) =
    ///     pollster::block_on(adapter.request_device(&Default::default()))?;
    /// let gpu = zograd::Gpu::from_wgpu(device, queue)?.watch_device_loss();
    /// # let _ = gpu;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the device's limits are too small for zograd's kernels
    /// (fewer than 256 invocations per workgroup or 4 KiB of workgroup memory).
    pub fn from_wgpu(device: wgpu::Device, queue: wgpu::Queue) -> Result<Self> {
        Self::build(device, queue, false)
    }

    /// Installs zograd's device-lost handling on this device (opt-in for a device adopted with
    /// [`from_wgpu`](Gpu::from_wgpu); [`Gpu::new`] devices have it already): once the device
    /// is lost (driver reset, `device.destroy()`), every later zograd call fails with
    /// [`Error::DeviceLost`] instead of failing in whatever way the dead device's next
    /// operation does. wgpu keeps one device-lost callback per device: this replaces a callback
    /// the application installed before, and one it installs afterwards replaces zograd's.
    #[must_use]
    pub fn watch_device_loss(self) -> Self {
        let lost = Arc::clone(&self.inner.lost);
        self.inner
            .device
            .set_device_lost_callback(move |reason, msg| {
                *lock(&lost) = Some(format!("{reason:?}: {msg}"));
            });
        self
    }

    fn build(device: wgpu::Device, queue: wgpu::Queue, owned: bool) -> Result<Self> {
        let limits = device.limits();
        if limits.max_compute_invocations_per_workgroup < 256
            || limits.max_compute_workgroup_size_x < 256
            || limits.max_compute_workgroup_storage_size < 4224
            || limits.max_storage_buffers_per_shader_stage < 3
        {
            return Err(Error::Unsupported(format!(
                "zograd needs 256 invocations per workgroup, 4224 bytes of workgroup memory and 3 \
                 storage buffers per stage; the device allows {}, {} and {}",
                limits.max_compute_invocations_per_workgroup,
                limits.max_compute_workgroup_storage_size,
                limits.max_storage_buffers_per_shader_stage
            )));
        }
        let lost = Arc::new(Mutex::new(None));
        let uncaptured = Arc::new(Mutex::new(None));
        if owned {
            let l = Arc::clone(&lost);
            device.set_device_lost_callback(move |reason, msg| {
                *lock(&l) = Some(format!("{reason:?}: {msg}"));
            });
            let u = Arc::clone(&uncaptured);
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                lock(&u).get_or_insert_with(|| e.to_string());
            }));
        }
        let layouts = Layouts::new(&device);
        let info = device.adapter_info();
        let allocated = Arc::new(AtomicU64::new(0));
        let sphere = super::sphere::SphereState::default();
        Ok(Gpu {
            inner: Arc::new(GpuInner {
                id: NEXT_GPU_ID.fetch_add(1, Ordering::Relaxed),
                device,
                queue,
                info,
                limits,
                layouts,
                pipelines: Mutex::new(HashMap::new()),
                modules: Mutex::new(HashMap::new()),
                lost,
                uncaptured,
                staging: Mutex::new(Vec::new()),
                sphere: Mutex::new(sphere),
                pending: Mutex::new(super::pending::Pending::default()),
                allocated,
            }),
        })
    }

    /// The wgpu device, for the caller's own shaders.
    #[must_use]
    pub fn device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    /// The wgpu queue, for the caller's own shaders.
    #[must_use]
    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    /// The adapter's name, backend and driver.
    #[must_use]
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.inner.info
    }

    /// The limits the device was created with (zograd sizes chunks and grids from these).
    #[must_use]
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }

    /// Bytes of GPU buffers zograd has created on this device and not yet freed (parameter and
    /// state buffers, uniforms, staging). Meant for leak checks in long runs.
    #[must_use]
    pub fn allocated_bytes(&self) -> u64 {
        self.inner.allocated.load(Ordering::Relaxed)
    }

    /// Submits what zograd has recorded ([`Gpu::flush`]) and waits until all submitted work has
    /// finished.
    ///
    /// # Errors
    /// [`Error::Poll`], [`Error::DeviceLost`], or [`Error::Validation`] when wgpu refuses the
    /// pending work.
    pub fn wait(&self) -> Result<()> {
        self.check_alive()?;
        self.flush()?;
        self.inner
            .device
            .poll(wgpu::PollType::wait_indefinitely())?;
        self.check_alive()
    }

    /// "Gpu #id (adapter, backend)", for messages about mismatched devices.
    pub(crate) fn label(&self) -> String {
        format!(
            "Gpu #{} ({}, {:?})",
            self.inner.id, self.inner.info.name, self.inner.info.backend
        )
    }

    /// Whether two handles refer to the same device.
    pub(crate) fn same(&self, other: &Gpu) -> bool {
        self.inner.id == other.inner.id
    }

    /// Fails with [`Error::DeviceLost`] once the device has been lost.
    ///
    /// wgpu runs the device-lost callback only while the device is polled (a destroyed device
    /// silently ignores further work), so this polls first, without waiting: a loss is reported
    /// by the first zograd call after it, not by the first readback.
    pub(crate) fn check_alive(&self) -> Result<()> {
        if let Some(msg) = lock(&self.inner.lost).clone() {
            return Err(Error::DeviceLost(msg));
        }
        let _ = self.inner.device.poll(wgpu::PollType::Poll);
        if let Some(msg) = lock(&self.inner.lost).clone() {
            return Err(Error::DeviceLost(msg));
        }
        Ok(())
    }

    /// Runs `f` inside validation and out-of-memory error scopes and returns the first error
    /// wgpu reported, if any, instead of panicking.
    ///
    /// An error wgpu reported *outside* any scope since the last call (the caller's own work on
    /// a device zograd created, which goes to zograd's uncaptured-error handler) is returned
    /// before `f` runs, so that a failing call has done nothing: an estimator whose kernel
    /// returns an error knows the parameters did not move.
    pub(crate) fn scoped<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.check_alive()?;
        if let Some(msg) = lock(&self.inner.uncaptured).take() {
            return Err(Error::Validation(msg));
        }
        let device = &self.inner.device;
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let validation = pollster::block_on(validation.pop());
        let oom = pollster::block_on(oom.pop());
        if let Some(e) = oom.or(validation) {
            self.check_alive()?;
            return Err(e.into());
        }
        out
    }

    /// The cached pipeline of `kernel`, compiled on first use, built with `ZOGRAD_SHIFTED = shifted` (the variant that
    /// honours the launch's binding shifts; see `shaders/common.wgsl`).
    pub(crate) fn pipeline_variant(
        &self,
        kernel: Kernel,
        shifted: bool,
    ) -> Result<wgpu::ComputePipeline> {
        if let Some(p) = lock(&self.inner.pipelines).get(&(kernel, shifted)) {
            return Ok(p.clone());
        }
        let family = kernel.family();
        let module = {
            let mut modules = lock(&self.inner.modules);
            if let Some(m) = modules.get(&family) {
                m.clone()
            } else {
                let source = family.source();
                let m = self.scoped(|| {
                    Ok(self
                        .inner
                        .device
                        .create_shader_module(wgpu::ShaderModuleDescriptor {
                            label: Some(family.label()),
                            source: wgpu::ShaderSource::Wgsl(source.into()),
                        }))
                })?;
                modules.insert(family, m.clone());
                m
            }
        };
        let layout = self.inner.layouts.pipeline_layout(kernel.layout());
        let mut constants = kernel.constants().to_vec();
        if shifted {
            constants.push(("ZOGRAD_SHIFTED", 1.0));
        }
        let pipeline = self.scoped(|| {
            Ok(self
                .inner
                .device
                .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                    label: Some(kernel.entry()),
                    layout: Some(layout),
                    module: &module,
                    entry_point: Some(kernel.entry()),
                    compilation_options: wgpu::PipelineCompilationOptions {
                        constants: &constants,
                        ..wgpu::PipelineCompilationOptions::default()
                    },
                    cache: None,
                }))
        })?;
        lock(&self.inner.pipelines).insert((kernel, shifted), pipeline.clone());
        Ok(pipeline)
    }

    /// Creates a buffer inside an error scope, counting its bytes in
    /// [`Gpu::allocated_bytes`]; fails cleanly past the adapter's `max_buffer_size`.
    pub(crate) fn create_buffer(
        &self,
        label: &str,
        size: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<TrackedBuffer> {
        if size > self.inner.limits.max_buffer_size {
            return Err(Error::TooLarge(format!(
                "{label}: {size} bytes exceeds the adapter's max_buffer_size of {}",
                self.inner.limits.max_buffer_size
            )));
        }
        let buffer = self.scoped(|| {
            Ok(self.inner.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: false,
            }))
        })?;
        Ok(TrackedBuffer::new(buffer, &self.inner.allocated))
    }
}

impl Gpu {
    /// A zeroed `STORAGE | COPY_SRC` buffer of `size` bytes handed to the user (not counted in
    /// [`Gpu::allocated_bytes`]: zograd does not hold it), created inside an error scope.
    pub(crate) fn create_user_storage(&self, label: &str, size: u64) -> Result<wgpu::Buffer> {
        if size > self.inner.limits.max_buffer_size {
            return Err(Error::TooLarge(format!(
                "{label}: {size} bytes exceeds the adapter's max_buffer_size of {}",
                self.inner.limits.max_buffer_size
            )));
        }
        self.scoped(|| {
            Ok(self.inner.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }))
        })
    }
}

/// A buffer zograd created, counted in [`Gpu::allocated_bytes`] until dropped. (It is not
/// destroyed on drop: a caller may still hold a clone of the handle, e.g. from
/// [`Params::buffers`](crate::Params::buffers); wgpu frees it with the last handle.)
#[derive(Debug)]
pub(crate) struct TrackedBuffer {
    buffer: wgpu::Buffer,
    counter: Arc<AtomicU64>,
}

impl TrackedBuffer {
    fn new(buffer: wgpu::Buffer, counter: &Arc<AtomicU64>) -> Self {
        counter.fetch_add(buffer.size(), Ordering::Relaxed);
        Self {
            buffer,
            counter: Arc::clone(counter),
        }
    }
}

impl std::ops::Deref for TrackedBuffer {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

impl Drop for TrackedBuffer {
    fn drop(&mut self) {
        self.counter
            .fetch_sub(self.buffer.size(), Ordering::Relaxed);
    }
}

/// One wgpu instance per process and backend set: wgpu-core resolves resource ids within one
/// instance, so devices of one instance can detect (as a validation error) a buffer of another
/// device, where across instances the lookup would panic.
fn shared_instance() -> wgpu::Instance {
    static INSTANCES: OnceLock<Mutex<HashMap<wgpu::Backends, wgpu::Instance>>> = OnceLock::new();
    let desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    let backends = desc.backends;
    let mut map = lock(INSTANCES.get_or_init(|| Mutex::new(HashMap::new())));
    map.entry(backends)
        .or_insert_with(|| wgpu::Instance::new(desc))
        .clone()
}

/// Picks the adapter: `WGPU_ADAPTER_NAME` if set (an error, not a panic, when nothing matches),
/// else the instance's default, else the first adapter enumerated (software ones included).
async fn select_adapter(instance: &wgpu::Instance) -> Result<wgpu::Adapter> {
    let adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
    let names: Vec<String> = adapters
        .iter()
        .map(|a| {
            let i = a.get_info();
            format!("{} ({:?})", i.name, i.backend)
        })
        .collect();
    if let Ok(wanted) = std::env::var("WGPU_ADAPTER_NAME") {
        let wanted_lc = wanted.to_lowercase();
        return adapters
            .into_iter()
            .find(|a| a.get_info().name.to_lowercase().contains(&wanted_lc))
            .ok_or_else(|| {
                Error::NoAdapter(format!(
                    "WGPU_ADAPTER_NAME={wanted:?} matches none of [{}]",
                    names.join(", ")
                ))
            });
    }
    let preferred = instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::from_env().unwrap_or_default(),
            ..Default::default()
        })
        .await;
    match preferred {
        Ok(a) => Ok(a),
        Err(e) => adapters.into_iter().next().ok_or_else(|| {
            Error::NoAdapter(format!(
                "{e}; WGPU_BACKEND={:?}; install a Vulkan driver (e.g. Mesa's lavapipe, Debian \
                 package mesa-vulkan-drivers) or use WGPU_BACKEND=gl",
                std::env::var("WGPU_BACKEND").unwrap_or_default()
            ))
        }),
    }
}
