//! radixlm's CUDA backend: our own kernels, compiled by nvcc to PTX at build time (build.rs) and
//! launched through cudarc's driver API, which is loaded at run time (`dynamic-loading`): a build of
//! this crate links no CUDA library, and on a machine without a driver [`Device::new`] returns
//! [`Error::NoDriver`] instead of failing to load.
//!
//! - [`Device`]: one context + one stream + the loaded kernel modules.
//! - launchers, methods of [`Device`] (src/ops.rs, src/attention.rs): shapes checked on the host,
//!   then one launch (two for split-K decode attention).
//! - [`Gemm`]: `y = x W^T (+ bias)` through cuBLASLt, a cached plan per shape (src/gemm.rs).
//! - [`cpu`]: a plain-Rust twin of every kernel, the reference the GPU tests compare against.
//! - [`layout`]: the paged KV cache layout and slot mapping; [`rope`]: host-side RoPE tables.
//!
//! Conventions of every kernel (kernels/common.cuh): bf16 storage, f32 math, one rounding per output.

/// `ensure!(cond, op, fmt...)`: return an [`Error::Shape`] naming `op` unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $op:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Error::Shape { op: $op, msg: format!($($fmt)+) });
        }
    };
}

pub mod attention;
pub mod cpu;
mod device;
mod gemm;
pub mod graph;
pub mod layout;
pub mod model;
mod ops;
mod ptx;
pub mod rope;
pub mod sampling;

pub use cudarc;
pub use device::{DecodeKernel, Device};
pub use gemm::Gemm;
pub use half::bf16;
pub use layout::{AttnShape, PagedKv};
pub use rope::{Rope, RopeFreqs, RopeStyle};
pub use sampling::{SampleParams, SampleRow};

/// What can go wrong in this crate. Misuse (wrong shapes) is an error, never a panic or a launch.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no CUDA driver: libcuda.so could not be loaded (no NVIDIA driver on this machine?)")]
    NoDriver,
    #[error("CUDA driver error: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
    #[error(
        "could not load the {module} kernels (PTX built for {arch}) on {device} (compute capability \
         {major}.{minor}); rebuild with RADIXLM_CUDA_ARCH=sm_{major}{minor}: {source}"
    )]
    ModuleLoad {
        module: &'static str,
        arch: &'static str,
        device: String,
        major: i32,
        minor: i32,
        source: cudarc::driver::DriverError,
    },
    #[error("loading weights: {0}")]
    Load(String),
    #[error("{op}: {msg}")]
    Shape { op: &'static str, msg: String },
    #[error("cuBLASLt could not be loaded (libcublasLt.so.13 not on the library path?)")]
    NoBlas,
    #[error("cuBLASLt {op}: {source}")]
    Blas {
        op: &'static str,
        source: cudarc::cublaslt::result::CublasError,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
