//! `y = x W^T (+ bias)`, the linear layer, through cuBLASLt: bf16 in and out, f32 accumulation, bias
//! added in f32 by the epilogue before the single rounding of y.
//!
//! x is `[m, k]` row-major (a batch of activations), W `[n, k]` row-major (how Hugging Face stores a
//! linear layer's weight), y `[m, n]` row-major. cuBLASLt is column-major, where these buffers read
//! as x^T `[k, m]`, W^T `[k, n]` and y^T `[n, m]`; so we ask it for y^T = op(W^T) x^T with op = transpose:
//! A = W (k x n, ld k, transposed), B = x (k x m, ld k), C = D = y (n x m, ld n). The bias epilogue adds
//! a vector over the rows of D, i.e. one value per output feature n. At m = 1 the bias is instead
//! passed as C with beta = 1 (an n x 1 matrix is the bias vector itself): same single rounding, and it
//! avoids the bias epilogue on one-column products, which cuBLASLt does not support for every
//! algorithm (PyTorch keeps one-row inputs off its Lt bias path too).
//!
//! Plans: matrix layouts, the matmul descriptor and the algorithm that cuBLASLt's heuristic picks are
//! built once per (m, n, k, bias, alignment) and cached; later calls only set the bias pointer and
//! enqueue. The heuristic is told the real alignment of the four pointers (cudaMalloc gives 256 bytes,
//! a view into a larger buffer may give less), so it never picks an algorithm that needs more. A decode
//! step has a handful of shapes per batch-size bucket, so the cache stays small; it has no bound.
//!
//! Workspace: one 32 MiB device buffer (NVIDIA's recommendation for Hopper), shared by every call on
//! the stream. Everything is enqueued on the [`Device`]'s stream, so calls can be captured in a CUDA
//! graph (a captured call keeps the pointers it was captured with).

use crate::{Device, Error, Result};
use cudarc::cublaslt::result::{self as lt, CublasError};
use cudarc::cublaslt::sys;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr};
use half::bf16;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

const WORKSPACE_BYTES: usize = 32 << 20;

fn blas(op: &'static str) -> impl FnOnce(CublasError) -> Error {
    move |source| Error::Blas { op, source }
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct PlanKey {
    m: u64,
    n: u64,
    k: u64,
    /// The bias epilogue (m > 1 with a bias).
    bias: bool,
    /// Smallest alignment (bytes, power of two, at most 256) of the four pointers.
    align: u32,
    /// y in f32 instead of bf16 (logits: no rounding to bf16 before the softmax).
    f32_out: bool,
}

/// Candidate algorithms asked of the heuristic per shape.
const ALGOS: usize = 8;

/// Descriptors and algorithms of one shape. Owns the cuBLASLt objects it holds.
struct Plan {
    desc: sys::cublasLtMatmulDesc_t,
    a: sys::cublasLtMatrixLayout_t,
    b: sys::cublasLtMatrixLayout_t,
    c: sys::cublasLtMatrixLayout_t,
    /// The heuristic's candidates, best first; `algos[chosen]` is used. An algorithm that cuBLASLt
    /// refuses at enqueue time (NOT_SUPPORTED, which its heuristic does not always foresee) is
    /// skipped for good.
    algos: Vec<sys::cublasLtMatmulAlgo_t>,
    chosen: usize,
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: created in Plan::new, destroyed only here. Errors at teardown are ignored.
        unsafe {
            let _ = lt::destroy_matrix_layout(self.a);
            let _ = lt::destroy_matrix_layout(self.b);
            let _ = lt::destroy_matrix_layout(self.c);
            let _ = lt::destroy_matmul_desc(self.desc);
        }
    }
}

unsafe fn set_desc<T>(
    desc: sys::cublasLtMatmulDesc_t,
    attr: sys::cublasLtMatmulDescAttributes_t,
    v: &T,
) -> Result<()> {
    lt::set_matmul_desc_attribute(desc, attr, v as *const T as *const c_void, size_of::<T>())
        .map_err(blas("set descriptor"))
}

impl Plan {
    /// `bias`: the bias pointer of the first call (the heuristic sees the descriptor as it will run).
    fn new(handle: sys::cublasLtHandle_t, key: PlanKey, bias: Option<u64>) -> Result<Plan> {
        use sys::cublasLtMatmulDescAttributes_t as D;
        use sys::cublasLtMatmulPreferenceAttributes_t as P;
        let bf = sys::cudaDataType_t::CUDA_R_16BF;
        let out = if key.f32_out { sys::cudaDataType_t::CUDA_R_32F } else { bf };
        let layout = |rows, cols, ld| lt::create_matrix_layout(bf, rows, cols, ld as i64);
        // Built field by field so that whatever was created is destroyed (Drop) on an early error.
        let mut plan = Plan {
            desc: lt::create_matmul_desc(
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                sys::cudaDataType_t::CUDA_R_32F,
            )
            .map_err(blas("create descriptor"))?,
            a: std::ptr::null_mut(),
            b: std::ptr::null_mut(),
            c: std::ptr::null_mut(),
            algos: Vec::new(),
            chosen: 0,
        };
        plan.a = layout(key.k, key.n, key.k).map_err(blas("create layout"))?;
        plan.b = layout(key.k, key.m, key.k).map_err(blas("create layout"))?;
        plan.c = lt::create_matrix_layout(out, key.n, key.m, key.n as i64).map_err(blas("create layout"))?;
        let epilogue = if key.bias {
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS
        } else {
            sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_DEFAULT
        };
        // SAFETY: live descriptor; each value has the type the attribute documents.
        unsafe {
            set_desc(plan.desc, D::CUBLASLT_MATMUL_DESC_TRANSA, &1i32)?; // CUBLAS_OP_T
            set_desc(plan.desc, D::CUBLASLT_MATMUL_DESC_TRANSB, &0i32)?; // CUBLAS_OP_N
            set_desc(
                plan.desc,
                D::CUBLASLT_MATMUL_DESC_EPILOGUE,
                &(epilogue as u32),
            )?;
            if let Some(bp) = bias {
                set_desc(plan.desc, D::CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp)?;
            }
        }
        let pref = lt::create_matmul_pref().map_err(blas("create preference"))?;
        let heuristic = (|| -> Result<Vec<sys::cublasLtMatmulAlgo_t>> {
            // SAFETY: live preference; u64 and u32 as the attributes document.
            unsafe {
                let ws = WORKSPACE_BYTES as u64;
                lt::set_matmul_pref_attribute(
                    pref,
                    P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                    &ws as *const u64 as *const c_void,
                    8,
                )
                .map_err(blas("set preference"))?;
                for attr in [
                    P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                    P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                    P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                    P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                ] {
                    lt::set_matmul_pref_attribute(
                        pref,
                        attr,
                        &key.align as *const u32 as *const c_void,
                        4,
                    )
                    .map_err(blas("set preference"))?;
                }
                let mut results: [sys::cublasLtMatmulHeuristicResult_t; ALGOS] = std::mem::zeroed();
                let mut count = 0;
                sys::cublasLtMatmulAlgoGetHeuristic(
                    handle,
                    plan.desc,
                    plan.a,
                    plan.b,
                    plan.c,
                    plan.c,
                    pref,
                    ALGOS as i32,
                    results.as_mut_ptr(),
                    &mut count,
                )
                .result()
                .map_err(blas("heuristic"))?;
                Ok(results[..count.max(0) as usize]
                    .iter()
                    .filter(|r| r.state == sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS)
                    .map(|r| r.algo)
                    .collect())
            }
        })();
        // SAFETY: created above, not used after this.
        unsafe {
            let _ = lt::destroy_matmul_pref(pref);
        }
        plan.algos = heuristic?;
        if plan.algos.is_empty() {
            return Err(blas("no algorithm for this shape")(CublasError(
                sys::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED,
            )));
        }
        Ok(plan)
    }
}

/// A cuBLASLt handle bound to a [`Device`]'s stream, with its workspace and plan cache.
pub struct Gemm {
    handle: sys::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    stream: Arc<CudaStream>,
    plans: Mutex<HashMap<PlanKey, Plan>>,
}

// SAFETY: the raw cuBLASLt handle and descriptors are only used under the `plans` lock (every matmul
// holds it from the bias update to the enqueue), which serialises all use across threads.
unsafe impl Send for Gemm {}
unsafe impl Sync for Gemm {}

impl Drop for Gemm {
    fn drop(&mut self) {
        self.plans.get_mut().map(|p| p.clear()).ok();
        // SAFETY: created in Gemm::new, destroyed only here, after its plans.
        unsafe {
            let _ = lt::destroy_handle(self.handle);
        }
    }
}

impl Gemm {
    /// Loads cuBLASLt (at run time, like libcuda) and allocates the workspace on `dev`'s stream.
    pub fn new(dev: &Device) -> Result<Gemm> {
        // SAFETY: only probes whether the library can be opened.
        if !unsafe { sys::is_culib_present() } {
            return Err(Error::NoBlas);
        }
        let stream = dev.stream().clone();
        stream.context().bind_to_thread()?;
        // SAFETY: the workspace is scratch for cuBLASLt; its contents are never read by us.
        let workspace = unsafe { stream.alloc::<u8>(WORKSPACE_BYTES) }?;
        let handle = lt::create_handle().map_err(blas("create handle"))?;
        Ok(Gemm {
            handle,
            workspace,
            stream,
            plans: Mutex::new(HashMap::new()),
        })
    }

    /// `y [m, n] = x [m, k] W[n, k]^T`, with m = x.len() / k and n = w.len() / k.
    pub fn linear(
        &self,
        y: &mut impl DevicePtrMut<bf16>,
        x: &impl DevicePtr<bf16>,
        w: &impl DevicePtr<bf16>,
        k: usize,
    ) -> Result<()> {
        self.run(y, x, w, None::<&CudaSlice<bf16>>, k)
    }

    /// `y [m, n] = x [m, k] W[n, k]^T + bias[n]`.
    pub fn linear_bias(
        &self,
        y: &mut impl DevicePtrMut<bf16>,
        x: &impl DevicePtr<bf16>,
        w: &impl DevicePtr<bf16>,
        bias: &impl DevicePtr<bf16>,
        k: usize,
    ) -> Result<()> {
        self.run(y, x, w, Some(bias), k)
    }

    /// `y [m, n] = x [m, k] W[n, k]^T` with y in f32 (bf16 inputs, f32 accumulation, no final
    /// rounding to bf16): the LM head, whose logits feed a softmax.
    pub fn linear_f32(
        &self,
        y: &mut impl DevicePtrMut<f32>,
        x: &impl DevicePtr<bf16>,
        w: &impl DevicePtr<bf16>,
        k: usize,
    ) -> Result<()> {
        self.run(y, x, w, None::<&CudaSlice<bf16>>, k)
    }

    /// Plans built so far (one per distinct shape and alignment).
    pub fn cached_plans(&self) -> usize {
        self.plans.lock().map(|p| p.len()).unwrap_or(0)
    }

    fn run<Y: DeviceRepr, B: DevicePtr<bf16>>(
        &self,
        y: &mut impl DevicePtrMut<Y>,
        x: &impl DevicePtr<bf16>,
        w: &impl DevicePtr<bf16>,
        bias: Option<&B>,
        k: usize,
    ) -> Result<()> {
        const OP: &str = "linear";
        ensure!(
            k > 0 && x.len().is_multiple_of(k) && w.len().is_multiple_of(k),
            OP,
            "x ({}) and w ({}) are not [rows, {k}]",
            x.len(),
            w.len()
        );
        let (m, n) = (x.len() / k, w.len() / k);
        ensure!(y.len() == m * n, OP, "y has {}, want {m} x {n}", y.len());
        if let Some(b) = bias {
            ensure!(b.len() == n, OP, "bias has {}, want {n}", b.len());
        }
        // cuBLASLt takes 64-bit sizes but int32 leading dimensions in some algorithms: keep all in i32.
        for (what, v) in [("m", m), ("n", n), ("k", k)] {
            crate::ops::to_i32(OP, what, v)?;
        }
        if m == 0 || n == 0 {
            return Ok(());
        }
        let s = &self.stream;
        // cuBLASLt runs on the calling thread's current context: make it ours.
        s.context().bind_to_thread()?;
        let (yp, _y) = y.device_ptr_mut(s);
        let (xp, _x) = x.device_ptr(s);
        let (wp, _w) = w.device_ptr(s);
        let (bp, _b) = bias.map(|b| b.device_ptr(s)).unzip();
        // The bias rides in the epilogue, or, at m = 1, as C with beta = 1.
        let (epi_bias, cp, beta) = match bp {
            Some(b) if m == 1 => (None, b, 1.0f32),
            _ => (bp, yp, 0.0f32),
        };
        let (wsp, _ws) = self.workspace.device_ptr(s);
        let align = [yp, xp, wp, bp.unwrap_or(0)]
            .iter()
            .map(|&p| 1u32 << p.trailing_zeros().min(8))
            .min()
            .unwrap_or(256);
        let key = PlanKey {
            m: m as u64,
            n: n as u64,
            k: k as u64,
            bias: epi_bias.is_some(),
            align,
            f32_out: size_of::<Y>() == 4,
        };
        let mut plans = self.plans.lock().map_err(|_| Error::Shape {
            op: OP,
            msg: "plan cache poisoned by an earlier panic".into(),
        })?;
        let plan = match plans.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Plan::new(self.handle, key, epi_bias)?),
        };
        let alpha = 1.0f32;
        loop {
            // SAFETY: the plan's layouts describe exactly these buffers (sizes checked above), the
            // pointers stay valid for the enqueue (their guards live to the end of this function),
            // and the algorithm was chosen for this alignment and workspace size.
            let r = unsafe {
                if let Some(bp) = epi_bias {
                    set_desc(
                        plan.desc,
                        sys::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                        &bp,
                    )?;
                }
                lt::matmul(
                    self.handle,
                    plan.desc,
                    &alpha as *const f32 as *const c_void,
                    &beta as *const f32 as *const c_void,
                    wp as *const c_void,
                    plan.a,
                    xp as *const c_void,
                    plan.b,
                    cp as *const c_void,
                    plan.c,
                    yp as *mut c_void,
                    plan.c,
                    &plan.algos[plan.chosen],
                    wsp as *mut c_void,
                    WORKSPACE_BYTES,
                    s.cu_stream() as sys::cudaStream_t,
                )
            };
            match r {
                Err(CublasError(sys::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED))
                    if plan.chosen + 1 < plan.algos.len() =>
                {
                    plan.chosen += 1;
                }
                r => return r.map_err(blas("matmul")),
            }
        }
    }
}
