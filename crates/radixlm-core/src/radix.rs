//! The prefix cache: a radix tree over token ids at page granularity. Every edge holds a whole number of
//! pages; a node owns the KV pages of the tokens on its edge. Requests lock the path they use (a lock on a
//! node counts for all its ancestors), and only unlocked leaves are evicted, least recently used first.
//!
//! ```text
//!   page_size 2          root
//!                      /      \
//!          [1 2 3 4] p7,p3    [5 6] p9            key tokens, page ids
//!            /        \
//!     [5 5] p1      [6 6 0 0] p4,p2
//! ```
//! Contract (as mini-sglang's cache): `match_prefix` never changes the tree; `lock`/`unlock` pin the
//! matched path; `insert` hands pages to the tree and says how much of the key was already there (the
//! caller frees its own copies of those pages); `evict` returns page ids to the caller's free list.
//! The tree never allocates pages itself.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

pub type NodeId = usize;
const ROOT: NodeId = 0;

struct Node {
    /// Tokens on the edge into this node: `pages.len() * page_size` of them.
    key: Vec<u32>,
    pages: Vec<u32>,
    parent: NodeId,
    /// Keyed by the first page of the child's key (two children never share a first page).
    children: HashMap<Box<[u32]>, NodeId>,
    /// Requests using this node or a descendant.
    lock: u32,
    last_use: u64,
}

pub struct PrefixMatch {
    /// Page ids of the matched prefix, in position order.
    pub pages: Vec<u32>,
    /// Deepest node on the matched path (the one to lock); the root when nothing matched.
    pub node: NodeId,
}

pub struct RadixCache {
    page_size: usize,
    /// Arena; `None` marks a free slot, reused through `free_slots`.
    nodes: Vec<Option<Node>>,
    free_slots: Vec<NodeId>,
    clock: u64,
    /// Pages in nodes nobody locks (can be evicted) and in locked nodes.
    evictable: usize,
    protected: usize,
}

impl RadixCache {
    pub fn new(page_size: usize) -> Self {
        assert!(page_size > 0);
        let root = Node { key: Vec::new(), pages: Vec::new(), parent: ROOT, children: HashMap::new(), lock: 0, last_use: 0 };
        RadixCache { page_size, nodes: vec![Some(root)], free_slots: Vec::new(), clock: 0, evictable: 0, protected: 0 }
    }

    pub fn root(&self) -> NodeId {
        ROOT
    }

    fn node(&self, id: NodeId) -> &Node {
        self.nodes[id].as_ref().expect("live node")
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes[id].as_mut().expect("live node")
    }

    pub fn evictable_pages(&self) -> usize {
        self.evictable
    }

    pub fn protected_pages(&self) -> usize {
        self.protected
    }

    /// Pages held by the tree.
    pub fn cached_pages(&self) -> usize {
        self.evictable + self.protected
    }

    /// Whole pages shared by the start of `a` and `b` (both page-aligned slices).
    fn common_pages(&self, a: &[u32], b: &[u32]) -> usize {
        let ps = self.page_size;
        a.chunks_exact(ps).zip(b.chunks_exact(ps)).take_while(|(x, y)| x == y).count()
    }

    /// Longest cached prefix of `key`, in whole pages. Does not change the tree.
    pub fn match_prefix(&self, key: &[u32]) -> PrefixMatch {
        let ps = self.page_size;
        let key = &key[..key.len() / ps * ps];
        let mut pages = Vec::new();
        let (mut node, mut pos) = (ROOT, 0);
        while pos < key.len() {
            let Some(&child) = self.node(node).children.get(&key[pos..pos + ps]) else { break };
            let c = self.node(child);
            let n = self.common_pages(&c.key, &key[pos..]);
            pages.extend_from_slice(&c.pages[..n]);
            pos += n * ps;
            node = child;
            if n < c.pages.len() {
                break;
            }
        }
        PrefixMatch { pages, node }
    }

    /// Pins `node` and its ancestors against eviction.
    pub fn lock(&mut self, node: NodeId) {
        self.clock += 1;
        let now = self.clock;
        let mut id = node;
        while id != ROOT {
            let n = self.node_mut(id);
            n.lock += 1;
            n.last_use = now;
            let (pages, first, parent) = (n.pages.len(), n.lock == 1, n.parent);
            if first {
                self.evictable -= pages;
                self.protected += pages;
            }
            id = parent;
        }
    }

    pub fn unlock(&mut self, node: NodeId) {
        self.clock += 1;
        let now = self.clock;
        let mut id = node;
        while id != ROOT {
            let n = self.node_mut(id);
            assert!(n.lock > 0, "unlock of an unlocked node");
            n.lock -= 1;
            n.last_use = now;
            let (pages, last, parent) = (n.pages.len(), n.lock == 0, n.parent);
            if last {
                self.protected -= pages;
                self.evictable += pages;
            }
            id = parent;
        }
    }

    fn alloc_node(&mut self, n: Node) -> NodeId {
        match self.free_slots.pop() {
            Some(id) => {
                self.nodes[id] = Some(n);
                id
            }
            None => {
                self.nodes.push(Some(n));
                self.nodes.len() - 1
            }
        }
    }

    /// Splits `id` after `n` pages: a new node takes the first `n` pages and becomes `id`'s parent. It
    /// inherits the lock count (every lock through `id` passes through it) and the LRU time.
    fn split(&mut self, id: NodeId, n: usize) -> NodeId {
        let ps = self.page_size;
        let (parent, lock, last_use, head_key, head_pages) = {
            let c = self.node_mut(id);
            let tail_key = c.key.split_off(n * ps);
            let tail_pages = c.pages.split_off(n);
            let head_key = std::mem::replace(&mut c.key, tail_key);
            let head_pages = std::mem::replace(&mut c.pages, tail_pages);
            (c.parent, c.lock, c.last_use, head_key, head_pages)
        };
        let first: Box<[u32]> = head_key[..ps].into();
        let child_first: Box<[u32]> = self.node(id).key[..ps].into();
        let mid = self.alloc_node(Node {
            key: head_key,
            pages: head_pages,
            parent,
            children: HashMap::from([(child_first, id)]),
            lock,
            last_use,
        });
        self.node_mut(id).parent = mid;
        self.node_mut(parent).children.insert(first, mid);
        mid
    }

    /// Adds `key` (truncated to `pages.len()` whole pages) with the pages holding its KV. Returns how many
    /// leading tokens were already cached: the tree keeps its own pages for those, so the caller still
    /// owns (and must free) `pages[..returned / page_size]` except the ones it got from `match_prefix`.
    /// The tree takes ownership of the rest.
    pub fn insert(&mut self, key: &[u32], pages: &[u32]) -> usize {
        let ps = self.page_size;
        let key = &key[..(key.len() / ps).min(pages.len()) * ps];
        self.clock += 1;
        let now = self.clock;
        let (mut node, mut pos) = (ROOT, 0);
        while pos < key.len() {
            self.node_mut(node).last_use = now;
            let child = self.node(node).children.get(&key[pos..pos + ps]).copied();
            let Some(child) = child else {
                let leaf = Node {
                    key: key[pos..].to_vec(),
                    pages: pages[pos / ps..key.len() / ps].to_vec(),
                    parent: node,
                    children: HashMap::new(),
                    lock: 0,
                    last_use: now,
                };
                self.evictable += leaf.pages.len();
                let first: Box<[u32]> = key[pos..pos + ps].into();
                let id = self.alloc_node(leaf);
                self.node_mut(node).children.insert(first, id);
                return pos;
            };
            let c = self.node(child);
            let n = self.common_pages(&c.key, &key[pos..]);
            let next = if n < c.pages.len() { self.split(child, n) } else { child };
            pos += n * ps;
            node = next;
        }
        self.node_mut(node).last_use = now;
        pos
    }

    /// Frees at least `want` pages from unlocked leaves, least recently used first (whole leaves, so it
    /// may free more). Returns the freed page ids; fewer than `want` when not enough are evictable.
    pub fn evict(&mut self, want: usize) -> Vec<u32> {
        let ps = self.page_size;
        let mut freed = Vec::new();
        if want == 0 {
            return freed;
        }
        let mut heap: BinaryHeap<Reverse<(u64, NodeId)>> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(id, n)| n.as_ref().map(|n| (id, n)))
            .filter(|(id, n)| *id != ROOT && n.lock == 0 && n.children.is_empty())
            .map(|(id, n)| Reverse((n.last_use, id)))
            .collect();
        while freed.len() < want {
            let Some(Reverse((_, id))) = heap.pop() else { break };
            let n = self.nodes[id].take().expect("live leaf");
            self.free_slots.push(id);
            self.evictable -= n.pages.len();
            freed.extend_from_slice(&n.pages);
            let parent = self.node_mut(n.parent);
            parent.children.remove(&n.key[..ps]);
            if n.parent != ROOT && parent.children.is_empty() && parent.lock == 0 {
                heap.push(Reverse((parent.last_use, n.parent)));
            }
        }
        freed
    }

    /// Evicts everything nobody locks (`flushCache`).
    pub fn evict_all(&mut self) -> Vec<u32> {
        self.evict(usize::MAX)
    }

    /// Checks the tree's own invariants and returns every page it holds.
    pub fn check_integrity(&self) -> Result<Vec<u32>, String> {
        let ps = self.page_size;
        let mut pages = Vec::new();
        let (mut evictable, mut protected) = (0, 0);
        for (id, n) in self.nodes.iter().enumerate() {
            let Some(n) = n else { continue };
            if id == ROOT {
                continue;
            }
            if n.key.len() != n.pages.len() * ps || n.pages.is_empty() {
                return Err(format!("node {id}: {} tokens for {} pages", n.key.len(), n.pages.len()));
            }
            let p = self.nodes.get(n.parent).and_then(|p| p.as_ref()).ok_or(format!("node {id}: dead parent"))?;
            if p.children.get(&n.key[..ps]) != Some(&id) {
                return Err(format!("node {id}: parent does not list it under its first page"));
            }
            if n.parent != ROOT && p.lock < n.lock {
                return Err(format!("node {id}: lock {} above its parent's {}", n.lock, p.lock));
            }
            let child_locks: u32 = n.children.values().map(|&c| self.node(c).lock).sum();
            if child_locks > n.lock {
                return Err(format!("node {id}: children hold {child_locks} locks, node {}", n.lock));
            }
            if n.lock == 0 {
                evictable += n.pages.len();
            } else {
                protected += n.pages.len();
            }
            pages.extend_from_slice(&n.pages);
        }
        if (evictable, protected) != (self.evictable, self.protected) {
            return Err(format!(
                "counters say {}/{} evictable/protected pages, tree has {evictable}/{protected}",
                self.evictable, self.protected
            ));
        }
        Ok(pages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_insert_split_with_exact_pages() {
        let mut c = RadixCache::new(2);
        assert_eq!(c.insert(&[1, 2, 3, 4, 9], &[7, 3]), 0);
        // A partial last page is never cached.
        let m = c.match_prefix(&[1, 2, 3, 4, 9]);
        assert_eq!(m.pages, vec![7, 3]);
        // Diverging in the second page splits the edge.
        assert_eq!(c.insert(&[1, 2, 5, 5], &[7, 1]), 2);
        assert_eq!(c.match_prefix(&[1, 2, 5, 5, 5]).pages, vec![7, 1]);
        assert_eq!(c.match_prefix(&[1, 2, 3, 4]).pages, vec![7, 3]);
        assert_eq!(c.match_prefix(&[1, 2, 3]).pages, vec![7]);
        assert_eq!(c.match_prefix(&[1, 3]).pages, Vec::<u32>::new());
        assert_eq!(c.match_prefix(&[2, 1]).node, c.root());
        // Divergence inside a page: only whole equal pages match.
        assert_eq!(c.match_prefix(&[1, 2, 3, 5]).pages, vec![7]);
        assert_eq!(c.cached_pages(), 3);
        assert_eq!(c.check_integrity().unwrap().len(), 3);
    }

    #[test]
    fn locked_paths_survive_eviction_and_lru_goes_first() {
        let mut c = RadixCache::new(1);
        c.insert(&[1, 2, 3], &[10, 11, 12]);
        c.insert(&[1, 2, 4], &[10, 11, 13]);
        c.insert(&[5], &[14]);
        let m = c.match_prefix(&[1, 2, 4]);
        c.lock(m.node);
        assert_eq!(c.protected_pages(), 3);
        assert_eq!(c.evictable_pages(), 2);
        // [1 2 3] was used before [5]: its leaf goes first; the locked path stays.
        assert_eq!(c.evict(1), vec![12]);
        assert_eq!(c.evict(5), vec![14]);
        assert_eq!(c.match_prefix(&[1, 2, 4]).pages, vec![10, 11, 13]);
        c.unlock(m.node);
        let mut rest = c.evict_all();
        rest.sort();
        assert_eq!(rest, vec![10, 11, 13]);
        assert_eq!(c.cached_pages(), 0);
        c.check_integrity().unwrap();
    }

    #[test]
    fn split_keeps_locks_of_the_path() {
        let mut c = RadixCache::new(1);
        c.insert(&[1, 2, 3, 4], &[0, 1, 2, 3]);
        let m = c.match_prefix(&[1, 2, 3, 4]);
        c.lock(m.node);
        c.insert(&[1, 2, 9], &[0, 1, 5]);
        c.check_integrity().unwrap();
        assert_eq!(c.protected_pages(), 4);
        assert_eq!(c.evict(10), vec![5]);
        c.unlock(m.node);
        assert_eq!(c.evictable_pages(), 4);
        c.check_integrity().unwrap();
    }

    #[test]
    fn reinserting_a_cached_key_reports_it_all() {
        let mut c = RadixCache::new(4);
        assert_eq!(c.insert(&[1; 8], &[3, 4]), 0);
        assert_eq!(c.insert(&[1; 12], &[8, 9, 6]), 8);
        assert_eq!(c.match_prefix(&[1; 12]).pages, vec![3, 4, 6]);
    }
}
