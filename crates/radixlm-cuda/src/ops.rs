//! Kernel launchers: check shapes on the host (an [`Error::Shape`], never an out-of-bounds launch),
//! pick the launch geometry, launch on the device's stream. Geometry rules, shared by all:
//! one block per row/token in grid.x (up to 2^31 - 1 rows), a multiple of 32 threads, 8-wide vector
//! access when every row length is a multiple of 8 and every pointer 16-byte aligned.
//!
//! Every `unsafe { launch }` below is sound by construction: its argument list mirrors the kernel's
//! signature in kernels/*.cu (pointers as u64, `int` as i32, `int64_t` as i64, `float` as f32), and
//! the checks before it bound every index the kernel computes (ids, positions and slots, which live
//! on the device, are bounded by the kernels themselves).

use crate::device::Kernels;
use crate::layout::AttnShape;
use crate::rope::{Rope, RopeFreqs, RopeStyle};
use crate::{Device, Error, Result};
use cudarc::driver::{DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};
use half::bf16;

/// Threads for `work` items per block: a multiple of 32 in [32, max].
pub(crate) fn threads(work: usize, max: usize) -> u32 {
    (work.div_ceil(32) * 32).clamp(32, max) as u32
}

pub(crate) fn to_i32(op: &'static str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::Shape {
        op,
        msg: format!("{what} = {v} does not fit in i32"),
    })
}

fn vec8(len: usize, ptrs: &[u64]) -> i32 {
    (len.is_multiple_of(8) && ptrs.iter().all(|p| p % 16 == 0)) as i32
}

pub(crate) fn cfg(grid: (u32, u32), block: u32, smem: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid.0, grid.1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: smem,
    }
}

impl Device {
    /// `out[t] = table[ids[t]]` (kernels/embedding.cu). `table`: [vocab, hidden], `out`: [ids, hidden].
    pub fn embedding(
        &self,
        out: &mut impl DevicePtrMut<bf16>,
        table: &impl DevicePtr<bf16>,
        ids: &impl DevicePtr<i32>,
        hidden: usize,
    ) -> Result<()> {
        self.embedding_impl(out, table, ids, (0, 0), hidden)
    }

    /// `embedding`, where an id `i32::MIN + j` (j < `future.len()`) stands for the id `future[j]` on
    /// the device (a token the previous step drew, for overlap scheduling).
    pub fn embedding_resolving(
        &self,
        out: &mut impl DevicePtrMut<bf16>,
        table: &impl DevicePtr<bf16>,
        ids: &impl DevicePtr<i32>,
        future: &impl DevicePtr<i32>,
        hidden: usize,
    ) -> Result<()> {
        let (f, _f) = future.device_ptr(&self.stream);
        self.embedding_impl(out, table, ids, (f, to_i32("embedding", "future", future.len())?), hidden)
    }

    fn embedding_impl(
        &self,
        out: &mut impl DevicePtrMut<bf16>,
        table: &impl DevicePtr<bf16>,
        ids: &impl DevicePtr<i32>,
        future: (u64, i32),
        hidden: usize,
    ) -> Result<()> {
        const OP: &str = "embedding";
        let tokens = ids.len();
        ensure!(
            hidden > 0 && table.len() % hidden == 0,
            OP,
            "table of {} is not [vocab, {hidden}]",
            table.len()
        );
        ensure!(
            out.len() == tokens * hidden,
            OP,
            "out has {}, want {tokens} x {hidden}",
            out.len()
        );
        if tokens == 0 {
            return Ok(());
        }
        let (hidden_i, vocab) = (
            to_i32(OP, "hidden", hidden)?,
            to_i32(OP, "vocab", table.len() / hidden)?,
        );
        let s = &self.stream;
        let (o, _o) = out.device_ptr_mut(s);
        let (t, _t) = table.device_ptr(s);
        let (i, _i) = ids.device_ptr(s);
        let vec = vec8(hidden, &[o, t]);
        let block = threads(if vec == 1 { hidden / 8 } else { hidden }, 256);
        let mut b = s.launch_builder(&self.k.embedding);
        b.arg(&o)
            .arg(&t)
            .arg(&i)
            .arg(&future.0)
            .arg(&future.1)
            .arg(&hidden_i)
            .arg(&vocab)
            .arg(&vec);
        unsafe { b.launch(cfg((to_i32(OP, "tokens", tokens)? as u32, 1), block, 0)) }?;
        Ok(())
    }

    /// `out = x * rstd(x) * w` per row of `hidden = w.len()` (kernels/rmsnorm.cu).
    pub fn rmsnorm(
        &self,
        out: &mut impl DevicePtrMut<bf16>,
        x: &impl DevicePtr<bf16>,
        w: &impl DevicePtr<bf16>,
        eps: f32,
    ) -> Result<()> {
        const OP: &str = "rmsnorm";
        let (rows, hidden) = norm_rows(OP, x.len(), w.len())?;
        ensure!(
            out.len() == x.len(),
            OP,
            "out has {}, x has {}",
            out.len(),
            x.len()
        );
        if rows == 0 {
            return Ok(());
        }
        let s = &self.stream;
        let (o, _o) = out.device_ptr_mut(s);
        let (xp, _x) = x.device_ptr(s);
        let (wp, _w) = w.device_ptr(s);
        let vec = vec8(hidden, &[o, xp, wp]);
        let block = threads(if vec == 1 { hidden / 8 } else { hidden }, 1024);
        let h = hidden as i32;
        let mut b = s.launch_builder(&self.k.rmsnorm);
        b.arg(&o).arg(&xp).arg(&wp).arg(&eps).arg(&h).arg(&vec);
        unsafe { b.launch(cfg((to_i32(OP, "rows", rows)? as u32, 1), block, 0)) }?;
        Ok(())
    }

    /// In place: `residual = x + residual`, then `x = residual * rstd(residual) * w`
    /// (kernels/rmsnorm.cu; SGLang's fused_add_rmsnorm).
    pub fn fused_add_rmsnorm(
        &self,
        x: &mut impl DevicePtrMut<bf16>,
        residual: &mut impl DevicePtrMut<bf16>,
        w: &impl DevicePtr<bf16>,
        eps: f32,
    ) -> Result<()> {
        const OP: &str = "fused_add_rmsnorm";
        let (rows, hidden) = norm_rows(OP, x.len(), w.len())?;
        ensure!(
            residual.len() == x.len(),
            OP,
            "residual has {}, x has {}",
            residual.len(),
            x.len()
        );
        if rows == 0 {
            return Ok(());
        }
        let s = &self.stream;
        let (xp, _x) = x.device_ptr_mut(s);
        let (r, _r) = residual.device_ptr_mut(s);
        let (wp, _w) = w.device_ptr(s);
        let vec = vec8(hidden, &[xp, r, wp]);
        let block = threads(if vec == 1 { hidden / 8 } else { hidden }, 1024);
        let h = hidden as i32;
        let mut b = s.launch_builder(&self.k.fused_add_rmsnorm);
        b.arg(&xp).arg(&r).arg(&wp).arg(&eps).arg(&h).arg(&vec);
        unsafe { b.launch(cfg((to_i32(OP, "rows", rows)? as u32, 1), block, 0)) }?;
        Ok(())
    }

    /// `out[t, i] = silu(gate_up[t, i]) * gate_up[t, inter + i]` (kernels/activation.cu).
    /// `gate_up`: [tokens, 2 * inter], `out`: [tokens, inter].
    pub fn silu_and_mul(
        &self,
        out: &mut impl DevicePtrMut<bf16>,
        gate_up: &impl DevicePtr<bf16>,
        inter: usize,
    ) -> Result<()> {
        const OP: &str = "silu_and_mul";
        ensure!(
            inter > 0 && out.len() % inter == 0,
            OP,
            "out of {} is not [tokens, {inter}]",
            out.len()
        );
        ensure!(
            gate_up.len() == 2 * out.len(),
            OP,
            "gate_up has {}, want 2 x {}",
            gate_up.len(),
            out.len()
        );
        let tokens = out.len() / inter;
        if tokens == 0 {
            return Ok(());
        }
        let s = &self.stream;
        let (o, _o) = out.device_ptr_mut(s);
        let (g, _g) = gate_up.device_ptr(s);
        let vec = vec8(inter, &[o, g]);
        let work = if vec == 1 { inter / 8 } else { inter };
        let block = threads(work, 256);
        let chunks = work.div_ceil(block as usize);
        ensure!(chunks <= 65535, OP, "inter = {inter} is too wide");
        let inter_i = to_i32(OP, "inter", inter)?;
        let mut b = s.launch_builder(&self.k.silu_and_mul);
        b.arg(&o).arg(&g).arg(&inter_i).arg(&vec);
        unsafe {
            b.launch(cfg(
                (to_i32(OP, "tokens", tokens)? as u32, chunks as u32),
                block,
                0,
            ))
        }?;
        Ok(())
    }

    /// Rotates q and k of every token of `qkv` in place and stores k and v at the token's slot of
    /// one layer's paged cache (kernels/rope.cu, layout in [`crate::layout`]).
    /// `qkv`: [tokens, shape.qkv_width()], `positions`/`slots`: [tokens],
    /// `k_cache`/`v_cache`: [num_slots, shape.kv_width()].
    #[allow(clippy::too_many_arguments)]
    pub fn rope_kv_write<F: DevicePtr<f32>>(
        &self,
        qkv: &mut impl DevicePtrMut<bf16>,
        positions: &impl DevicePtr<i32>,
        slots: &impl DevicePtr<i32>,
        k_cache: &mut impl DevicePtrMut<bf16>,
        v_cache: &mut impl DevicePtrMut<bf16>,
        shape: AttnShape,
        rope: &Rope<&F>,
    ) -> Result<()> {
        const OP: &str = "rope_kv_write";
        let AttnShape {
            num_heads,
            num_kv_heads,
            head_dim,
        } = shape;
        ensure!(
            num_heads > 0 && num_kv_heads > 0 && head_dim > 0,
            OP,
            "empty shape {shape:?}"
        );
        let rot = rope.rot_dim;
        ensure!(
            rot >= 2 && rot.is_multiple_of(2) && rot <= head_dim,
            OP,
            "rot_dim {rot} must be even, in [2, {head_dim}]"
        );
        let (width, kv) = (shape.qkv_width(), shape.kv_width());
        to_i32(OP, "qkv width", width)?;
        ensure!(
            qkv.len() % width == 0,
            OP,
            "qkv of {} is not [tokens, {width}]",
            qkv.len()
        );
        let tokens = qkv.len() / width;
        ensure!(
            positions.len() == tokens,
            OP,
            "{} positions for {tokens} tokens",
            positions.len()
        );
        ensure!(
            slots.len() == tokens,
            OP,
            "{} slots for {tokens} tokens",
            slots.len()
        );
        ensure!(
            k_cache.len() % kv == 0,
            OP,
            "k_cache of {} is not [slots, {kv}]",
            k_cache.len()
        );
        ensure!(
            v_cache.len() == k_cache.len(),
            OP,
            "v_cache has {}, k_cache {}",
            v_cache.len(),
            k_cache.len()
        );
        let (freqs, max_pos, table) = match rope.freqs {
            RopeFreqs::CosSin { table, max_pos } => {
                ensure!(
                    max_pos > 0 && table.len() == max_pos * rot,
                    OP,
                    "cos/sin table of {} is not [{max_pos}, {rot}]",
                    table.len()
                );
                (table, to_i32(OP, "max_pos", max_pos)?, true)
            }
            RopeFreqs::InvFreq(f) => {
                ensure!(
                    f.len() == rot / 2,
                    OP,
                    "inv_freq has {}, want {}",
                    f.len(),
                    rot / 2
                );
                (f, 0, false)
            }
        };
        if tokens == 0 {
            return Ok(());
        }
        let func = &self.k.rope_kv[Kernels::rope_index(rope.style == RopeStyle::Neox, table)];
        let num_slots = (k_cache.len() / kv) as i64;
        let (nh, nkv, hd, rd) = (
            num_heads as i32,
            num_kv_heads as i32,
            head_dim as i32,
            rot as i32,
        );
        let s = &self.stream;
        let (q, _q) = qkv.device_ptr_mut(s);
        let (p, _p) = positions.device_ptr(s);
        let (sl, _sl) = slots.device_ptr(s);
        let (fr, _fr) = freqs.device_ptr(s);
        let (kc, _kc) = k_cache.device_ptr_mut(s);
        let (vc, _vc) = v_cache.device_ptr_mut(s);
        let block = threads((num_heads + num_kv_heads) * rot / 2, 256);
        let mut b = s.launch_builder(func);
        b.arg(&q)
            .arg(&p)
            .arg(&sl)
            .arg(&fr)
            .arg(&max_pos)
            .arg(&kc)
            .arg(&vc)
            .arg(&num_slots);
        b.arg(&nh).arg(&nkv).arg(&hd).arg(&rd);
        let smem = (rot * std::mem::size_of::<f32>()) as u32;
        unsafe { b.launch(cfg((to_i32(OP, "tokens", tokens)? as u32, 1), block, smem)) }?;
        Ok(())
    }
}

/// (rows, hidden) of a norm input, or a shape error.
fn norm_rows(op: &'static str, x_len: usize, hidden: usize) -> Result<(usize, usize)> {
    ensure!(
        hidden > 0 && x_len.is_multiple_of(hidden),
        op,
        "x of {x_len} is not [rows, {hidden}]"
    );
    to_i32(op, "hidden", hidden)?;
    Ok((x_len / hidden, hidden))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry() {
        assert_eq!(threads(1, 256), 32);
        assert_eq!(threads(72, 1024), 96); // hidden 576, 8-wide
        assert_eq!(threads(4096, 1024), 1024);
        assert_eq!(vec8(576, &[0, 16, 32]), 1);
        assert_eq!(vec8(576, &[0, 2]), 0);
        assert_eq!(vec8(100, &[0]), 0);
    }

    #[test]
    fn norm_shapes() {
        assert_eq!(norm_rows("t", 896 * 3, 896).unwrap(), (3, 896));
        assert!(matches!(norm_rows("t", 10, 3), Err(Error::Shape { .. })));
        assert!(norm_rows("t", 0, 0).is_err());
    }
}
