//! RoPE settings of a Hugging Face `config.json`, in both layouts transformers has written:
//! - transformers >= 5: `"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": ..}`
//!   (every checkpoint it saves, whatever the file it was loaded from);
//! - older files: top-level `"rope_theta"` and `"rope_scaling": {"rope_type" | "type": .., ..}`.
//! Reading only the old keys from a new file silently falls back to the architecture's default theta
//! and no scaling: the model loads and answers, wrongly, from the second position on. Precedence follows
//! transformers 5 (`rope_parameters = rope_scaling or rope_parameters`, then `rope_theta` from that dict,
//! else the top-level key), and a rope type or partial rotary factor we do not implement is an error
//! rather than ignored.

use super::HfFields;
use crate::config::Llama3Scaling;
use crate::error::{Error, Result};
use serde_json::Value;

/// (rope_theta, llama3 scaling) from `config.json`; `theta_default` when the file names none.
pub(crate) fn hf_rope(json: &Value, theta_default: f64) -> Result<(f64, Option<Llama3Scaling>)> {
    let present = |key: &str| json.get(key).filter(|v| !v.is_null());
    let params = present("rope_parameters");
    if let Some(p) = params {
        let Some(o) = p.as_object() else {
            return Err(Error::invalid_model("config.json `rope_parameters` is not an object"));
        };
        // Models with per-layer-type rope (e.g. {"full_attention": {..}, "sliding_attention": {..}}).
        if o.values().any(Value::is_object) {
            return Err(Error::invalid_model("config.json `rope_parameters` per layer type is not supported"));
        }
    }
    // A legacy `rope_scaling` next to `rope_parameters` wins in transformers (a user who adds the
    // scaling a model card asks for to a config saved by transformers 5 gets it there).
    let scaling_from = present("rope_scaling").or(params);
    if let Some(s) = scaling_from.filter(|s| !s.is_object()) {
        return Err(Error::invalid_model(format!("config.json rope scaling is not an object: {s}")));
    }
    let theta_from = [scaling_from, params]
        .into_iter()
        .flatten()
        .find(|d| d.get("rope_theta").is_some_and(|t| !t.is_null()))
        .unwrap_or(json);
    let theta = HfFields(theta_from).f64_or("rope_theta", theta_default)?;
    for v in [Some(json), scaling_from].into_iter().flatten() {
        let prf = HfFields(v).f64_or("partial_rotary_factor", 1.0)?;
        if prf != 1.0 {
            return Err(Error::invalid_model(format!("partial_rotary_factor {prf} is not supported")));
        }
    }
    let scaling = match scaling_from {
        Some(s) => llama3_scaling(s)?,
        None => None,
    };
    Ok((theta, scaling))
}

fn llama3_scaling(s: &Value) -> Result<Option<Llama3Scaling>> {
    // `"rope_type": null` must not hide a `"type"` next to it.
    let kind = [s.get("rope_type"), s.get("type")].into_iter().flatten().find(|v| !v.is_null());
    let kind = match kind {
        None => None,
        Some(v) => Some(v.as_str().ok_or_else(|| Error::invalid_model(format!("config.json rope type {v} is not a string")))?),
    };
    match kind {
        Some("default") | None => Ok(None),
        Some("llama3") => {
            let f = HfFields(s);
            // Checked with the rest of the config (ModelConfig::validate), as for GGUF metadata.
            Ok(Some(Llama3Scaling {
                factor: f.f64_or("factor", 8.0)?,
                low_freq_factor: f.f64_or("low_freq_factor", 1.0)?,
                high_freq_factor: f.f64_or("high_freq_factor", 4.0)?,
                original_max_position_embeddings: f.f64_or("original_max_position_embeddings", 8192.0)?,
            }))
        }
        Some(other) => Err(Error::invalid_model(format!("rope type `{other}` is not supported"))),
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

    /// transformers 5: `rope_parameters = rope_scaling or rope_parameters`; theta from that dict, else the
    /// top-level key, else the architecture's default.
    #[test]
    fn precedence_follows_transformers() {
        let j = json!({"rope_theta": 10000.0, "rope_scaling": {"rope_type": "default"},
            "rope_parameters": {"rope_type": "llama3", "rope_theta": 2e5}});
        let (theta, s) = hf_rope(&j, 1.0).unwrap();
        assert_eq!((theta, s.is_none()), (2e5, true), "legacy scaling wins, theta from rope_parameters");
        let j = json!({"rope_theta": 5e5, "rope_parameters": {"rope_type": "llama3", "factor": 8.0}});
        let (theta, s) = hf_rope(&j, 1e4).unwrap();
        assert_eq!((theta, s.map(|s| s.factor)), (5e5, Some(8.0)), "theta falls back to the top-level key");
        assert_eq!(hf_rope(&json!({"rope_theta": 3e5, "rope_parameters": {}}), 1e4).unwrap().0, 3e5);
        let yarn = json!({"rope_scaling": {"type": "yarn", "factor": 4.0}, "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}});
        assert_eq!(hf_rope(&yarn, 1e4).unwrap_err().code(), "ERR_INVALID_MODEL", "yarn added by a user is not dropped");
        let null_type = json!({"rope_scaling": {"rope_type": null, "type": "yarn"}});
        assert_eq!(hf_rope(&null_type, 1e4).unwrap_err().code(), "ERR_INVALID_MODEL");
    }

    #[test]
    fn unsupported_rope_is_an_error() {
        for j in [
            json!({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0}}),
            json!({"rope_scaling": {"type": "linear", "factor": 2.0}}),
            json!({"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e6}}}),
            json!({"rope_parameters": 5}),
            json!({"rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "partial_rotary_factor": 0.5}}),
            json!({"partial_rotary_factor": 0.25}),
            json!({"rope_scaling": "llama3"}),
        ] {
            assert_eq!(
                hf_rope(&j, 1e4).unwrap_err().code(),
                "ERR_INVALID_MODEL",
                "{j}"
            );
        }
    }
}
