//! RoPE settings of a Hugging Face `config.json`, in both layouts transformers has written:
//! - transformers >= 5: `"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": ..}`
//!   (every checkpoint it saves, whatever the file it was loaded from);
//! - older files: top-level `"rope_theta"` and `"rope_scaling": {"rope_type" | "type": .., ..}`.
//! Reading only the old keys from a new file silently falls back to the architecture's default theta
//! and no scaling: the model loads and answers, wrongly, from the second position on. So `rope_parameters`
//! wins when present, and a rope type we do not implement is an error rather than ignored.

use super::HfFields;
use crate::config::Llama3Scaling;
use crate::error::{Error, Result};
use serde_json::Value;

/// (rope_theta, llama3 scaling) from `config.json`; `theta_default` when the file names none.
pub(crate) fn hf_rope(json: &Value, theta_default: f64) -> Result<(f64, Option<Llama3Scaling>)> {
    let params = json.get("rope_parameters").filter(|v| !v.is_null());
    let (theta_from, scaling_from) = match params {
        Some(p) if !p.is_object() => {
            return Err(Error::invalid_model(
                "config.json `rope_parameters` is not an object",
            ))
        }
        // Models with per-layer-type rope (e.g. {"full_attention": {..}, "sliding_attention": {..}}).
        Some(p)
            if p.as_object()
                .is_some_and(|o| o.values().any(Value::is_object)) =>
        {
            return Err(Error::invalid_model(
                "config.json `rope_parameters` per layer type is not supported",
            ))
        }
        Some(p) => (p, Some(p)),
        None => (json, json.get("rope_scaling").filter(|v| !v.is_null())),
    };
    let theta = HfFields(theta_from).f64_or("rope_theta", theta_default)?;
    let scaling = match scaling_from {
        Some(s) => llama3_scaling(s)?,
        None => None,
    };
    Ok((theta, scaling))
}

fn llama3_scaling(s: &Value) -> Result<Option<Llama3Scaling>> {
    let kind = s
        .get("rope_type")
        .or_else(|| s.get("type"))
        .and_then(Value::as_str);
    match kind {
        Some("default") | None => Ok(None),
        Some("llama3") => {
            let f = HfFields(s);
            let scaling = Llama3Scaling {
                factor: f.f64_or("factor", 8.0)?,
                low_freq_factor: f.f64_or("low_freq_factor", 1.0)?,
                high_freq_factor: f.f64_or("high_freq_factor", 4.0)?,
                original_max_position_embeddings: f
                    .f64_or("original_max_position_embeddings", 8192.0)?,
            };
            let ok = scaling.factor > 0.0
                && scaling.low_freq_factor > 0.0
                && scaling.high_freq_factor > scaling.low_freq_factor
                && scaling.original_max_position_embeddings > 0.0;
            if !ok {
                return Err(Error::invalid_model("rope scaling: invalid llama3 factors"));
            }
            Ok(Some(scaling))
        }
        Some(other) => Err(Error::invalid_model(format!(
            "rope type `{other}` is not supported"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LLAMA3: [(&str, f64); 4] = [
        ("factor", 8.0),
        ("low_freq_factor", 1.0),
        ("high_freq_factor", 4.0),
        ("original_max_position_embeddings", 8192.0),
    ];

    fn is_llama31(s: Option<Llama3Scaling>) -> bool {
        s.is_some_and(|s| {
            [
                s.factor,
                s.low_freq_factor,
                s.high_freq_factor,
                s.original_max_position_embeddings,
            ] == LLAMA3.map(|(_, v)| v)
        })
    }

    #[test]
    fn transformers_5_layout() {
        let j = json!({"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}});
        let (theta, s) = hf_rope(&j, 10000.0).unwrap();
        assert_eq!(theta, 500000.0);
        assert!(is_llama31(s));
        let (theta, s) = hf_rope(
            &json!({"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}),
            1e4,
        )
        .unwrap();
        assert_eq!((theta, s.is_none()), (1e6, true));
    }

    #[test]
    fn legacy_layout() {
        let j = json!({"rope_theta": 500000.0, "rope_scaling": {"type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}});
        let (theta, s) = hf_rope(&j, 10000.0).unwrap();
        assert_eq!(theta, 500000.0);
        assert!(is_llama31(s));
        assert_eq!(hf_rope(&json!({"rope_scaling": null}), 1e6).unwrap().0, 1e6);
    }

    #[test]
    fn rope_parameters_win_over_legacy_keys() {
        let j = json!({"rope_theta": 10000.0, "rope_scaling": {"rope_type": "yarn"},
            "rope_parameters": {"rope_type": "default", "rope_theta": 2e5}});
        let (theta, s) = hf_rope(&j, 1.0).unwrap();
        assert_eq!((theta, s.is_none()), (2e5, true));
    }

    #[test]
    fn unsupported_rope_is_an_error() {
        for j in [
            json!({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}}),
            json!({"rope_scaling": {"type": "linear", "factor": 2.0}}),
            json!({"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e6}}}),
            json!({"rope_parameters": 5}),
            json!({"rope_parameters": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0}}),
        ] {
            assert_eq!(
                hf_rope(&j, 1e4).unwrap_err().code(),
                "ERR_INVALID_MODEL",
                "{j}"
            );
        }
    }
}
