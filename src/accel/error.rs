//! The accelerator's error types.

use super::job::Job;

/// Why an accelerator job failed, or why it left the GPU path.
///
/// Errors the caller caused ([`InvalidJob`](Self::InvalidJob),
/// [`Shader`](Self::Shader), [`TooLarge`](Self::TooLarge)) come back as the
/// job's result. Errors of the device ([`Device`](Self::Device),
/// [`DeviceLost`](Self::DeviceLost)) never do on their own: the job is rerun
/// on the CPU path and the error is kept in
/// [`JobResult::gpu_error`](super::JobResult::gpu_error).
///
/// ```
/// use shared_nothing::accel::AccelError;
/// let e = AccelError::InvalidJob { reason: "x and y differ in length".into() };
/// assert!(e.to_string().contains("x and y"));
/// let any: shared_nothing::Error = e.into();
/// assert!(matches!(any, shared_nothing::Error::Accel(_)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AccelError {
    /// The job's inputs do not fit its kernel (lengths, block size, counts).
    #[error("invalid job: {reason}")]
    InvalidJob {
        /// What is wrong.
        reason: String,
    },
    /// A kernel's WGSL did not compile, or its pipeline or bindings were
    /// rejected by the device's validation.
    #[error("kernel {kernel}: {message}")]
    Shader {
        /// The kernel's name.
        kernel: String,
        /// The compiler's or validator's message.
        message: String,
    },
    /// A buffer the job needs is larger than the device allows in one
    /// binding (built-in kernels split large inputs; custom kernels do not).
    #[error("{what} needs {bytes} bytes; the device allows {limit} per binding")]
    TooLarge {
        /// Which buffer.
        what: String,
        /// Its size.
        bytes: u64,
        /// The device's limit.
        limit: u64,
    },
    /// The device reported an error (out of memory, an internal error, a
    /// failed mapping, a timeout, a panic inside the driver).
    #[error("device error: {message}")]
    Device {
        /// What the device said.
        message: String,
    },
    /// The device or adapter was lost; this accelerator runs every later
    /// job on the CPU path.
    #[error("device lost: {reason}")]
    DeviceLost {
        /// Why, as the driver put it.
        reason: String,
    },
    /// No GPU adapter could be opened.
    #[error("no GPU adapter: {reason}")]
    NoAdapter {
        /// Why.
        reason: String,
    },
    /// A custom kernel could not run on the GPU and has no CPU
    /// implementation to fall back to.
    #[error("kernel {kernel} has no CPU implementation to fall back to ({cause})")]
    NoCpuPath {
        /// The kernel's name.
        kernel: String,
        /// Why the GPU path did not run it.
        cause: String,
    },
    /// The accelerator has stopped.
    #[error("the accelerator has stopped")]
    Stopped,
}

/// A job that could not be submitted, handed back.
///
/// ```
/// use shared_nothing::accel::{Job, SubmitError};
/// let e = SubmitError::Full(Job::reduce(vec![1, 2, 3]));
/// assert!(e.is_full());
/// let job = e.into_inner();
/// # let _ = job;
/// ```
pub type SubmitError = crate::error::SubmitError<Job>;
