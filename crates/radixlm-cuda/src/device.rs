//! The CUDA device as the rest of radixlm sees it: one context, one stream, the kernel modules.

use crate::{ptx, Error, Result};
use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;
use std::sync::Arc;

/// Kernel handles, loaded once per device.
pub(crate) struct Kernels {
    pub embedding: CudaFunction,
    pub rmsnorm: CudaFunction,
    pub fused_add_rmsnorm: CudaFunction,
    pub silu_and_mul: CudaFunction,
    /// Indexed by [`Kernels::rope_index`].
    pub rope_kv: [CudaFunction; 4],
    /// Indexed by [`Kernels::head_dim_index`] (head_dim 64, 128).
    pub attn_decode: [CudaFunction; 2],
    pub attn_decode_reduce: [CudaFunction; 2],
    pub attn_decode_tc: [CudaFunction; 2],
    /// Whether this GPU gives a block the tensor-core decode kernel's shared memory.
    pub decode_tc_fits: bool,
    pub attn_prefill: [CudaFunction; 2],
    pub sample: CudaFunction,
}

impl Kernels {
    pub fn rope_index(neox: bool, table: bool) -> usize {
        (neox as usize) * 2 + table as usize
    }

    /// The attention kernels are compiled for these head sizes.
    pub const HEAD_DIMS: [usize; 2] = [64, 128];

    pub fn head_dim_index(head_dim: usize) -> Option<usize> {
        Self::HEAD_DIMS.iter().position(|&d| d == head_dim)
    }
}

/// A GPU with radixlm's kernels loaded. All work goes to one non-default stream (so that it can be
/// captured into CUDA graphs later). cudarc's per-buffer event tracking is turned off: with a single
/// stream, stream order already orders every use, and events would only add launch overhead and get
/// in the way of graph capture. Buffers passed to the launchers must be allocated on [`Device::stream`].
pub struct Device {
    ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) k: Kernels,
    sm_count: usize,
    decode_kernel: DecodeKernel,
}

/// Which decode attention kernel [`Device::attention_decode`] and [`Device::attention_decode_split`]
/// launch (kernels/attention_decode.cu): the same arguments, grid, splits and workspace either way.
/// A new [`Device`] takes the tensor-core kernel where the GPU has the shared memory for it: on an H100
/// it beat the CUDA-core one at every measured shape (bench/RESULTS.md, 2026-12-05: Llama-3.1-8B 500
/// prompts 3,812 vs 2,897 output tok/s; Qwen2.5-0.5B 256 prompts 59,439 vs 41,149).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeKernel {
    /// CUDA cores, any GQA group.
    Simt,
    /// Tensor cores for GQA groups of 2..=16 q heads per kv head (the group fills the rows of an mma
    /// tile); other groups still take the CUDA-core kernel.
    TensorCores,
}

impl Device {
    /// Opens GPU `ordinal`. Without a driver this is [`Error::NoDriver`], not a crash: libcuda is
    /// loaded at run time, so a CUDA build of radixlm still starts on a machine without one.
    pub fn new(ordinal: usize) -> Result<Self> {
        // cudarc panics on first use if libcuda is missing; ask first.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(Error::NoDriver);
        }
        let ctx = CudaContext::new(ordinal)?;
        // SAFETY: nothing has been allocated on this context yet, and we use a single stream.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.new_stream()?;
        let (major, minor) = ctx.compute_capability()?;
        let device = ctx.name()?;
        let load = |module: &'static str, src: &str| -> Result<Arc<CudaModule>> {
            ctx.load_module(Ptx::from_src(src))
                .map_err(|source| Error::ModuleLoad {
                    module,
                    arch: ptx::ARCH,
                    device: device.clone(),
                    major,
                    minor,
                    source,
                })
        };
        let embedding = load("embedding", ptx::EMBEDDING)?;
        let rmsnorm = load("rmsnorm", ptx::RMSNORM)?;
        let activation = load("activation", ptx::ACTIVATION)?;
        let rope = load("rope", ptx::ROPE)?;
        let decode = load("attention_decode", ptx::ATTENTION_DECODE)?;
        let prefill = load("attention_prefill", ptx::ATTENTION_PREFILL)?;
        let sampling = load("sampling", ptx::SAMPLING)?;
        let by_head_dim = |m: &Arc<CudaModule>, name: &str| -> Result<[CudaFunction; 2]> {
            let f = |d: usize| m.load_function(&format!("{name}_hd{d}_bf16"));
            Ok([f(64)?, f(128)?])
        };
        let attn_prefill = by_head_dim(&prefill, "attn_prefill")?;
        for (f, d) in attn_prefill.iter().zip(Kernels::HEAD_DIMS) {
            // Past the 48 KiB default: Q tile + double-buffered K and V tiles (src/attention.rs).
            f.set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                crate::attention::prefill_smem(d) as i32,
            )?;
        }
        let attn_decode_tc = by_head_dim(&decode, "attn_decode_tc")?;
        // Past the 48 KiB default: each warp's K/V ring (src/attention.rs). 100 KiB at head_dim 128 is
        // more than some GPUs give a block (sm_86/89: 99 KiB); there the CUDA-core kernel stays in use.
        let decode_tc_fits = attn_decode_tc.iter().zip(Kernels::HEAD_DIMS).all(|(f, d)| {
            f.set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                crate::attention::decode_tc_smem(d) as i32,
            )
            .is_ok()
        });
        let sample = sampling.load_function("sample_bf16")?;
        // Past the 48 KiB default: the key histogram (src/sampling.rs).
        sample.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            crate::sampling::SMEM_BYTES as i32,
        )?;
        let k = Kernels {
            embedding: embedding.load_function("embedding_bf16")?,
            rmsnorm: rmsnorm.load_function("rmsnorm_bf16")?,
            fused_add_rmsnorm: rmsnorm.load_function("fused_add_rmsnorm_bf16")?,
            silu_and_mul: activation.load_function("silu_and_mul_bf16")?,
            rope_kv: [
                rope.load_function("rope_kv_interleaved_freq_bf16")?,
                rope.load_function("rope_kv_interleaved_table_bf16")?,
                rope.load_function("rope_kv_neox_freq_bf16")?,
                rope.load_function("rope_kv_neox_table_bf16")?,
            ],
            attn_decode: by_head_dim(&decode, "attn_decode")?,
            attn_decode_reduce: by_head_dim(&decode, "attn_decode_reduce")?,
            attn_decode_tc,
            decode_tc_fits,
            attn_prefill,
            sample,
        };
        let sm_count =
            ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as usize;
        let decode_kernel = if k.decode_tc_fits { DecodeKernel::TensorCores } else { DecodeKernel::Simt };
        Ok(Device {
            ctx,
            stream,
            k,
            sm_count,
            decode_kernel,
        })
    }

    /// GPUs the driver sees; 0 without a driver (never an error: `device: 'auto'` asks this first).
    pub fn count() -> usize {
        // SAFETY: only probes whether libcuda can be opened.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return 0;
        }
        if cudarc::driver::result::init().is_err() {
            return 0;
        }
        CudaContext::device_count().map_or(0, |n| n.max(0) as usize)
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every launcher uses; allocate and copy through it.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Streaming multiprocessors (132 on an H100 SXM): what launch heuristics size grids against.
    pub fn sm_count(&self) -> usize {
        self.sm_count
    }

    /// The decode attention kernel this device launches from now on (tensor cores unless set; they are
    /// ignored on a GPU without the shared memory they need).
    pub fn set_decode_kernel(&mut self, kernel: DecodeKernel) {
        self.decode_kernel = if self.k.decode_tc_fits { kernel } else { DecodeKernel::Simt };
    }

    pub fn decode_kernel(&self) -> DecodeKernel {
        self.decode_kernel
    }

    /// Device name and compute capability, e.g. `NVIDIA H100 80GB HBM3 (sm_90)`.
    pub fn describe(&self) -> Result<String> {
        let (major, minor) = self.ctx.compute_capability()?;
        Ok(format!("{} (sm_{major}{minor})", self.ctx.name()?))
    }

    /// Waits for all work queued on the stream; reports any asynchronous kernel fault.
    pub fn synchronize(&self) -> Result<()> {
        Ok(self.stream.synchronize()?)
    }
}
