//! The PTX that build.rs compiled from kernels/*.cu, one module per file.

macro_rules! ptx {
    ($name:literal) => {
        include_str!(concat!(env!("OUT_DIR"), "/", $name, ".ptx"))
    };
}

/// The `-arch` the PTX was built for (build.rs, RADIXLM_CUDA_ARCH).
pub const ARCH: &str = env!("RADIXLM_CUDA_ARCH_BUILT");

pub const ACTIVATION: &str = ptx!("activation");
pub const ATTENTION_DECODE: &str = ptx!("attention_decode");
pub const ATTENTION_PREFILL: &str = ptx!("attention_prefill");
pub const EMBEDDING: &str = ptx!("embedding");
pub const RMSNORM: &str = ptx!("rmsnorm");
pub const ROPE: &str = ptx!("rope");
pub const SAMPLING: &str = ptx!("sampling");
