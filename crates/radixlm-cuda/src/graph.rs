//! CUDA graphs: a decode step is ~10 launches per layer (a 24-layer model: ~250), each costing the CPU
//! a few microseconds to enqueue and the GPU a gap between kernels, which at small batch is most of the
//! step. Capturing the whole step once per batch-size bucket and replaying it costs one launch.
//!
//! A captured graph keeps every pointer and launch parameter it was captured with. The model
//! ([`crate::model`]) reads all inputs from buffers at fixed offsets, so replaying with new inputs
//! only needs the inputs uploaded into the same buffers first; what must not change between replays
//! (batch size, page-table width, decode split count) is part of the key a graph is stored under.

use crate::{Device, Error, Result};
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
use cudarc::driver::CudaGraph;
use std::collections::HashMap;
use std::hash::Hash;

/// Graphs by key, captured on first use.
pub struct Graphs<K> {
    graphs: HashMap<K, CudaGraph>,
}

impl<K: Hash + Eq + Copy> Default for Graphs<K> {
    fn default() -> Self {
        Graphs { graphs: HashMap::new() }
    }
}

impl<K: Hash + Eq + Copy> Graphs<K> {
    pub fn len(&self) -> usize {
        self.graphs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.graphs.is_empty()
    }

    pub fn get(&self, key: &K) -> Option<&CudaGraph> {
        self.graphs.get(key)
    }

    /// Records what `enqueue` puts on the device's stream (nothing runs) and keeps it under `key`.
    /// `enqueue` must not allocate, copy from the host or synchronize: those cannot be captured.
    pub fn capture(&mut self, dev: &Device, key: K, enqueue: impl FnOnce() -> Result<()>) -> Result<&CudaGraph> {
        let s = dev.stream();
        s.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
        let enqueued = enqueue();
        // End the capture whatever happened, or the stream stays unusable.
        let ended = s.end_capture(CUgraphInstantiate_flags(0));
        enqueued?;
        let graph = ended?.ok_or(Error::Shape { op: "graph capture", msg: "nothing was captured".into() })?;
        graph.upload()?;
        self.graphs.insert(key, graph);
        Ok(&self.graphs[&key])
    }

    pub fn clear(&mut self) {
        self.graphs.clear();
    }
}
