// SPDX-License-Identifier: MIT OR Apache-2.0
//! The crate's error type.

/// Everything that can go wrong in zograd. Whatever the error (except [`Error::DeviceLost`]), the
/// parameters are restored to the point they had before the failing call (see each estimator's
/// documentation for the drift of in-place restoration).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No adapter matched the request (`WGPU_BACKEND`, `WGPU_ADAPTER_NAME`), or none exists.
    #[error("no GPU adapter found: {0}")]
    NoAdapter(String),
    /// The adapter refused to create a device.
    #[error("could not create a device: {0}")]
    RequestDevice(#[from] wgpu::RequestDeviceError),
    /// Not supported: the adapter cannot run zograd (no compute shaders, too small limits), or an
    /// optional method (a JVP, a fused step) is not implemented.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// An argument is out of range, or buffers do not match; the message names the argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A buffer or the parameters exceed what the adapter allows.
    #[error("too large for the adapter: {0}")]
    TooLarge(String),
    /// The loss was NaN or infinite at the evaluation named in the message.
    #[error("non-finite loss {value} at {context}")]
    NonFiniteLoss {
        /// The loss value returned by the objective.
        value: f32,
        /// Which evaluation produced it.
        context: String,
    },
    /// The user's objective returned an error; the parameters were restored first.
    #[error("the objective failed: {0}")]
    Objective(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// wgpu reported a validation error: in zograd's own work, or in the objective's GPU work
    /// during a loss evaluation (every objective call runs inside error scopes, also on a
    /// device adopted with [`Gpu::from_wgpu`](crate::Gpu::from_wgpu)); the parameters are
    /// restored.
    #[error("wgpu validation error: {0}")]
    Validation(String),
    /// wgpu ran out of memory.
    #[error("out of GPU memory: {0}")]
    OutOfMemory(String),
    /// Mapping a buffer for readback failed.
    #[error("buffer mapping failed: {0}")]
    Map(#[from] wgpu::BufferAsyncError),
    /// Waiting for the device failed (timeout or lost device).
    #[error("waiting for the GPU failed: {0}")]
    Poll(#[from] wgpu::PollError),
    /// The device was lost (or destroyed); every later call fails with this error. The
    /// parameters' buffers are lost with the device: this is the one error after which they are
    /// not restored.
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::InvalidArgument`] from a message that names the argument.
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }
}

impl From<wgpu::Error> for Error {
    fn from(e: wgpu::Error) -> Self {
        match e {
            wgpu::Error::OutOfMemory { .. } => Self::OutOfMemory(e.to_string()),
            other => Self::Validation(other.to_string()),
        }
    }
}
