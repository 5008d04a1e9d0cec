//! The paged KV cache as the kernels see it.
//!
//! One layer's cache is two bf16 buffers, `k_cache` and `v_cache`, each
//! `[num_pages, page_size, num_kv_heads, head_dim]` = `[num_slots, num_kv_heads, head_dim]`
//! ("NHD": vLLM's flash layout, FlashAttention-3's paged KV, FlashInfer's NHD). A token lives in one
//! slot, `slot = page * page_size + offset`, so kernels that store (rope.cu) address it with a flat
//! slot index whatever the page size, and kernels that read (paged attention) walk a request's page
//! table and read, per kv head, `head_dim` contiguous bf16 per token.
//!
//! ```text
//!  request pages [7, 2, 9], page_size 4, 10 tokens:
//!  pos:   0  1  2  3 | 4  5  6  7 | 8  9
//!  slot: 28 29 30 31 | 8  9 10 11 |36 37        (slot = page_table[pos / 4] * 4 + pos % 4)
//! ```
//! Slot -1 (or any slot outside the cache) means "store nothing": the padding rows of a CUDA-graph
//! batch use it.

/// Attention geometry of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl AttnShape {
    /// Width of one fused QKV row: q heads, then k heads, then v heads.
    pub fn qkv_width(&self) -> usize {
        (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
    }
    /// Width of one cache slot: all kv heads of one token.
    pub fn kv_width(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
}

/// One layer's paged KV cache plus the page tables of a batch, as the attention kernels read it.
/// `C` is `[bf16]` / `[i32]` for the CPU twins, device buffers for the GPU.
///
/// `page_table` is `[sequences, max_pages]` int32, row-major: row `b` lists sequence `b`'s pages in
/// order; entries past the pages a sequence uses are never read (fill them with anything, e.g. 0).
/// A fixed `max_pages` (the longest context a CUDA-graph bucket allows) keeps every buffer's size
/// independent of the step's lengths.
#[derive(Debug)]
pub struct PagedKv<'a, C: ?Sized, I: ?Sized> {
    /// `[num_pages, page_size, num_kv_heads, head_dim]` bf16 each.
    pub k_cache: &'a C,
    pub v_cache: &'a C,
    pub page_size: usize,
    pub page_table: &'a I,
    pub max_pages: usize,
}

impl<C: ?Sized, I: ?Sized> Clone for PagedKv<'_, C, I> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<C: ?Sized, I: ?Sized> Copy for PagedKv<'_, C, I> {}

/// The slot of the token at `pos` of a request whose pages are `page_table`.
/// Panics if `pos` is past the request's pages (a scheduler bug, not an input error).
pub fn slot(page_table: &[u32], page_size: usize, pos: usize) -> i32 {
    let page = page_table[pos / page_size] as usize;
    i32::try_from(page * page_size + pos % page_size).expect("slot index fits in i32")
}

/// Slots of the tokens at `positions` of one request.
pub fn slot_mapping(
    page_table: &[u32],
    page_size: usize,
    positions: impl IntoIterator<Item = usize>,
) -> Vec<i32> {
    positions
        .into_iter()
        .map(|p| slot(page_table, page_size, p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_page_table() {
        assert_eq!(
            slot_mapping(&[7, 2, 9], 4, 0..10),
            [28, 29, 30, 31, 8, 9, 10, 11, 36, 37]
        );
        assert_eq!(slot_mapping(&[5, 0], 1, [1, 0]), [0, 5]);
    }

    #[test]
    fn widths() {
        let s = AttnShape {
            num_heads: 14,
            num_kv_heads: 2,
            head_dim: 64,
        };
        assert_eq!((s.qkv_width(), s.kv_width()), (1152, 128));
    }
}
