//! napi-rs binding: mechanical conversion between JS values and radixlm-core, no engine logic.
//! Errors cross as `[ERR_CODE] message`; index.ts turns them into `RadixLMError`s with `code`.

mod convert;
mod engine;
mod request;

/// What this binary can run on: `cuda` when built with the CUDA backend, `devices` the GPUs its driver
/// sees (0 on a CPU build or without a driver). index.ts uses it to pick the binary for `device: 'auto'`.
#[napi_derive::napi(object)]
pub struct BackendInfo {
    pub cuda: bool,
    pub devices: u32,
}

#[napi_derive::napi]
pub fn backend_info() -> BackendInfo {
    BackendInfo { cuda: radixlm_core::CUDA_BUILT, devices: radixlm_core::backend::cuda_devices() as u32 }
}
