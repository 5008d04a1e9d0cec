//! Model files: locating them (local path or Hugging Face cache / hub), reading and validating them
//! (GGUF, safetensors), building the tokenizer, and loading a model. Model files are untrusted input.

pub mod gguf;
pub mod hub;
pub mod load;
pub mod safetensors;
pub mod tokenizer;
pub mod weights;
