//! Building blocks shared by the decoder-only architectures. CPU implementations; the CUDA backend
//! provides its own kernels behind the same `ForwardCtx`.

pub mod attention;
pub mod qmatmul;
pub mod rope;
pub mod transformer;
