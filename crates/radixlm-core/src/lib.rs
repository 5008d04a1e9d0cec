//! radixlm-core: the engine. Policy (scheduler), memory (KV pages), compute (model runner + models),
//! sampling and detokenization, each its own module; no napi here.

pub mod backend;
pub mod chat_template;
pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda_backend;
pub mod detok;
pub mod engine;
pub mod error;
pub mod forward_ctx;
pub mod kv_cache;
pub mod layers;
pub mod logprobs;
pub mod memory;
#[cfg(test)]
mod memory_prop_tests;
pub mod model;
pub mod models;
pub mod options;
pub mod radix;
pub mod request;
pub mod runner;
pub mod sampling;
pub mod scheduler;
pub mod stop_regex;
mod worker;

/// Whether this build has the CUDA backend (the `cuda` feature).
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

pub use engine::{Aborter, Chunk, EngineHandle, Event, Output, PromptInput, RequestHandle};
pub use error::{Error, ErrorCode, Result};
pub use options::EngineOptions;
pub use request::FinishReason;
