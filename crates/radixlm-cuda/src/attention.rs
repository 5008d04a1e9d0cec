//! Paged attention launchers (kernels/attention_decode.cu, kernels/attention_prefill.cu) and the host
//! side of decode split-K.
//!
//! Both kernels read keys and values from one layer's paged cache ([`PagedKv`], layout in
//! [`crate::layout`]) through per-sequence page tables of a fixed width, take q with a row stride (so q
//! is read straight out of the fused qkv buffer that `rope_kv_write` rotated) and use the softmax
//! scale `1/sqrt(head_dim)`. head_dim 64 and 128 are compiled; any GQA ratio whose block fits in 1024
//! threads (group <= 128 at head_dim 64, <= 64 at 128), any page size.
//!
//! Decode split-K. A decode step is memory-bound: each sequence's K and V are read once. The kernel
//! runs one block per (kv head, sequence), so a small batch gives few blocks (Qwen2.5-0.5B at batch 1:
//! 2 blocks on a 132-SM GPU), each streaming a long context alone. Cutting the context into chunks
//! (grid.z) multiplies the blocks, at the price of an f32 partial output per (sequence, q head, split)
//! and a second, small kernel that merges them. [`decode_splits`] picks the split count from the batch
//! shape; [`Device::attention_decode_split`] runs it. The count is a launch parameter, not derived from
//! the lengths on the host, and each sequence's chunk length is computed on the device, so the launch
//! has a fixed shape per batch size: a CUDA graph captured once per batch bucket stays valid while the
//! contexts grow.

use crate::device::{DecodeKernel, Kernels};
use crate::layout::{AttnShape, PagedKv};
use crate::ops::to_i32;
use crate::{Device, Result};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};
use half::bf16;

/// Tokens per z-slice per tile and pipeline depth of attention_decode.cu (DEC_TPZ, DEC_STAGES).
const DECODE_TPZ: usize = 4;
const DECODE_STAGES: usize = 4;
/// No split is shorter than this many tokens: below it, the partial outputs and the merge cost more
/// than the parallelism gains.
pub const DECODE_MIN_CHUNK: usize = 128;
/// Upper bound on decode splits (grid.z and workspace size).
pub const DECODE_MAX_SPLITS: usize = 64;
/// The decode grid aims at this many blocks per SM (several resident blocks keep enough loads in flight).
const DECODE_BLOCKS_PER_SM: usize = 4;

/// attention_decode.cu's tensor-core variant: TC_WARPS warps, each with a ring of TC_STAGES tiles of
/// TC_BN keys (K and V); the GQA group fills at most the 16 rows of an mma tile.
const DECODE_TC_WARPS: usize = 4;
const DECODE_TC_BN: usize = 16;
const DECODE_TC_STAGES: usize = 3;
const DECODE_TC_MAX_GROUP: usize = 16;

/// Dynamic shared memory of the tensor-core decode kernel: the Q tile and every warp's K/V ring, or
/// (reused after the loop) the warps' f32 outputs and (m, l) pairs for the merge, whichever is larger.
pub(crate) fn decode_tc_smem(head_dim: usize) -> usize {
    let rings = (16 + DECODE_TC_WARPS * DECODE_TC_STAGES * 2 * DECODE_TC_BN) * head_dim * 2;
    let merge = DECODE_TC_WARPS * 16 * (head_dim + 2) * 4;
    rings.max(merge)
}

/// attention_prefill.cu: PF_BM query rows x PF_BN keys per step, PF_THREADS threads.
const PREFILL_BM: usize = 64;
const PREFILL_BN: usize = 64;
const PREFILL_THREADS: u32 = 128;

/// Dynamic shared memory of the prefill kernel: a Q tile and two K and two V tiles, bf16.
pub(crate) fn prefill_smem(head_dim: usize) -> usize {
    (PREFILL_BM + 4 * PREFILL_BN) * head_dim * 2
}

/// head_dim values the attention kernels are compiled for.
pub const HEAD_DIMS: [usize; 2] = crate::device::Kernels::HEAD_DIMS;

/// The softmax scale both kernels use.
pub fn softmax_scale(head_dim: usize) -> f32 {
    1.0 / (head_dim as f32).sqrt()
}

/// How many chunks decode attention should cut each context into: enough blocks to give every SM
/// [`DECODE_BLOCKS_PER_SM`] of them, no chunk shorter than [`DECODE_MIN_CHUNK`] tokens of
/// `max_seq_len` (the longest context the step, or the graph bucket, allows). 1 means the single-pass
/// kernel ([`Device::attention_decode`]).
pub fn decode_splits(
    batch: usize,
    num_kv_heads: usize,
    max_seq_len: usize,
    sm_count: usize,
) -> usize {
    let blocks = (batch * num_kv_heads).max(1);
    let by_grid = (DECODE_BLOCKS_PER_SM * sm_count).div_ceil(blocks);
    let by_len = max_seq_len.div_ceil(DECODE_MIN_CHUNK);
    by_grid.min(by_len).clamp(1, DECODE_MAX_SPLITS)
}

/// f32 elements of the split-K workspace: partial outputs `[batch, num_heads, splits, head_dim]`,
/// then their log-sum-exps `[batch, num_heads, splits]`.
pub fn decode_workspace_len(batch: usize, shape: AttnShape, splits: usize) -> usize {
    batch * shape.num_heads * splits * (shape.head_dim + 1)
}

/// blockDim of the decode kernel (head_dim/8, group, bdz) and its dynamic shared memory: bdz, the
/// number of token slices, is the smallest that makes the block a whole number of warps (the dot
/// product reduces over shuffles with a full mask) and at least 128 threads, unless the K/V tiles
/// would pass 32 KiB (small groups: MHA gets 64-thread blocks, and more of them per SM).
fn decode_geometry(head_dim: usize, group: usize) -> Option<((u32, u32, u32), u32)> {
    let base = head_dim / 8 * group;
    let step = 32 / gcd(base, 32);
    let tile_bytes = |bdz: usize| DECODE_STAGES * 2 * bdz * DECODE_TPZ * head_dim * 2;
    let mut bdz = step;
    while base * bdz < 128 && tile_bytes(bdz + step) <= 32 * 1024 {
        bdz += step;
    }
    if base * bdz > 1024 {
        return None;
    }
    let tiles = tile_bytes(bdz);
    let merge = bdz * group * (head_dim + 2) * 4;
    Some((
        ((head_dim / 8) as u32, group as u32, bdz as u32),
        tiles.max(merge) as u32,
    ))
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Checks shared by both kernels. Returns (kernel index, group, num_pages).
fn check_kv<C: DevicePtr<bf16>, I: DevicePtr<i32>>(
    op: &'static str,
    kv: &PagedKv<'_, C, I>,
    shape: AttnShape,
    sequences: usize,
) -> Result<(usize, usize, i32)> {
    let AttnShape {
        num_heads,
        num_kv_heads,
        head_dim,
    } = shape;
    ensure!(
        num_kv_heads > 0 && num_heads > 0 && num_heads.is_multiple_of(num_kv_heads),
        op,
        "{num_heads} q heads are not a multiple of {num_kv_heads} kv heads"
    );
    let Some(index) = Kernels::head_dim_index(head_dim) else {
        return Err(crate::Error::Shape {
            op,
            msg: format!(
                "head_dim {head_dim} is not compiled (have {:?})",
                Kernels::HEAD_DIMS
            ),
        });
    };
    ensure!(
        kv.page_size > 0 && kv.max_pages > 0,
        op,
        "page_size {} and max_pages {} must be > 0",
        kv.page_size,
        kv.max_pages
    );
    let page = kv.page_size * shape.kv_width();
    ensure!(
        kv.k_cache.len() == kv.v_cache.len() && kv.k_cache.len().is_multiple_of(page),
        op,
        "k_cache ({}) and v_cache ({}) must be equal and [pages, {}, {}]",
        kv.k_cache.len(),
        kv.v_cache.len(),
        kv.page_size,
        shape.kv_width()
    );
    let num_pages = kv.k_cache.len() / page;
    ensure!(num_pages > 0, op, "empty KV cache");
    to_i32(op, "max_pages * page_size", kv.max_pages * kv.page_size)?;
    ensure!(
        kv.page_table.len() == sequences * kv.max_pages,
        op,
        "page_table has {}, want {sequences} x {}",
        kv.page_table.len(),
        kv.max_pages
    );
    ensure!(
        num_kv_heads <= 65535,
        op,
        "{num_kv_heads} kv heads (grid limit)"
    );
    Ok((
        index,
        num_heads / num_kv_heads,
        to_i32(op, "num_pages", num_pages)?,
    ))
}

/// q is `[rows, q_stride]` with the heads in the first `num_heads * head_dim` of each row.
fn check_q(
    op: &'static str,
    q_len: usize,
    q_stride: usize,
    rows: usize,
    width: usize,
) -> Result<()> {
    ensure!(
        q_stride >= width && q_stride.is_multiple_of(8),
        op,
        "q_stride {q_stride} must be >= {width} and a multiple of 8"
    );
    ensure!(
        rows == 0 || q_len >= (rows - 1) * q_stride + width,
        op,
        "q of {q_len} is too short for {rows} rows of stride {q_stride}"
    );
    Ok(())
}

fn check_aligned(op: &'static str, ptrs: &[(&str, u64)]) -> Result<()> {
    for (what, p) in ptrs {
        ensure!(p % 16 == 0, op, "{what} is not 16-byte aligned");
    }
    Ok(())
}

impl Device {
    /// Decode attention, single pass: `out[b]` = attention of query row `b` of `q` over the first
    /// `seq_lens[b]` positions of sequence `b` (0 gives a zero row). `q`: `[batch, q_stride]`,
    /// `out`: `[batch, num_heads * head_dim]`, `seq_lens`: `[batch]`, `kv.page_table`:
    /// `[batch, kv.max_pages]`. See kernels/attention_decode.cu.
    pub fn attention_decode<C: DevicePtr<bf16>, I: DevicePtr<i32>>(
        &self,
        out: &mut impl DevicePtrMut<bf16>,
        q: &impl DevicePtr<bf16>,
        q_stride: usize,
        kv: PagedKv<'_, C, I>,
        seq_lens: &impl DevicePtr<i32>,
        shape: AttnShape,
    ) -> Result<()> {
        self.decode(
            out,
            q,
            q_stride,
            kv,
            seq_lens,
            shape,
            1,
            None::<&mut CudaSlice<f32>>,
        )
    }

    /// Decode attention with the context cut into up to `splits` chunks (flash-decoding), then merged
    /// by a second kernel. `workspace` holds at least [`decode_workspace_len`] f32; the same buffer
    /// serves every layer. `splits` = 1 is [`Device::attention_decode`].
    #[allow(clippy::too_many_arguments)]
    pub fn attention_decode_split<C: DevicePtr<bf16>, I: DevicePtr<i32>>(
        &self,
        out: &mut impl DevicePtrMut<bf16>,
        q: &impl DevicePtr<bf16>,
        q_stride: usize,
        kv: PagedKv<'_, C, I>,
        seq_lens: &impl DevicePtr<i32>,
        shape: AttnShape,
        splits: usize,
        workspace: &mut impl DevicePtrMut<f32>,
    ) -> Result<()> {
        self.decode(
            out,
            q,
            q_stride,
            kv,
            seq_lens,
            shape,
            splits,
            Some(workspace),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn decode<C: DevicePtr<bf16>, I: DevicePtr<i32>, W: DevicePtrMut<f32>>(
        &self,
        out: &mut impl DevicePtrMut<bf16>,
        q: &impl DevicePtr<bf16>,
        q_stride: usize,
        kv: PagedKv<'_, C, I>,
        seq_lens: &impl DevicePtr<i32>,
        shape: AttnShape,
        splits: usize,
        workspace: Option<&mut W>,
    ) -> Result<()> {
        const OP: &str = "attention_decode";
        let batch = seq_lens.len();
        let (index, group, num_pages) = check_kv(OP, &kv, shape, batch)?;
        let width = shape.num_heads * shape.head_dim;
        check_q(OP, q.len(), q_stride, batch, width)?;
        ensure!(
            out.len() == batch * width,
            OP,
            "out has {}, want {batch} x {width}",
            out.len()
        );
        ensure!(batch <= 65535, OP, "batch {batch} (grid limit)");
        ensure!(
            (1..=DECODE_MAX_SPLITS).contains(&splits),
            OP,
            "splits = {splits}, want 1 ..= {DECODE_MAX_SPLITS}"
        );
        let tensor_cores = self.decode_kernel() == DecodeKernel::TensorCores
            && (2..=DECODE_TC_MAX_GROUP).contains(&group);
        let geometry = if tensor_cores {
            Some((
                ((DECODE_TC_WARPS * 32) as u32, 1, 1),
                decode_tc_smem(shape.head_dim) as u32,
            ))
        } else {
            decode_geometry(shape.head_dim, group)
        };
        let Some((block, smem)) = geometry else {
            return Err(crate::Error::Shape {
                op: OP,
                msg: format!("GQA group {group} is too large for one block"),
            });
        };
        if let Some(w) = &workspace {
            let need = decode_workspace_len(batch, shape, splits);
            ensure!(
                w.len() >= need,
                OP,
                "workspace has {} f32, want {need}",
                w.len()
            );
        }
        if batch == 0 {
            return Ok(());
        }
        let s = &self.stream;
        let (o, _o) = out.device_ptr_mut(s);
        let (qp, _q) = q.device_ptr(s);
        let (kc, _kc) = kv.k_cache.device_ptr(s);
        let (vc, _vc) = kv.v_cache.device_ptr(s);
        let (pt, _pt) = kv.page_table.device_ptr(s);
        let (sl, _sl) = seq_lens.device_ptr(s);
        check_aligned(
            OP,
            &[("out", o), ("q", qp), ("k_cache", kc), ("v_cache", vc)],
        )?;
        let (part_o, part_lse, _w) = match workspace {
            Some(w) if splits > 1 => {
                let (p, g) = w.device_ptr_mut(s);
                let lse = p + (batch * shape.num_heads * splits * shape.head_dim * 4) as u64;
                (p, lse, Some(g))
            }
            _ => (0u64, 0u64, None),
        };
        let q_stride = q_stride as i64;
        let (max_pages, page_size) = (kv.max_pages as i32, kv.page_size as i32);
        let (nh, nkv) = (shape.num_heads as i32, shape.num_kv_heads as i32);
        let scale_log2 = softmax_scale(shape.head_dim) * std::f32::consts::LOG2_E;
        let (max_splits, min_chunk) = (splits as i32, DECODE_MIN_CHUNK as i32);
        let kernel = if tensor_cores {
            &self.k.attn_decode_tc[index]
        } else {
            &self.k.attn_decode[index]
        };
        let mut b = s.launch_builder(kernel);
        b.arg(&o)
            .arg(&part_o)
            .arg(&part_lse)
            .arg(&qp)
            .arg(&q_stride);
        b.arg(&kc).arg(&vc).arg(&num_pages).arg(&pt).arg(&max_pages);
        b.arg(&sl)
            .arg(&page_size)
            .arg(&nh)
            .arg(&nkv)
            .arg(&scale_log2);
        b.arg(&max_splits).arg(&min_chunk);
        let grid = (shape.num_kv_heads as u32, batch as u32, splits as u32);
        unsafe {
            b.launch(LaunchConfig {
                grid_dim: grid,
                block_dim: block,
                shared_mem_bytes: smem,
            })
        }?;
        if splits > 1 {
            let max_len = max_pages * page_size;
            let mut b = s.launch_builder(&self.k.attn_decode_reduce[index]);
            b.arg(&o).arg(&part_o).arg(&part_lse).arg(&sl).arg(&max_len);
            b.arg(&nh).arg(&max_splits).arg(&min_chunk);
            unsafe {
                b.launch(LaunchConfig {
                    grid_dim: (shape.num_heads as u32, batch as u32, 1),
                    block_dim: (shape.head_dim as u32, 1, 1),
                    shared_mem_bytes: 0,
                })
            }?;
        }
        Ok(())
    }

    /// Prefill / extend attention: sequence `s` owns query tokens `cu_seqlens[s] .. cu_seqlens[s+1]`
    /// of `q` (`[tokens, q_stride]`) and `out` (`[tokens, num_heads * head_dim]`), has
    /// `prefix_lens[s]` tokens cached before them, and its token `i` attends to positions
    /// `0 ..= prefix_lens[s] + i` of its pages (`kv.page_table`: `[sequences, kv.max_pages]`), all of
    /// which, the new tokens' included, must already be in the cache. `max_new_tokens` (the largest
    /// `cu_seqlens[s+1] - cu_seqlens[s]`) sizes the grid; a smaller value is still correct, only slower.
    /// See kernels/attention_prefill.cu.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_prefill<C: DevicePtr<bf16>, I: DevicePtr<i32>>(
        &self,
        out: &mut impl DevicePtrMut<bf16>,
        q: &impl DevicePtr<bf16>,
        q_stride: usize,
        kv: PagedKv<'_, C, I>,
        cu_seqlens: &impl DevicePtr<i32>,
        prefix_lens: &impl DevicePtr<i32>,
        max_new_tokens: usize,
        shape: AttnShape,
    ) -> Result<()> {
        const OP: &str = "attention_prefill";
        ensure!(
            !cu_seqlens.is_empty(),
            OP,
            "cu_seqlens needs sequences + 1 entries"
        );
        let seqs = cu_seqlens.len() - 1;
        ensure!(
            prefix_lens.len() == seqs,
            OP,
            "{} prefix_lens for {seqs} sequences",
            prefix_lens.len()
        );
        let (index, group, num_pages) = check_kv(OP, &kv, shape, seqs)?;
        let width = shape.num_heads * shape.head_dim;
        ensure!(
            out.len().is_multiple_of(width),
            OP,
            "out of {} is not [tokens, {width}]",
            out.len()
        );
        let tokens = out.len() / width;
        check_q(OP, q.len(), q_stride, tokens, width)?;
        ensure!(seqs <= 65535, OP, "{seqs} sequences (grid limit)");
        let tokens_i = to_i32(OP, "tokens", tokens)?;
        let row_tiles = to_i32(
            OP,
            "row tiles",
            (max_new_tokens * group).div_ceil(PREFILL_BM),
        )?;
        if seqs == 0 || tokens == 0 || row_tiles == 0 {
            return Ok(());
        }
        let s = &self.stream;
        let (o, _o) = out.device_ptr_mut(s);
        let (qp, _q) = q.device_ptr(s);
        let (kc, _kc) = kv.k_cache.device_ptr(s);
        let (vc, _vc) = kv.v_cache.device_ptr(s);
        let (pt, _pt) = kv.page_table.device_ptr(s);
        let (cu, _cu) = cu_seqlens.device_ptr(s);
        let (pl, _pl) = prefix_lens.device_ptr(s);
        check_aligned(
            OP,
            &[("out", o), ("q", qp), ("k_cache", kc), ("v_cache", vc)],
        )?;
        let q_stride = q_stride as i64;
        let (max_pages, page_size) = (kv.max_pages as i32, kv.page_size as i32);
        let (nh, nkv) = (shape.num_heads as i32, shape.num_kv_heads as i32);
        let scale_log2 = softmax_scale(shape.head_dim) * std::f32::consts::LOG2_E;
        let mut b = s.launch_builder(&self.k.attn_prefill[index]);
        b.arg(&o).arg(&qp).arg(&q_stride).arg(&tokens_i);
        b.arg(&kc).arg(&vc).arg(&num_pages).arg(&pt).arg(&max_pages);
        b.arg(&cu)
            .arg(&pl)
            .arg(&page_size)
            .arg(&nh)
            .arg(&nkv)
            .arg(&scale_log2);
        unsafe {
            b.launch(LaunchConfig {
                grid_dim: (row_tiles as u32, seqs as u32, shape.num_kv_heads as u32),
                block_dim: (PREFILL_THREADS, 1, 1),
                shared_mem_bytes: prefill_smem(shape.head_dim) as u32,
            })
        }?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_blocks_are_whole_warps() {
        // Qwen2.5-0.5B (group 7, d64), Llama-3.1-8B (4, d128), SmolLM2 (3, d64), MHA, large groups.
        for (d, g, want) in [
            (64, 7, (8, 7, 4)),
            (128, 4, (16, 4, 2)),
            (64, 3, (8, 3, 8)),
            (128, 1, (16, 1, 4)),
            (64, 1, (8, 1, 8)),
            (64, 16, (8, 16, 1)),
        ] {
            let (block, smem) = decode_geometry(d, g).unwrap();
            assert_eq!(block, want, "d{d} g{g}");
            assert_eq!((block.0 * block.1 * block.2) % 32, 0);
            assert!(smem <= 48 * 1024, "d{d} g{g}: {smem} bytes");
        }
        assert!(decode_geometry(128, 64).is_some());
        assert!(decode_geometry(128, 65).is_none());
    }

    #[test]
    fn tensor_core_decode_smem() {
        // d128: Q tile 4 KiB + 4 warps x 3 stages x (K + V) 16 x 128 bf16 = 100 KiB, so two blocks fit an
        // H100 SM (227 KiB); the merge buffers (f32) fit in the same space.
        assert_eq!(decode_tc_smem(128), 100 * 1024);
        assert_eq!(decode_tc_smem(64), 50 * 1024);
        for d in HEAD_DIMS {
            assert!(2 * decode_tc_smem(d) <= 227 * 1024);
            assert!(decode_tc_smem(d) >= DECODE_TC_WARPS * 16 * (d + 2) * 4);
        }
    }

    #[test]
    fn split_heuristic() {
        // Small batches split (up to the context's chunk count), large ones do not.
        assert_eq!(decode_splits(1, 2, 1024, 132), 8);
        assert_eq!(decode_splits(1, 8, 100_000, 132), 64);
        assert_eq!(decode_splits(256, 8, 1024, 132), 1);
        assert_eq!(decode_splits(64, 2, 1024, 132), 5);
        assert_eq!(decode_splits(3, 2, 10, 132), 1);
        assert_eq!(decode_splits(0, 2, 0, 132), 1);
    }
}
