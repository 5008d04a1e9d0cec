//! Randomized test of the page pool + radix cache contract: 100,000 operations per page size over the
//! vocabulary {0, 1} (so prefixes are shared as much as possible), with a pool small enough that eviction
//! and failed allocations are common. The test keeps what each page "holds" (the token ids written into
//! its slots, standing in for their K/V) and checks after every operation that
//! - every page is exactly once in the free list, the cache, or one sequence's private tail;
//! - every page a sequence reads holds that sequence's tokens at those positions, shared or not;
//! - whatever `match_prefix` returns for a random query holds exactly the query's tokens.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::memory::{KvMemory, PageTable};

struct Seq {
    tokens: Vec<u32>,
    table: PageTable,
}

struct World {
    mem: KvMemory,
    /// Tokens written into each page's slots (None: never written since it was last handed out).
    content: Vec<Vec<Option<u32>>>,
    seqs: Vec<Seq>,
    ps: usize,
}

impl World {
    fn write(&mut self, seq: usize, from: usize) {
        let s = &self.seqs[seq];
        for pos in from..s.tokens.len() {
            let page = s.table.ids[pos / self.ps] as usize;
            self.content[page][pos % self.ps] = Some(s.tokens[pos]);
        }
    }

    /// A freshly allocated private page must not be trusted to hold anything.
    fn forget_private(&mut self, seq: usize, from_page: usize) {
        for &p in &self.seqs[seq].table.ids[from_page..] {
            self.content[p as usize] = vec![None; self.ps];
        }
    }

    fn pages_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.ps)
    }

    fn start(&mut self, rng: &mut StdRng) {
        let len = rng.random_range(1..24);
        let tokens: Vec<u32> = (0..len).map(|_| rng.random_range(0..2)).collect();
        let mut table = PageTable::default();
        // As the scheduler does: the last token is always computed.
        let matched = self.mem.attach_prefix(&mut table, &tokens[..len - 1]);
        assert_eq!(matched, table.shared * self.ps);
        let need = self.pages_for(len) - table.shared;
        self.seqs.push(Seq { tokens, table });
        let i = self.seqs.len() - 1;
        self.check_seq(i, matched);
        let shared = self.seqs[i].table.shared;
        if !self.mem.grow(&mut self.seqs[i].table, need) {
            let mut s = self.seqs.pop().unwrap();
            self.mem.release(&mut s.table, None);
            return;
        }
        self.forget_private(i, shared);
        self.write(i, matched);
    }

    fn extend(&mut self, i: usize, rng: &mut StdRng) {
        let old = self.seqs[i].tokens.len();
        let more = rng.random_range(1..6);
        let have = self.seqs[i].table.ids.len();
        let need = self.pages_for(old + more).saturating_sub(have);
        if !self.mem.grow(&mut self.seqs[i].table, need) {
            // Out of room: retracted (its computed tokens go to the cache).
            let mut s = self.seqs.swap_remove(i);
            self.mem.release(&mut s.table, Some(&s.tokens));
            return;
        }
        self.forget_private(i, have);
        self.seqs[i].tokens.extend((0..more).map(|_| rng.random_range(0..2u32)));
        self.write(i, old);
    }

    fn check_seq(&self, i: usize, upto: usize) {
        let s = &self.seqs[i];
        for pos in 0..upto {
            let page = s.table.ids[pos / self.ps] as usize;
            assert_eq!(self.content[page][pos % self.ps], Some(s.tokens[pos]), "seq {i} pos {pos}");
        }
    }

    fn check(&self, rng: &mut StdRng) {
        self.mem.check_integrity(self.seqs.iter().map(|s| &s.table)).unwrap();
        for i in 0..self.seqs.len() {
            self.check_seq(i, self.seqs[i].tokens.len());
        }
        let q: Vec<u32> = (0..rng.random_range(0..30)).map(|_| rng.random_range(0..2)).collect();
        let m = self.mem.cache.as_ref().unwrap().match_prefix(&q);
        for (k, &p) in m.pages.iter().enumerate() {
            for j in 0..self.ps {
                assert_eq!(self.content[p as usize][j], Some(q[k * self.ps + j]), "cached page {p}");
            }
        }
    }
}

fn run(ps: usize, total_pages: usize, ops: usize, seed: u64) -> (usize, usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut w = World {
        mem: KvMemory::new(total_pages, ps, true),
        content: vec![vec![None; ps]; total_pages],
        seqs: Vec::new(),
        ps,
    };
    let (mut hits, mut evictions) = (0, 0);
    for _ in 0..ops {
        let n = w.seqs.len();
        match rng.random_range(0..100) {
            0..30 if n < 8 => w.start(&mut rng),
            30..60 if n > 0 => w.extend(rng.random_range(0..n), &mut rng),
            60..70 if n > 0 => {
                let i = rng.random_range(0..n);
                let s = &mut w.seqs[i];
                let before = s.table.shared;
                w.mem.cache_prefix(&mut s.table, &s.tokens);
                hits += usize::from(s.table.shared > before);
            }
            70..85 if n > 0 => {
                let mut s = w.seqs.swap_remove(rng.random_range(0..n));
                w.mem.release(&mut s.table, Some(&s.tokens));
            }
            85..92 if n > 0 => {
                // Aborted or failed: nothing cached.
                let mut s = w.seqs.swap_remove(rng.random_range(0..n));
                w.mem.release(&mut s.table, None);
            }
            92..99 => {
                let cache = w.mem.cache.as_mut().unwrap();
                let mut freed = cache.evict(rng.random_range(1..4));
                evictions += freed.len();
                w.mem.pool.release(&mut freed);
            }
            99 => {
                w.mem.flush();
            }
            _ => {}
        }
        w.check(&mut rng);
    }
    for mut s in w.seqs.drain(..) {
        w.mem.release(&mut s.table, Some(&s.tokens));
    }
    w.mem.flush();
    assert_eq!(w.mem.pool.free_pages(), total_pages, "pool not entirely free at the end");
    (hits, evictions)
}

#[test]
fn hundred_thousand_ops_page_size_1() {
    let (hits, evictions) = run(1, 48, 100_000, 1);
    // The operations must really exercise sharing and eviction.
    assert!(hits > 1000 && evictions > 1000, "hits {hits} evictions {evictions}");
}

#[test]
fn hundred_thousand_ops_page_size_4() {
    let (hits, evictions) = run(4, 20, 100_000, 2);
    assert!(hits > 1000 && evictions > 1000, "hits {hits} evictions {evictions}");
}
