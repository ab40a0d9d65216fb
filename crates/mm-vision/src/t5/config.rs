//! `T5Config` (`config.json` of a `T5EncoderModel`, e.g. the `text_encoder_3/` of Stable
//! Diffusion 3 or the `text_encoder_2/` of FLUX.1), with transformers' defaults.

use mm_core::config::Checks;
use mm_core::nn::Activation;
use serde::{Deserialize, Serialize};

use crate::Result;

/// transformers' `T5Config`: the fields the encoder uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct T5Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the hidden states.
    pub d_model: usize,
    /// Width of each attention head (`d_model` need not be `num_heads × d_kv`).
    pub d_kv: usize,
    /// Width of the feed-forward layer.
    pub d_ff: usize,
    /// Encoder blocks.
    pub num_layers: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Buckets of the relative position bias.
    pub relative_attention_num_buckets: usize,
    /// Distance beyond which relative positions share the last bucket.
    pub relative_attention_max_distance: usize,
    /// Epsilon of the RMS layer norms.
    pub layer_norm_epsilon: f64,
    /// `"relu"` (T5), `"gated-gelu"` (T5 v1.1, FLAN-T5: tanh-approximated GELU gating a second
    /// projection), or `"gated-<act>"` / `"<act>"` for another activation.
    pub feed_forward_proj: String,
}

impl Default for T5Config {
    fn default() -> Self {
        Self {
            vocab_size: 32128,
            d_model: 512,
            d_kv: 64,
            d_ff: 2048,
            num_layers: 6,
            num_heads: 8,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            layer_norm_epsilon: 1e-6,
            feed_forward_proj: "relu".into(),
        }
    }
}

impl T5Config {
    /// Whether the feed-forward layer is gated (`wi_0`, `wi_1`) rather than plain (`wi`), and
    /// its activation, as transformers reads `feed_forward_proj` (`"gated-gelu"` means the
    /// tanh-approximated `gelu_new`).
    pub fn feed_forward(&self) -> Result<(bool, Activation)> {
        let text = self.feed_forward_proj.as_str();
        let (gated, name) = match text.split_once('-') {
            Some(("gated", act)) => (true, act),
            Some(_) => (false, ""),
            None => (false, text),
        };
        let name = if text == "gated-gelu" {
            "gelu_new"
        } else {
            name
        };
        let act = serde_json::from_value(serde_json::Value::String(name.into())).map_err(|_| {
            mm_core::Error::InvalidConfig(format!(
                "T5Config: feed_forward_proj '{text}' is not supported (\"relu\", \"gated-gelu\", \
                 \"gated-silu\", …)"
            ))
        })?;
        Ok((gated, act))
    }

    /// Checks that the model can be built from this config.
    pub fn validate(&self) -> Result<()> {
        let checks = Checks::new("T5Config")
            .positive(&[
                ("vocab_size", self.vocab_size),
                ("d_model", self.d_model),
                ("d_kv", self.d_kv),
                ("d_ff", self.d_ff),
                ("num_heads", self.num_heads),
                (
                    "relative_attention_max_distance",
                    self.relative_attention_max_distance,
                ),
            ])?
            .require(self.relative_attention_num_buckets >= 4, || {
                format!(
                    "relative_attention_num_buckets must be at least 4, got {}",
                    self.relative_attention_num_buckets
                )
            })?
            .epsilon("layer_norm_epsilon", self.layer_norm_epsilon)?;
        self.feed_forward()?;
        let (d, inner) = (self.d_model as f64, (self.num_heads * self.d_kv) as f64);
        let layer = 4.0 * d * inner + 3.0 * d * self.d_ff as f64;
        checks.parameters(self.vocab_size as f64 * d + self.num_layers as f64 * layer)?;
        Ok(())
    }
}
