//! Which backend runs the model, and the limits that follow from it: `device` 'cpu', 'cuda[:N]', or
//! 'auto' (CUDA when this build has it and a GPU is there, else the CPU, silently).

use crate::error::Result;
use crate::kv_cache::KvCache;
use crate::model::load::ModelFiles;
use crate::model::weights::WeightMode;
use crate::layers::transformer::Transformer;
use crate::options::EngineOptions;
use crate::runner::{Backend, ModelRunner};

pub struct Chosen {
    pub backend: Box<dyn Backend>,
    pub num_pages: usize,
    pub max_running: usize,
    /// Prefill tokens per step (decode tokens come on top).
    pub chunk_budget: usize,
}

/// The largest prefill chunk a CUDA step takes (activation buffers are sized for it).
const CUDA_MAX_CHUNK: usize = 16384;

pub fn create(opts: &EngineOptions, files: ModelFiles, context_length: usize) -> Result<Chosen> {
    let ordinal = match opts.device.as_str() {
        "cpu" => None,
        "auto" => (crate::CUDA_BUILT && cuda_devices() > 0).then_some(0),
        _ => Some(opts.cuda_ordinal()?),
    };
    match ordinal {
        Some(n) => {
            let max_running = opts.max_running_requests.unwrap_or(256);
            let chunk_budget = opts.chunked_prefill_size.unwrap_or(8192).min(CUDA_MAX_CHUNK);
            let (backend, num_pages) = cuda(opts, &files, n, (chunk_budget + max_running, max_running, context_length))?;
            Ok(Chosen { backend, num_pages, max_running, chunk_budget })
        }
        None => {
            let cfg = files.cfg.clone();
            let mode = if opts.wants_f32() { WeightMode::F32 } else { WeightMode::AsStored };
            let model = Transformer::load(files.cfg, &files.weights, mode)?;
            let per_token = KvCache::bytes_per_token(cfg.num_layers, cfg.kv_size());
            let pool_tokens = opts.max_total_tokens.unwrap_or_else(|| ((4usize << 30) / per_token).clamp(2048, 65536));
            let num_pages = pool_tokens.div_ceil(opts.page_size);
            let kv = KvCache::new(cfg.num_layers, num_pages, opts.page_size, cfg.kv_size());
            Ok(Chosen {
                backend: Box::new(ModelRunner { model, kv }),
                num_pages,
                max_running: opts.max_running_requests.unwrap_or(64),
                chunk_budget: opts.chunked_prefill_size.unwrap_or(2048),
            })
        }
    }
}

/// GPUs usable by this build (0 without the `cuda` feature or without a driver).
pub fn cuda_devices() -> usize {
    devices()
}

#[cfg(feature = "cuda")]
fn devices() -> usize {
    radixlm_cuda::Device::count()
}

#[cfg(not(feature = "cuda"))]
fn devices() -> usize {
    0
}

#[cfg(feature = "cuda")]
fn cuda(opts: &EngineOptions, files: &ModelFiles, ordinal: usize, limits: (usize, usize, usize)) -> Result<(Box<dyn Backend>, usize)> {
    let built = crate::cuda_backend::CudaBackend::new(opts, &files.cfg, &files.weights, ordinal, limits)?;
    Ok((Box::new(built.backend), built.num_pages))
}

#[cfg(not(feature = "cuda"))]
fn cuda(opts: &EngineOptions, _: &ModelFiles, _: usize, _: (usize, usize, usize)) -> Result<(Box<dyn Backend>, usize)> {
    Err(crate::error::Error::invalid_options(format!("options.device '{}': this build of radixlm has no CUDA backend", opts.device)))
}
