//! One view over the two weight formats. Model code asks for tensors by their Hugging Face names; GGUF
//! names are derived. Every tensor's shape is checked against what the config implies, so a file whose
//! shapes disagree with its own metadata is `ERR_INVALID_MODEL`, not a matmul error mid-generation.

use std::sync::Arc;

use std::borrow::Cow;

use candle_core::quantized::{GgmlDType, QStorage, QTensor};
use candle_core::{Device, Tensor};

use super::gguf::GgufFile;
use super::safetensors::SafetensorsWeights;
use crate::error::{Error, Result};
use crate::layers::qmatmul::QuantMatrix;

/// How matmul weights are held on the CPU: as stored (GGUF quantized blocks) or dequantized to f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightMode {
    AsStored,
    F32,
}

pub enum Weights {
    Gguf(GgufFile),
    Safetensors(SafetensorsWeights),
}

/// A matmul weight [out, in]: quantized blocks (our CPU kernels) or dense f32.
pub enum MatWeight {
    Quant(QuantMatrix),
    Dense(Tensor),
}

impl MatWeight {
    pub fn new(q: Arc<QTensor>, mode: WeightMode) -> Result<Self> {
        Self::stacked(vec![q], mode)
    }

    /// Several weights with the same input size stacked along the output dimension, run as one
    /// matmul (Q/K/V, gate/up): one parallel pass instead of several small ones.
    pub fn stacked(parts: Vec<Arc<QTensor>>, mode: WeightMode) -> Result<Self> {
        let dtype = parts[0].dtype();
        let same = parts.iter().all(|p| p.dtype() == dtype);
        let dense = mode == WeightMode::F32 || !same || matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
        if dense {
            let ts = parts.iter().map(|p| p.dequantize(&Device::Cpu)).collect::<candle_core::Result<Vec<_>>>()?;
            return Ok(MatWeight::Dense(Tensor::cat(&ts, 0)?.contiguous()?));
        }
        let q = if parts.len() == 1 {
            parts.into_iter().next().expect("one part")
        } else {
            let cols = parts[0].shape().dims()[1];
            let rows: usize = parts.iter().map(|p| p.shape().dims()[0]).sum();
            let mut bytes = Vec::new();
            for p in &parts {
                bytes.extend_from_slice(&p.data()?);
            }
            let storage = QStorage::from_data(Cow::Owned(bytes), &Device::Cpu, dtype)?;
            Arc::new(QTensor::new(storage, (rows, cols))?)
        };
        Ok(MatWeight::Quant(QuantMatrix::new(q)?))
    }

    pub fn out_dim(&self) -> usize {
        match self {
            MatWeight::Quant(q) => q.rows,
            MatWeight::Dense(t) => t.dims()[0],
        }
    }

    /// x [m, in] row-major -> [m, out].
    pub fn forward(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        match self {
            MatWeight::Quant(q) => q.matmul(x, m),
            MatWeight::Dense(w) => {
                let xt = Tensor::from_slice(x, (m, x.len() / m.max(1)), &Device::Cpu)?;
                Ok(xt.matmul(&w.t()?)?.flatten_all()?.to_vec1::<f32>()?)
            }
        }
    }
}

impl Weights {
    /// `name.weight` as [out, in] and, when `bias`, `name.bias` as [out].
    pub fn linear_parts(&self, name: &str, out_dim: usize, in_dim: usize, bias: bool) -> Result<(Arc<QTensor>, Option<Vec<f32>>)> {
        let w = self.qtensor(&format!("{name}.weight"), &[out_dim, in_dim])?;
        let b = if bias { Some(self.vector(&format!("{name}.bias"), out_dim)?.to_vec1::<f32>()?) } else { None };
        Ok((w, b))
    }

    /// Any tensor as a quantized tensor (dense formats wrap their f32 data), shape-checked.
    pub fn qtensor(&self, name: &str, dims: &[usize]) -> Result<Arc<QTensor>> {
        let q = match self {
            Weights::Gguf(f) => f.tensor(&gguf_name(name), &Device::Cpu)?,
            Weights::Safetensors(st) => {
                let t = st.get(name, &Device::Cpu)?;
                QTensor::quantize(&t, candle_core::quantized::GgmlDType::F32)?
            }
        };
        if q.shape().dims() != dims {
            return Err(Error::invalid_model(format!(
                "tensor {name} has shape {:?}, expected {dims:?}",
                q.shape().dims()
            )));
        }
        Ok(Arc::new(q))
    }

    pub fn vector(&self, name: &str, len: usize) -> Result<Tensor> {
        Ok(self.qtensor(name, &[len])?.dequantize(&Device::Cpu)?)
    }

    pub fn has(&self, name: &str) -> bool {
        match self {
            Weights::Gguf(f) => f.has_tensor(&gguf_name(name)),
            Weights::Safetensors(st) => st.has(name),
        }
    }
}

/// Hugging Face tensor name -> llama.cpp's GGUF name.
fn gguf_name(hf: &str) -> String {
    const LAYER_PARTS: &[(&str, &str)] = &[
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
        ("input_layernorm", "attn_norm"),
        ("post_attention_layernorm", "ffn_norm"),
    ];
    if let Some(rest) = hf.strip_prefix("model.layers.") {
        if let Some((idx, tail)) = rest.split_once('.') {
            for (from, to) in LAYER_PARTS {
                if let Some(suffix) = tail.strip_prefix(from) {
                    return format!("blk.{idx}.{to}{suffix}");
                }
            }
        }
    }
    for (from, to) in [("model.embed_tokens", "token_embd"), ("model.norm", "output_norm"), ("lm_head", "output")] {
        if let Some(suffix) = hf.strip_prefix(from) {
            return format!("{to}{suffix}");
        }
    }
    hf.to_string()
}

#[cfg(test)]
mod tests {
    use super::gguf_name;

    #[test]
    fn maps_hf_names_to_gguf() {
        assert_eq!(gguf_name("model.layers.12.self_attn.k_proj.weight"), "blk.12.attn_k.weight");
        assert_eq!(gguf_name("model.layers.0.self_attn.q_proj.bias"), "blk.0.attn_q.bias");
        assert_eq!(gguf_name("model.layers.3.post_attention_layernorm.weight"), "blk.3.ffn_norm.weight");
        assert_eq!(gguf_name("model.embed_tokens.weight"), "token_embd.weight");
        assert_eq!(gguf_name("model.norm.weight"), "output_norm.weight");
        assert_eq!(gguf_name("lm_head.weight"), "output.weight");
    }
}
