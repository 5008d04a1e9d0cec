//! Sampling: request parameters (parsing + validation) and the per-request sampler.

pub mod params;
pub mod grammar;
pub mod sampler;

pub use params::SamplingParams;
pub use sampler::RequestSampler;

#[cfg(test)]
mod dist_tests;
#[cfg(test)]
mod penalty_tests;
