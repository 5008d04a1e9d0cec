//! Memory: the page pool plus the prefix cache, and the page table of each sequence. Every page is in
//! exactly one place: the free list, the radix tree (shared, possibly locked by sequences), or the private
//! tail of one sequence's page table.
//!
//! ```text
//!   page table  [ p7 p3 | p12 p13 p2 ]
//!                shared   private        shared pages belong to the tree; the sequence locks their node
//! ```
//! A sequence's life: `attach_prefix` (match + lock), `grow` (allocate, evicting cached leaves when the
//! free list is short), `cache_prefix` after a prefill chunk (hand computed pages to the tree so others can
//! share them early), `release` when it finishes, aborts or is retracted.

use crate::kv_cache::PagePool;
use crate::radix::{NodeId, RadixCache};

#[derive(Default, Debug)]
pub struct PageTable {
    /// Page ids covering the sequence's positions, in order.
    pub ids: Vec<u32>,
    /// Leading pages owned by the prefix cache.
    pub shared: usize,
    /// Locked node of the prefix cache when `shared > 0` or a match was attached.
    pub lock: Option<NodeId>,
}

pub struct KvMemory {
    pub pool: PagePool,
    /// None when `disableRadixCache` is set: pages go straight back to the pool.
    pub cache: Option<RadixCache>,
    page_size: usize,
    /// Cached pages evicted to make room, since start.
    pub evicted: u64,
}

impl KvMemory {
    pub fn new(total_pages: usize, page_size: usize, radix: bool) -> Self {
        KvMemory { pool: PagePool::new(total_pages), cache: radix.then(|| RadixCache::new(page_size)), page_size, evicted: 0 }
    }

    pub fn page_size(&self) -> usize {
        self.page_size
    }

    pub fn total_pages(&self) -> usize {
        self.pool.total()
    }

    pub fn cached_pages(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.cached_pages())
    }

    /// Pages that an allocation could get now: free plus evictable.
    pub fn available(&self) -> usize {
        self.pool.free_pages() + self.cache.as_ref().map_or(0, |c| c.evictable_pages())
    }

    /// Length in tokens of the cached prefix of `tokens` (whole pages), without locking anything.
    pub fn peek_prefix(&self, tokens: &[u32]) -> usize {
        self.cache.as_ref().map_or(0, |c| c.match_prefix(tokens).pages.len() * self.page_size)
    }

    /// Starts an empty table with the cached prefix of `tokens`, locked. Returns the tokens matched.
    pub fn attach_prefix(&mut self, table: &mut PageTable, tokens: &[u32]) -> usize {
        debug_assert!(table.ids.is_empty() && table.lock.is_none());
        let Some(cache) = self.cache.as_mut() else { return 0 };
        let m = cache.match_prefix(tokens);
        cache.lock(m.node);
        table.shared = m.pages.len();
        table.ids = m.pages;
        table.lock = Some(m.node);
        table.shared * self.page_size
    }

    /// Adds `n` pages to the table, evicting cached leaves if the free list is short. False (and no
    /// change) when not even eviction finds enough.
    pub fn grow(&mut self, table: &mut PageTable, n: usize) -> bool {
        if n > self.available() {
            return false;
        }
        let short = n.saturating_sub(self.pool.free_pages());
        if let (Some(cache), true) = (self.cache.as_mut(), short > 0) {
            let mut freed = cache.evict(short);
            self.evicted += freed.len() as u64;
            self.pool.release(&mut freed);
        }
        self.pool.alloc_into(n, &mut table.ids)
    }

    /// Hands the whole pages of `tokens` (the ones with KV) to the cache while the sequence keeps
    /// running: its table then points at the cache's pages, locked, and its duplicate pages are freed.
    pub fn cache_prefix(&mut self, table: &mut PageTable, tokens: &[u32]) {
        let ps = self.page_size;
        let Some(cache) = self.cache.as_mut() else { return };
        let full = (tokens.len() / ps).min(table.ids.len());
        if full <= table.shared {
            return;
        }
        let had = cache.insert(&tokens[..full * ps], &table.ids[..full]) / ps;
        // Pages computed by this sequence for positions someone else cached first: use theirs.
        let m = cache.match_prefix(&tokens[..full * ps]);
        debug_assert_eq!(m.pages.len(), full);
        let mut dup: Vec<u32> = table.ids[table.shared..had.max(table.shared)].to_vec();
        table.ids[..full].copy_from_slice(&m.pages);
        cache.lock(m.node);
        if let Some(old) = table.lock.replace(m.node) {
            cache.unlock(old);
        }
        table.shared = full;
        self.pool.release(&mut dup);
    }

    /// Ends a sequence's use of its pages. With `kv_tokens` (the tokens whose KV the pages hold), their
    /// whole pages go to the cache; everything else returns to the free list.
    pub fn release(&mut self, table: &mut PageTable, kv_tokens: Option<&[u32]>) {
        let ps = self.page_size;
        let mut private = match (self.cache.as_mut(), kv_tokens) {
            (Some(cache), Some(tokens)) => {
                let full = (tokens.len() / ps).min(table.ids.len());
                let had = (cache.insert(&tokens[..full * ps], &table.ids[..full]) / ps).max(table.shared);
                // [shared, had): duplicates of cached pages; [had, full): now the cache's; [full..): partial.
                let mut out = table.ids[table.shared..had].to_vec();
                out.extend_from_slice(&table.ids[full.max(had)..]);
                out
            }
            _ => table.ids[table.shared..].to_vec(),
        };
        if let (Some(cache), Some(node)) = (self.cache.as_mut(), table.lock.take()) {
            cache.unlock(node);
        }
        self.pool.release(&mut private);
        table.ids.clear();
        table.shared = 0;
    }

    /// Drops every unlocked cached page (`flushCache`). Returns how many pages were freed.
    pub fn flush(&mut self) -> usize {
        let Some(cache) = self.cache.as_mut() else { return 0 };
        let mut freed = cache.evict_all();
        let n = freed.len();
        self.pool.release(&mut freed);
        n
    }

    /// Every page is exactly once in the free list, the cache, or one table's private tail; every
    /// table's shared head is what the cache holds for it.
    pub fn check_integrity<'a>(&self, tables: impl Iterator<Item = &'a PageTable>) -> Result<(), String> {
        let total = self.pool.total();
        let mut seen = vec![0u8; total];
        let mut mark = |p: u32, what: &str| -> Result<(), String> {
            let i = p as usize;
            if i >= total {
                return Err(format!("page {p} out of range ({what})"));
            }
            seen[i] += 1;
            if seen[i] > 1 {
                return Err(format!("page {p} held twice (last by {what})"));
            }
            Ok(())
        };
        for p in self.pool.free_list() {
            mark(*p, "free list")?;
        }
        if let Some(cache) = &self.cache {
            for p in cache.check_integrity()? {
                mark(p, "cache")?;
            }
        }
        for t in tables {
            if t.shared > t.ids.len() || (t.shared > 0 && t.lock.is_none()) {
                return Err(format!("table with {} shared of {} pages, lock {:?}", t.shared, t.ids.len(), t.lock));
            }
            for &p in &t.ids[t.shared..] {
                mark(p, "a sequence")?;
            }
        }
        match seen.iter().position(|&s| s == 0) {
            Some(p) => Err(format!("page {p} leaked: not free, cached or held")),
            None => Ok(()),
        }
    }
}
