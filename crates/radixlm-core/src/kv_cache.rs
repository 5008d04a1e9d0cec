//! KV storage: per layer, one K and one V buffer of `num_pages * page_size` token slots, each slot holding
//! `kv_heads * head_dim` f32 values. A sequence's page table maps its position p to slot
//! `table[p / page_size] * page_size + p % page_size`. Page ids are handed out by `PagePool`; this type
//! only holds the numbers.
//!
//! ```text
//!   page table [7, 2]      page_size 4
//!   positions  0 1 2 3 | 4 5
//!   slots     28..32   |  8 9
//! ```

pub struct LayerKv {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
}

pub struct KvCache {
    pub page_size: usize,
    pub num_pages: usize,
    /// Values per token slot: kv_heads * head_dim.
    pub slot_width: usize,
    pub layers: Vec<LayerKv>,
}

impl KvCache {
    /// Zeroed buffers come from the allocator's zero pages, so untouched capacity costs no resident memory.
    pub fn new(num_layers: usize, num_pages: usize, page_size: usize, slot_width: usize) -> Self {
        let len = num_pages * page_size * slot_width;
        let layers = (0..num_layers)
            .map(|_| LayerKv { k: vec![0.0; len], v: vec![0.0; len] })
            .collect();
        KvCache { page_size, num_pages, slot_width, layers }
    }

    pub fn bytes_per_token(num_layers: usize, slot_width: usize) -> usize {
        num_layers * slot_width * 2 * std::mem::size_of::<f32>()
    }
}

/// Slot of position `pos` for a sequence with page table `table`.
#[inline]
pub fn slot(table: &[u32], page_size: usize, pos: usize) -> usize {
    table[pos / page_size] as usize * page_size + pos % page_size
}

/// Free list of page ids. Who holds the others is `memory::KvMemory`'s business.
pub struct PagePool {
    free: Vec<u32>,
    total: usize,
}

impl PagePool {
    pub fn new(total: usize) -> Self {
        // Reversed so the first pages handed out are 0, 1, 2, ... (easier to read in tests).
        PagePool { free: (0..total as u32).rev().collect(), total }
    }

    /// Appends `n` free pages to `out` (no allocation besides `out`'s growth); false if there are fewer.
    pub fn alloc_into(&mut self, n: usize, out: &mut Vec<u32>) -> bool {
        if n > self.free.len() {
            return false;
        }
        let at = self.free.len() - n;
        out.extend(self.free.drain(at..).rev());
        true
    }

    pub fn alloc(&mut self, n: usize) -> Option<Vec<u32>> {
        if n > self.free.len() {
            return None;
        }
        let at = self.free.len() - n;
        let mut pages = self.free.split_off(at);
        pages.reverse();
        Some(pages)
    }

    pub fn release(&mut self, pages: &mut Vec<u32>) {
        self.free.extend(pages.drain(..).rev());
    }

    pub fn free_pages(&self) -> usize {
        self.free.len()
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn free_list(&self) -> &[u32] {
        &self.free
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_hands_out_and_takes_back_exact_pages() {
        let mut pool = PagePool::new(4);
        let mut a = pool.alloc(3).unwrap();
        assert_eq!(a, vec![0, 1, 2]);
        assert!(pool.alloc(2).is_none());
        pool.release(&mut a);
        assert!(a.is_empty());
        assert_eq!(pool.free_pages(), 4);
        assert_eq!(pool.alloc(4).unwrap().len(), 4);
    }

    #[test]
    fn slot_follows_page_table() {
        let table = [7, 2];
        assert_eq!(slot(&table, 4, 0), 28);
        assert_eq!(slot(&table, 4, 3), 31);
        assert_eq!(slot(&table, 4, 4), 8);
        assert_eq!(slot(&table, 4, 5), 9);
    }
}
