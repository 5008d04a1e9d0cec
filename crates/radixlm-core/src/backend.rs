//! Which backend runs the model, and the limits that follow from it: `device` 'cpu', 'cuda[:N]', or
//! 'auto' (CUDA when this build has it and a GPU is there, else the CPU, silently).

use std::path::Path;

use crate::error::Result;
use crate::model::hub::Progress;
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

/// Builds the backend, reporting `stage: "load"` progress layer by layer (in bytes of the weight files,
/// so a bar can share its unit with downloads).
/// `ordinal`: [`cuda_ordinal`] of `opts` (the GPU to load onto), or None for the CPU.
pub fn create(opts: &EngineOptions, ordinal: Option<usize>, files: ModelFiles, context_length: usize, progress: &mut dyn FnMut(Progress)) -> Result<Chosen> {
    let total = weight_bytes(Path::new(&files.resolved_path));
    let file = files.resolved_path.clone();
    let mut on_layer = |done: usize, layers: usize| {
        let downloaded = (total as u128 * done as u128 / layers.max(1) as u128) as u64;
        progress(Progress { stage: "load", file: file.clone(), downloaded, total: Some(total) });
    };
    match ordinal {
        Some(n) => {
            let max_running = opts.max_running_requests.unwrap_or(256);
            let chunk_budget = opts.chunked_prefill_size.unwrap_or(8192).min(CUDA_MAX_CHUNK);
            let (backend, num_pages) = cuda(opts, &files, n, (chunk_budget + max_running, max_running, context_length), &mut on_layer)?;
            Ok(Chosen { backend, num_pages, max_running, chunk_budget })
        }
        None => {
            let cfg = files.cfg.clone();
            let mode = if opts.wants_f32() { WeightMode::F32 } else { WeightMode::AsStored };
            let model = Transformer::load_with_progress(files.cfg, &files.weights, mode, &mut on_layer)?;
            let per_token = KvCache::bytes_per_token(cfg.num_layers, cfg.kv_size());
            let pool_tokens = opts.max_total_tokens.unwrap_or_else(|| ((4usize << 30) / per_token).clamp(2048, 65536));
            let num_pages = pool_tokens.div_ceil(opts.page_size);
            let kv = KvCache::new(cfg.num_layers, num_pages, opts.page_size, cfg.kv_size());
            Ok(Chosen {
                backend: Box::new(ModelRunner::new(model, kv)),
                num_pages,
                max_running: opts.max_running_requests.unwrap_or(64),
                chunk_budget: opts.chunked_prefill_size.unwrap_or(2048),
            })
        }
    }
}

/// The GPU the options resolve to: None for the CPU (`device: 'cpu'`, or 'auto' without a usable GPU).
pub fn cuda_ordinal(opts: &EngineOptions) -> Result<Option<usize>> {
    Ok(match opts.device.as_str() {
        "cpu" => None,
        "auto" => (crate::CUDA_BUILT && cuda_devices() > 0).then_some(0),
        _ => Some(opts.cuda_ordinal()?),
    })
}

/// GPUs usable by this build (0 without the `cuda` feature or without a driver).
#[cfg(feature = "cuda")]
pub fn cuda_devices() -> usize {
    radixlm_cuda::Device::count()
}

/// GPUs usable by this build: none without the `cuda` feature.
#[cfg(not(feature = "cuda"))]
pub fn cuda_devices() -> usize {
    0
}

/// Bytes of the weights: the GGUF file, or the safetensors files of a model directory.
fn weight_bytes(path: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    if path.is_file() {
        return size(path);
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .map(|p| size(&p))
                .sum()
        })
        .unwrap_or(0)
}

type OnLayer<'a> = &'a mut dyn FnMut(usize, usize);

#[cfg(feature = "cuda")]
fn cuda(opts: &EngineOptions, files: &ModelFiles, ordinal: usize, limits: (usize, usize, usize), on_layer: OnLayer) -> Result<(Box<dyn Backend>, usize)> {
    let built = crate::cuda_backend::CudaBackend::new(opts, &files.cfg, &files.weights, ordinal, limits, on_layer)?;
    Ok((Box::new(built.backend), built.num_pages))
}

#[cfg(not(feature = "cuda"))]
fn cuda(opts: &EngineOptions, _: &ModelFiles, _: usize, _: (usize, usize, usize), _: OnLayer) -> Result<(Box<dyn Backend>, usize)> {
    Err(crate::error::Error::invalid_options(format!("options.device '{}': this build of radixlm has no CUDA backend", opts.device)))
}
