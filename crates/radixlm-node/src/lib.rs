//! napi-rs binding: mechanical conversion between JS values and radixlm-core, no engine logic.
//! Errors cross as `[ERR_CODE] message`; index.ts turns them into `RadixLMError`s with `code`.

mod convert;
mod engine;
mod request;
