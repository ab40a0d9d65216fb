//! Configs mirroring transformers' `LlamaConfig` / `MistralConfig` (the `text_config`),
//! `LlavaConfig` and `LlavaNextConfig`, with the transformers defaults.
//!
//! The language config takes its defaults from its `model_type`: a `"mistral"` text config that
//! leaves out `sliding_window` gets Mistral's 4096, a `"llama"` one gets none. Rotary settings
//! are read from the published spelling (`rope_theta` + `rope_scaling`) and from the
//! transformers 5 one (`rope_parameters`).

use std::path::Path;

use mm_core::config::Checks;
use mm_core::nn::Activation;
use mm_vision::clip::ClipVisionConfig;
use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::anyres::SelectStrategy;
use crate::{Error, Result};

/// A token id or a list of them (`eos_token_id` may be either in HF configs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    /// One id.
    One(i64),
    /// Several ids.
    Many(Vec<i64>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<i64> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// The rotary-embedding variant and its parameters (`rope_scaling` / `rope_parameters`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    /// `default`, `linear`, `dynamic` or `llama3` (older configs spell the key `type`).
    #[serde(alias = "type", default = "default_rope_type")]
    pub rope_type: String,
    /// The base of the frequencies, when given here (transformers 5 `rope_parameters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// Scaling factor (linear, dynamic, llama3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// llama3: low-frequency factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_freq_factor: Option<f64>,
    /// llama3: high-frequency factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_freq_factor: Option<f64>,
    /// llama3: context length of the original model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_max_position_embeddings: Option<usize>,
}

fn default_rope_type() -> String {
    "default".into()
}

/// `LlamaConfig` / `MistralConfig`: the language decoder of LLaVA (`text_config`). Mistral is
/// Llama with a sliding attention window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TextConfig {
    /// `llama` or `mistral` (decides the defaults of missing fields).
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub num_hidden_layers: usize,
    /// Number of query heads.
    pub num_attention_heads: usize,
    /// Number of key/value heads (grouped-query attention); `None` = `num_attention_heads`.
    pub num_key_value_heads: Option<usize>,
    /// Width of one head; `None` = `hidden_size / num_attention_heads`.
    pub head_dim: Option<usize>,
    /// MLP activation.
    pub hidden_act: Activation,
    /// Longest sequence the model handles.
    pub max_position_embeddings: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// Rotary base (published configs).
    pub rope_theta: Option<f64>,
    /// Rotary scaling (published configs).
    pub rope_scaling: Option<RopeScaling>,
    /// Rotary settings as transformers 5 writes them.
    pub rope_parameters: Option<RopeScaling>,
    /// Biases on the q/k/v/o projections.
    pub attention_bias: bool,
    /// Biases on the MLP projections.
    pub mlp_bias: bool,
    /// `lm_head` shares the token embedding matrix.
    pub tie_word_embeddings: bool,
    /// Mistral: each token attends to at most this many previous tokens (itself included).
    pub sliding_window: Option<usize>,
    /// Padding token id.
    pub pad_token_id: Option<i64>,
    /// Beginning-of-sequence token id.
    pub bos_token_id: Option<i64>,
    /// End-of-sequence token id(s).
    pub eos_token_id: Option<TokenIds>,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self::llama()
    }
}

impl TextConfig {
    /// transformers' `LlamaConfig()` defaults (Llama 2 7B).
    pub fn llama() -> Self {
        Self {
            model_type: "llama".into(),
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: None,
            head_dim: None,
            hidden_act: Activation::Silu,
            max_position_embeddings: 2048,
            rms_norm_eps: 1e-6,
            rope_theta: None,
            rope_scaling: None,
            rope_parameters: None,
            attention_bias: false,
            mlp_bias: false,
            tie_word_embeddings: false,
            sliding_window: None,
            pad_token_id: None,
            bos_token_id: Some(1),
            eos_token_id: Some(TokenIds::One(2)),
        }
    }

    /// transformers' `MistralConfig()` defaults (Mistral 7B).
    pub fn mistral() -> Self {
        Self {
            model_type: "mistral".into(),
            intermediate_size: 14336,
            num_key_value_heads: Some(8),
            max_position_embeddings: 4096 * 32,
            sliding_window: Some(4096),
            ..Self::llama()
        }
    }

    /// The defaults for a `model_type`.
    pub fn for_model_type(model_type: &str) -> Self {
        match model_type {
            "mistral" => Self::mistral(),
            _ => Self::llama(),
        }
    }

    /// Estimated parameter count: per layer the q, k, v, o projections, the gated MLP and two
    /// norms; the embeddings and (untied) `lm_head`.
    pub fn parameters(&self) -> f64 {
        let (d, i, hd) = (
            self.hidden_size as f64,
            self.intermediate_size as f64,
            self.head_size() as f64,
        );
        let (heads, kv) = (self.num_attention_heads as f64, self.kv_heads() as f64);
        let layer = d * hd * (2.0 * heads + 2.0 * kv) + 3.0 * d * i + 2.0 * d;
        let heads_out = if self.tie_word_embeddings { 1.0 } else { 2.0 };
        self.num_hidden_layers as f64 * layer + heads_out * self.vocab_size as f64 * d + d
    }

    /// Number of key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head.
    pub fn head_size(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// The rotary settings, whichever way the file spells them.
    pub fn rope(&self) -> RopeScaling {
        let mut rope = self
            .rope_parameters
            .clone()
            .or_else(|| self.rope_scaling.clone())
            .unwrap_or(RopeScaling {
                rope_type: default_rope_type(),
                rope_theta: None,
                factor: None,
                low_freq_factor: None,
                high_freq_factor: None,
                original_max_position_embeddings: None,
            });
        rope.rope_theta = rope.rope_theta.or(self.rope_theta).or(Some(10000.0));
        rope
    }

    /// Checks the sizes fit together, and estimates the weights against the memory limit
    /// ([`mm_core::Error::TooLarge`] for a config too large to build).
    pub fn validate(&self) -> Result<()> {
        let checks = Checks::new("text_config").positive(&[
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ])?;
        if self.head_dim.is_none() {
            checks.heads("hidden_size", self.hidden_size, self.num_attention_heads)?;
        }
        checks
            .positive(&[("head_dim", self.head_size())])?
            .epsilon("rms_norm_eps", self.rms_norm_eps)?
            .parameters(self.parameters())?;
        let heads = self.num_attention_heads;
        let kv = self.kv_heads();
        if heads == 0 || kv == 0 || !heads.is_multiple_of(kv) {
            return Err(Error::Config(format!(
                "num_attention_heads ({heads}) must be a positive multiple of num_key_value_heads ({kv})"
            )));
        }
        if !self.head_size().is_multiple_of(2) {
            return Err(Error::Config(format!(
                "head_dim {} must be even for rotary embeddings",
                self.head_size()
            )));
        }
        let rope = self.rope();
        match rope.rope_type.as_str() {
            "default" => {}
            "linear" | "dynamic" if rope.factor.is_some() => {}
            "llama3"
                if rope.factor.is_some()
                    && rope.low_freq_factor.is_some()
                    && rope.high_freq_factor.is_some()
                    && rope.original_max_position_embeddings.is_some() => {}
            other => {
                return Err(Error::Config(format!(
                    "unsupported or incomplete rope scaling '{other}' (supported: default, linear, dynamic, llama3)"
                )));
            }
        }
        Ok(())
    }
}

/// Overlays the keys of `given` onto the serialised `defaults` and reads the result back, so
/// that defaults can depend on another field (`model_type`).
fn overlay<T: Serialize + DeserializeOwned>(defaults: &T, given: Value) -> serde_json::Result<T> {
    let mut base = serde_json::to_value(defaults)?;
    if let (Value::Object(base), Value::Object(given)) = (&mut base, given) {
        for (k, v) in given {
            base.insert(k, v);
        }
    }
    serde_json::from_value(base)
}

fn text_config<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<TextConfig, D::Error> {
    let value = Value::deserialize(d)?;
    let model_type = value
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("llama")
        .to_string();
    overlay(&TextConfig::for_model_type(&model_type), value).map_err(serde::de::Error::custom)
}

/// LLaVA's vision tower when the config names none: CLIP ViT-L/14 at 336 pixels.
pub fn llava_default_vision_config() -> ClipVisionConfig {
    ClipVisionConfig {
        hidden_size: 1024,
        intermediate_size: 4096,
        projection_dim: 768,
        num_hidden_layers: 24,
        num_attention_heads: 16,
        image_size: 336,
        patch_size: 14,
        ..ClipVisionConfig::default()
    }
}

/// `vision_feature_layer`: one hidden-state index or several (concatenated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FeatureLayer {
    /// One index into the tower's hidden states (negative counts from the end).
    One(isize),
    /// Several indices; their hidden states are concatenated along the feature axis.
    Many(Vec<isize>),
}

impl FeatureLayer {
    /// The indices as a list.
    pub fn to_vec(&self) -> Vec<isize> {
        match self {
            FeatureLayer::One(i) => vec![*i],
            FeatureLayer::Many(v) => v.clone(),
        }
    }
}

fn d_image_token() -> i64 {
    32000
}
fn d_seq_len() -> usize {
    576
}
fn d_act() -> Activation {
    Activation::Gelu
}
fn d_layer() -> FeatureLayer {
    FeatureLayer::One(-2)
}
fn d_true() -> bool {
    true
}
fn d_pinpoints() -> Vec<[usize; 2]> {
    vec![[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
}

/// `LlavaConfig` (and, with `image_grid_pinpoints`, `LlavaNextConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlavaConfig {
    /// The language decoder.
    #[serde(default, deserialize_with = "text_config")]
    pub text_config: TextConfig,
    /// The CLIP vision tower (CLIP ViT-L/14-336 when absent).
    #[serde(default = "llava_default_vision_config")]
    pub vision_config: ClipVisionConfig,
    /// The placeholder token the image features replace (`image_token_id` in transformers 5).
    #[serde(default = "d_image_token", alias = "image_token_id")]
    pub image_token_index: i64,
    /// Image tokens per image (LLaVA 1.5: the processor's expansion count).
    #[serde(default = "d_seq_len")]
    pub image_seq_length: usize,
    /// Activation between the projector's two linear layers.
    #[serde(default = "d_act")]
    pub projector_hidden_act: Activation,
    /// Which tower hidden state(s) feed the projector.
    #[serde(default = "d_layer")]
    pub vision_feature_layer: FeatureLayer,
    /// Drop the class token (`default`) or keep it (`full`).
    #[serde(default)]
    pub vision_feature_select_strategy: SelectStrategy,
    /// Biases on the projector layers.
    #[serde(default = "d_true")]
    pub multimodal_projector_bias: bool,
    /// Tie `lm_head` to the token embeddings (also true when the text config says so).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// LLaVA-NeXT: the candidate resolutions `[height, width]` of the anyres tiling.
    #[serde(default = "d_pinpoints")]
    pub image_grid_pinpoints: Vec<[usize; 2]>,
}

impl Default for LlavaConfig {
    fn default() -> Self {
        Self {
            text_config: TextConfig::llama(),
            vision_config: llava_default_vision_config(),
            image_token_index: d_image_token(),
            image_seq_length: d_seq_len(),
            projector_hidden_act: d_act(),
            vision_feature_layer: d_layer(),
            vision_feature_select_strategy: SelectStrategy::Default,
            multimodal_projector_bias: true,
            tie_word_embeddings: false,
            image_grid_pinpoints: d_pinpoints(),
        }
    }
}

/// `LlavaNextConfig`: the same fields (`image_grid_pinpoints` is used).
pub type LlavaNextConfig = LlavaConfig;

impl LlavaConfig {
    /// Reads a `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let config: Self = mm_core::config::read_json(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Whether `lm_head` shares the embedding matrix (the top-level or the text flag).
    pub fn tied(&self) -> bool {
        self.tie_word_embeddings || self.text_config.tie_word_embeddings
    }

    /// Width of the projector input: the tower width times the number of feature layers.
    pub fn projector_in(&self) -> usize {
        self.vision_config.hidden_size * self.vision_feature_layer.to_vec().len()
    }

    /// Image tokens of one square tile (`(image/patch)²`, `+1` with the `full` strategy).
    pub fn tokens_per_tile(&self) -> usize {
        let g = self.vision_config.grid();
        g * g + usize::from(self.vision_feature_select_strategy == SelectStrategy::Full)
    }

    /// Checks the sizes fit together.
    pub fn validate(&self) -> Result<()> {
        self.text_config.validate()?;
        self.vision_config.validate()?;
        let layers = self.vision_feature_layer.to_vec();
        let n = self.vision_config.num_hidden_layers as isize + 1;
        if layers.is_empty() || layers.iter().any(|&i| i >= n || i < -n) {
            return Err(Error::Config(format!(
                "vision_feature_layer {:?} is outside the tower's {n} hidden states",
                self.vision_feature_layer
            )));
        }
        let v = &self.vision_config;
        if v.patch_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
            return Err(Error::Config(format!(
                "vision image_size {} is not a multiple of patch_size {}",
                v.image_size, v.patch_size
            )));
        }
        Ok(())
    }
}

/// The EOS ids of a model folder: `generation_config.json`'s `eos_token_id` when present, else
/// the text config's.
pub fn eos_token_ids(dir: &Path, text: &TextConfig) -> Vec<i64> {
    #[derive(Deserialize)]
    struct GenerationFile {
        eos_token_id: Option<TokenIds>,
    }
    let from_file =
        mm_core::config::read_json::<GenerationFile>(dir.join("generation_config.json"))
            .ok()
            .and_then(|g| g.eos_token_id);
    from_file
        .or_else(|| text.eos_token_id.clone())
        .map(|ids| ids.to_vec())
        .unwrap_or_default()
}
