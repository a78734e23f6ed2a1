//! Optional kernel and device features: io_uring support (probed by creating
//! a real ring) and GPUs (filled in by the caller's GPU layer).

use std::fmt;
use std::io;
use std::path::Path;

use io_uring::{IoUring, Probe, opcode};

/// The io_uring opcodes the I/O workers need, with their names.
pub const REQUIRED_OPCODES: &[(u8, &str)] = &[
    (opcode::Read::CODE, "Read"),
    (opcode::Write::CODE, "Write"),
    (opcode::Readv::CODE, "Readv"),
    (opcode::Writev::CODE, "Writev"),
    (opcode::Fsync::CODE, "Fsync"),
    (opcode::Fallocate::CODE, "Fallocate"),
    (opcode::OpenAt::CODE, "OpenAt"),
    (opcode::Close::CODE, "Close"),
    (opcode::Accept::CODE, "Accept"),
    (opcode::Recv::CODE, "Recv"),
    (opcode::Send::CODE, "Send"),
    (opcode::Connect::CODE, "Connect"),
    (opcode::Timeout::CODE, "Timeout"),
];

/// What the kernel's io_uring offers beyond the required opcodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoUringFeatures {
    /// `IORING_FEAT_NODROP`: completions are never dropped on CQ overflow.
    pub nodrop: bool,
    /// `IORING_FEAT_SUBMIT_STABLE`: submission data may be freed after submit.
    pub submit_stable: bool,
    /// `IORING_FEAT_FAST_POLL`: internal polling for sockets.
    pub fast_poll: bool,
    /// `IORING_FEAT_EXT_ARG`: waiting with a timeout without a timeout SQE.
    pub ext_arg: bool,
    /// `ReadFixed`/`WriteFixed` (registered buffers).
    pub fixed_buffers: bool,
    /// `SendZc` (zero-copy send).
    pub send_zc: bool,
    /// Multishot `RecvMulti`.
    pub recv_multi: bool,
    /// Multishot `AcceptMulti`.
    pub accept_multi: bool,
}

/// Whether the I/O workers can use io_uring.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IoUringSupport {
    /// A ring was created and every opcode in [`REQUIRED_OPCODES`] is
    /// supported.
    Available {
        /// Optional features found.
        features: IoUringFeatures,
    },
    /// io_uring cannot be used; the I/O workers must fall back.
    Unavailable {
        /// Why, for reports (for example "blocked by seccomp or
        /// io_uring_disabled (EPERM)").
        reason: String,
    },
}

impl IoUringSupport {
    /// True for [`IoUringSupport::Available`].
    pub fn is_available(&self) -> bool {
        matches!(self, IoUringSupport::Available { .. })
    }
}

impl fmt::Display for IoUringSupport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoUringSupport::Available { .. } => f.write_str("available"),
            IoUringSupport::Unavailable { reason } => write!(f, "unavailable: {reason}"),
        }
    }
}

/// A GPU adapter (see [`detect_gpus`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuInfo {
    /// Adapter name (for example `llvmpipe`).
    pub name: String,
    /// Backend (for example `Vulkan`).
    pub backend: String,
    /// Device type (for example `DiscreteGpu`, `Cpu` for a software adapter).
    pub device_type: String,
}

/// Optional features of the kernel and devices.
///
/// # Examples
///
/// ```
/// use shared_nothing::topology::Capabilities;
///
/// let caps = Capabilities::detect(); // io_uring probed; GPUs with feature `gpu`
/// println!("io_uring: {}, {} GPU adapter(s)", caps.io_uring, caps.gpus.len());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// io_uring support.
    pub io_uring: IoUringSupport,
    /// GPU adapters ([`detect_gpus`]; always empty without feature `gpu`).
    pub gpus: Vec<GpuInfo>,
}

impl Capabilities {
    /// Probes io_uring by creating a small ring and registering a probe, and
    /// (feature `gpu`) lists the GPU adapters wgpu can open.
    ///
    /// Never fails: anything that prevents io_uring is reported as
    /// [`IoUringSupport::Unavailable`] with the reason; no adapter is an
    /// empty list.
    pub fn detect() -> Capabilities {
        Capabilities {
            io_uring: probe_io_uring(Path::new("/")),
            gpus: detect_gpus(),
        }
    }

    /// No io_uring, no GPU: the most restricted machine, for tests.
    pub fn none() -> Capabilities {
        Capabilities {
            io_uring: IoUringSupport::Unavailable {
                reason: "not probed (Capabilities::none)".to_owned(),
            },
            gpus: Vec::new(),
        }
    }

    /// io_uring with every feature, and the given GPUs, for tests.
    pub fn all(gpus: Vec<GpuInfo>) -> Capabilities {
        Capabilities {
            io_uring: IoUringSupport::Available {
                features: IoUringFeatures {
                    nodrop: true,
                    submit_stable: true,
                    fast_poll: true,
                    ext_arg: true,
                    fixed_buffers: true,
                    send_zc: true,
                    recv_multi: true,
                    accept_multi: true,
                },
            },
            gpus,
        }
    }
}

/// The GPU adapters wgpu can open through Vulkan (feature `gpu`; always
/// empty without it). A software rasteriser such as Mesa's llvmpipe shows
/// up with `device_type` `"Cpu"`; the plan uses those only on request.
pub fn detect_gpus() -> Vec<GpuInfo> {
    #[cfg(feature = "gpu")]
    {
        // A driver that panics inside wgpu must not take the process down:
        // no adapter is a valid answer.
        std::panic::catch_unwind(wgpu_adapters).unwrap_or_default()
    }
    #[cfg(not(feature = "gpu"))]
    {
        Vec::new()
    }
}

#[cfg(feature = "gpu")]
fn wgpu_adapters() -> Vec<GpuInfo> {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::VULKAN;
    let instance = wgpu::Instance::new(desc);
    // Native adapter enumeration completes immediately; the future only
    // exists for the web backend.
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::VULKAN))
        .into_iter()
        .map(|a| {
            let info = a.get_info();
            GpuInfo {
                name: info.name,
                backend: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
            }
        })
        .collect()
}

/// Interprets `/proc/sys/kernel/io_uring_disabled`: `Some(reason)` if it
/// forbids io_uring outright (2). 1 restricts creation to a group or
/// CAP_SYS_ADMIN, so the probe decides.
pub(crate) fn disabled_reason(content: &str) -> Option<String> {
    match content.trim() {
        "2" => Some("disabled by the kernel (/proc/sys/kernel/io_uring_disabled = 2)".to_owned()),
        _ => None,
    }
}

/// Turns a ring-creation error into a reason.
pub(crate) fn setup_error_reason(err: &io::Error, disabled_setting: Option<&str>) -> String {
    let setting = disabled_setting.map(str::trim).unwrap_or("unknown");
    match err.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => format!(
            "creating a ring was refused ({err}): blocked by seccomp, a container profile, or \
             io_uring_disabled (= {setting}) restricting it to a group"
        ),
        Some(libc::ENOMEM) => format!(
            "creating a ring ran out of locked memory ({err}): raise RLIMIT_MEMLOCK (ulimit -l)"
        ),
        Some(libc::ENOSYS) => format!("the kernel has no io_uring ({err})"),
        _ => format!("creating a ring failed: {err}"),
    }
}

/// Decides support from a probe predicate (kept separate so it is testable
/// without a kernel).
pub(crate) fn evaluate(
    is_supported: impl Fn(u8) -> bool,
    mut features: IoUringFeatures,
) -> IoUringSupport {
    let missing: Vec<&str> = REQUIRED_OPCODES
        .iter()
        .filter(|(code, _)| !is_supported(*code))
        .map(|(_, name)| *name)
        .collect();
    if !missing.is_empty() {
        return IoUringSupport::Unavailable {
            reason: format!("the kernel lacks required opcodes: {}", missing.join(", ")),
        };
    }
    features.fixed_buffers =
        is_supported(opcode::ReadFixed::CODE) && is_supported(opcode::WriteFixed::CODE);
    features.send_zc = is_supported(opcode::SendZc::CODE);
    features.recv_multi = is_supported(opcode::RecvMulti::CODE);
    features.accept_multi = is_supported(opcode::AcceptMulti::CODE);
    IoUringSupport::Available { features }
}

/// Probes io_uring; `root` locates `/proc/sys/kernel/io_uring_disabled`.
fn probe_io_uring(root: &Path) -> IoUringSupport {
    let disabled_path = root.join("proc/sys/kernel/io_uring_disabled");
    let disabled = std::fs::read_to_string(disabled_path).ok();
    if let Some(reason) = disabled.as_deref().and_then(disabled_reason) {
        return IoUringSupport::Unavailable { reason };
    }
    let ring: IoUring = match IoUring::new(4) {
        Ok(r) => r,
        Err(e) => {
            return IoUringSupport::Unavailable {
                reason: setup_error_reason(&e, disabled.as_deref()),
            };
        }
    };
    let mut probe = Probe::new();
    if let Err(e) = ring.submitter().register_probe(&mut probe) {
        // Kernels before 5.6 have no probe; they also lack several required
        // opcodes, so this is "unavailable" too.
        return IoUringSupport::Unavailable {
            reason: format!("cannot probe supported opcodes (kernel older than 5.6?): {e}"),
        };
    }
    let params = ring.params();
    let features = IoUringFeatures {
        nodrop: params.is_feature_nodrop(),
        submit_stable: params.is_feature_submit_stable(),
        fast_poll: params.is_feature_fast_poll(),
        ext_arg: params.is_feature_ext_arg(),
        ..IoUringFeatures::default()
    };
    evaluate(|code| probe.is_supported(code), features)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_on_this_machine_reports_something_consistent() {
        let caps = Capabilities::detect();
        if !cfg!(feature = "gpu") {
            assert!(caps.gpus.is_empty(), "no GPU detection without feature gpu");
        }
        match &caps.io_uring {
            IoUringSupport::Available { features } => {
                // Every kernel with all the required opcodes (5.6+) has NODROP.
                assert!(features.nodrop, "{features:?}");
            }
            IoUringSupport::Unavailable { reason } => {
                assert!(!reason.is_empty());
                eprintln!("io_uring unavailable here: {reason}");
            }
        }
        // facts.md: io_uring works on these machines unless CI says otherwise.
        if std::env::var_os("SHARED_NOTHING_EXPECT_IO_URING").is_some() {
            assert!(caps.io_uring.is_available(), "{}", caps.io_uring);
        }
    }

    #[test]
    fn missing_opcodes_are_named() {
        let no_connect =
            |code: u8| code != opcode::Connect::CODE && code != opcode::Fallocate::CODE;
        match evaluate(no_connect, IoUringFeatures::default()) {
            IoUringSupport::Unavailable { reason } => {
                assert!(
                    reason.contains("Connect") && reason.contains("Fallocate"),
                    "{reason}"
                );
                assert!(!reason.contains("Timeout"), "{reason}");
            }
            other => panic!("expected unavailable, got {other:?}"),
        }
        let only_required = |code: u8| REQUIRED_OPCODES.iter().any(|(c, _)| *c == code);
        match evaluate(only_required, IoUringFeatures::default()) {
            IoUringSupport::Available { features } => {
                assert!(!features.send_zc && !features.fixed_buffers);
            }
            other => panic!("expected available, got {other:?}"),
        }
    }

    #[test]
    fn setup_errors_give_reasons() {
        let eperm = setup_error_reason(&io::Error::from_raw_os_error(libc::EPERM), Some("1\n"));
        assert!(
            eperm.contains("seccomp") && eperm.contains("= 1"),
            "{eperm}"
        );
        let enomem = setup_error_reason(&io::Error::from_raw_os_error(libc::ENOMEM), None);
        assert!(enomem.contains("RLIMIT_MEMLOCK"), "{enomem}");
        let enosys = setup_error_reason(&io::Error::from_raw_os_error(libc::ENOSYS), None);
        assert!(enosys.contains("no io_uring"), "{enosys}");
        assert_eq!(disabled_reason("0\n"), None);
        assert_eq!(disabled_reason("1"), None);
        assert!(disabled_reason("2\n").is_some());
    }

    #[test]
    fn none_is_unavailable_and_all_is_available() {
        assert!(!Capabilities::none().io_uring.is_available());
        assert!(Capabilities::all(Vec::new()).io_uring.is_available());
    }

    /// With feature `gpu` the real wgpu path runs. Where CI installs Mesa's
    /// software Vulkan driver it sets `SHARED_NOTHING_REQUIRE_GPU=1`, and then
    /// finding no adapter is a failure, not a fallback.
    #[cfg(feature = "gpu")]
    #[test]
    fn gpu_adapters_come_from_the_real_driver() {
        let gpus = detect_gpus();
        for g in &gpus {
            assert!(!g.name.is_empty());
            assert_eq!(g.backend, "Vulkan");
        }
        if std::env::var("SHARED_NOTHING_REQUIRE_GPU").as_deref() == Ok("1") {
            assert!(
                !gpus.is_empty(),
                "SHARED_NOTHING_REQUIRE_GPU=1 but wgpu found no Vulkan adapter"
            );
            eprintln!("GPU adapters: {gpus:?}");
        } else if gpus.is_empty() {
            eprintln!("no GPU adapter found: plans fall back to the CPU workers");
        }
    }
}
