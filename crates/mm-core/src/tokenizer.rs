//! Text tokenization with padding, truncation and attention masks.
//!
//! [`Tokenizer`] wraps a Hugging Face `tokenizers` tokenizer, loaded from a `tokenizer.json`
//! ([`Tokenizer::from_file`]) or, for the CLIP BPE tokenizer that Stable Diffusion ships as
//! `vocab.json` + `merges.txt` only, built the way `transformers`' `CLIPConverter` builds it
//! ([`Tokenizer::from_vocab_merges`]). Both give the same ids.
//!
//! Sequences are padded (to the maximum length or to the longest of the batch) and truncated
//! here rather than by the wrapped tokenizer, so that the options are explicit:
//!
//! - `max_length`: from the file's `truncation` section, else a sibling `tokenizer_config.json`
//!   `model_max_length` (ignored when absurdly large), else 77 (CLIP);
//! - `pad_id`: from the file's `padding` section, else the `pad_token` of a sibling
//!   `tokenizer_config.json` / `special_tokens_map.json`, else `<|endoftext|>` when the
//!   vocabulary has it, else 0;
//! - truncation (on by default) keeps the special tokens: a long CLIP prompt becomes
//!   `<|startoftext|>` + 75 tokens + `<|endoftext|>`. With truncation off a prompt longer than
//!   `max_length` is an [`Error::Tokenizer`] ("prompt too long: N tokens > 77").

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use tokenizers::models::ModelWrapper;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, NFC, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, TruncationParams};

use crate::{Error, Result};

/// The CLIP context length.
pub const CLIP_MAX_LENGTH: usize = 77;
/// CLIP's begin-of-text token.
pub const CLIP_BOS: &str = "<|startoftext|>";
/// CLIP's end-of-text token (also its pad token in the OpenAI tokenizer).
pub const CLIP_EOS: &str = "<|endoftext|>";
/// The pre-tokenizer pattern of the CLIP tokenizer (as in its `tokenizer.json`).
const CLIP_PATTERN: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// `model_max_length` values above this are the "no limit" sentinel of `transformers`.
const MAX_SANE_LENGTH: u64 = 1_000_000;

/// How to pad a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Pad every sequence to `max_length` (what CLIP text encoders expect).
    MaxLength,
    /// Pad to the longest sequence of the batch.
    Longest,
    /// No padding: sequences keep their lengths.
    None,
}

/// Token ids and attention masks of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Token ids, one row per input.
    pub ids: Vec<Vec<u32>>,
    /// 1 for real tokens, 0 for padding.
    pub attention_mask: Vec<Vec<u32>>,
}

impl Encoded {
    /// `(input_ids, attention_mask)` as `[batch, seq]` int tensors.
    ///
    /// An empty batch, or rows of different lengths (only possible with [`Padding::None`]),
    /// give [`Error::InvalidInput`].
    pub fn to_tensors(&self, device: &Device) -> Result<(Tensor<2, Int>, Tensor<2, Int>)> {
        let rows = self.ids.len();
        if rows == 0 {
            return Err(Error::InvalidInput("empty batch of sequences".into()));
        }
        let len = self.ids.first().map_or(0, Vec::len);
        if self
            .ids
            .iter()
            .chain(&self.attention_mask)
            .any(|r| r.len() != len)
            || self.attention_mask.len() != rows
        {
            return Err(Error::InvalidInput(
                "sequences of different lengths cannot form a tensor; pad the batch".into(),
            ));
        }
        let to_tensor = |rows_data: &[Vec<u32>]| {
            let flat: Vec<i64> = rows_data.iter().flatten().map(|&v| i64::from(v)).collect();
            Tensor::<2, Int>::from_data(TensorData::new(flat, [rows, len]), device)
        };
        Ok((to_tensor(&self.ids), to_tensor(&self.attention_mask)))
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no sequences.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A tokenizer with explicit padding and truncation.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// A copy of `inner` truncating to `max_length` (keeping the special tokens).
    truncating: tokenizers::Tokenizer,
    max_length: usize,
    pad_id: u32,
    padding: Padding,
    truncation: bool,
}

fn tok_err(context: &str, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("{context}: {e}"))
}

fn missing(what: &str, path: &Path) -> Error {
    Error::MissingFile {
        what: what.into(),
        path: path.to_path_buf(),
        hint: String::new(),
    }
}

/// Reads a JSON file next to the tokenizer, if present and parseable.
fn sibling_json(dir: Option<&Path>, name: &str) -> Option<serde_json::Value> {
    let bytes = std::fs::read(dir?.join(name)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The `pad_token`s of the `tokenizer_config.json` / `special_tokens_map.json` in `dir`.
fn pad_tokens(dir: Option<&Path>) -> Vec<String> {
    ["tokenizer_config.json", "special_tokens_map.json"]
        .into_iter()
        .filter_map(|name| sibling_json(dir, name))
        .filter_map(|c| token_content(c.get("pad_token")?).map(str::to_owned))
        .collect()
}

/// A token given as `"tok"` or `{"content": "tok", ...}`.
fn token_content(v: &serde_json::Value) -> Option<&str> {
    v.as_str()
        .or_else(|| v.get("content").and_then(serde_json::Value::as_str))
}

impl Tokenizer {
    fn finish(inner: tokenizers::Tokenizer, dir: Option<&Path>) -> Self {
        let config = sibling_json(dir, "tokenizer_config.json");
        let max_length = inner
            .get_truncation()
            .map(|t| t.max_length)
            .or_else(|| {
                let v = config.as_ref()?.get("model_max_length")?;
                let n = v.as_u64().or_else(|| {
                    v.as_f64()
                        .filter(|f| *f >= 1.0 && *f <= MAX_SANE_LENGTH as f64)
                        .map(|f| f as u64)
                })?;
                (1..=MAX_SANE_LENGTH).contains(&n).then_some(n as usize)
            })
            .unwrap_or(CLIP_MAX_LENGTH);
        let pad_id = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| pad_tokens(dir).iter().find_map(|t| inner.token_to_id(t)))
            .or_else(|| inner.token_to_id(CLIP_EOS))
            .unwrap_or(0);
        let mut inner = inner;
        inner.with_padding(None);
        // Removing truncation cannot fail.
        let _ = inner.with_truncation(None);
        let mut truncating = inner.clone();
        // Stride 0 cannot be invalid for any max_length.
        let _ = truncating.with_truncation(Some(TruncationParams {
            max_length,
            ..Default::default()
        }));
        Self {
            truncating,
            inner,
            max_length,
            pad_id,
            padding: Padding::MaxLength,
            truncation: true,
        }
    }

    /// Loads a `tokenizer.json`. A `tokenizer_config.json` / `special_tokens_map.json` in the
    /// same folder supplies `model_max_length` and `pad_token` when the file has no padding or
    /// truncation section.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(missing("tokenizer.json", path));
        }
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| tok_err(&format!("cannot load {}", path.display()), e))?;
        Ok(Self::finish(inner, path.parent()))
    }

    /// Builds the CLIP BPE tokenizer from `vocab.json` + `merges.txt` (the Stable Diffusion
    /// `tokenizer/` folder), as `transformers`' `CLIPConverter` does: an NFC, whitespace
    /// collapse and lowercase normalizer; the CLIP split regex then a byte-level pre-tokenizer;
    /// BPE with the `</w>` end-of-word suffix and `<|endoftext|>` as unknown token; and
    /// `<|startoftext|> … <|endoftext|>` post-processing.
    ///
    /// A `tokenizer_config.json` / `special_tokens_map.json` next to `vocab.json` is read for
    /// `model_max_length` and `pad_token`, as with [`Tokenizer::from_file`].
    pub fn from_vocab_merges(vocab: impl AsRef<Path>, merges: impl AsRef<Path>) -> Result<Self> {
        let (vocab, merges) = (vocab.as_ref(), merges.as_ref());
        for (what, p) in [("vocab.json", vocab), ("merges.txt", merges)] {
            if !p.is_file() {
                return Err(missing(what, p));
            }
        }
        let path_str = |p: &Path| {
            p.to_str()
                .map(str::to_owned)
                .ok_or_else(|| Error::Tokenizer(format!("path {} is not valid UTF-8", p.display())))
        };
        let bpe = BPE::from_file(&path_str(vocab)?, &path_str(merges)?)
            .unk_token(CLIP_EOS.into())
            .end_of_word_suffix("</w>".into())
            .continuing_subword_prefix(String::new())
            .build()
            .map_err(|e| tok_err("cannot build the CLIP BPE model", e))?;
        let normalizer = NormalizerSequence::new(vec![
            NFC.into(),
            Replace::new(ReplacePattern::Regex(r"\s+".into()), " ")
                .map_err(|e| tok_err("normalizer", e))?
                .into(),
            Lowercase.into(),
        ]);
        let pre_tokenizer = PreTokenizerSequence::new(vec![
            Split::new(
                SplitPattern::Regex(CLIP_PATTERN.into()),
                SplitDelimiterBehavior::Removed,
                true,
            )
            .map_err(|e| tok_err("pre-tokenizer", e))?
            .into(),
            ByteLevel::new(false, true, true).into(),
        ]);
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let bos_id = inner.token_to_id(CLIP_BOS);
        let eos_id = inner.token_to_id(CLIP_EOS);
        let (Some(bos_id), Some(eos_id)) = (bos_id, eos_id) else {
            return Err(Error::Tokenizer(format!(
                "{} lacks the CLIP special tokens {CLIP_BOS} / {CLIP_EOS}",
                vocab.display()
            )));
        };
        inner
            .with_normalizer(Some(normalizer))
            .with_pre_tokenizer(Some(pre_tokenizer))
            .with_post_processor(Some(
                RobertaProcessing::new((CLIP_EOS.into(), eos_id), (CLIP_BOS.into(), bos_id))
                    .trim_offsets(false)
                    .add_prefix_space(false),
            ))
            .with_decoder(Some(ByteLevel::new(true, true, true)));
        inner.add_special_tokens(&[
            AddedToken::from(CLIP_BOS, true).normalized(false),
            AddedToken::from(CLIP_EOS, true).normalized(false),
        ]);
        let dir: Option<PathBuf> = vocab.parent().map(Path::to_path_buf);
        // A configured pad token is a special token too, which `transformers` splits out of
        // the text before BPE: SDXL's `tokenizer_2` pads with `!`, so a `!` in a prompt is
        // that token (id 0), not the end-of-word `!</w>`.
        let pads: Vec<AddedToken> = pad_tokens(dir.as_deref())
            .into_iter()
            .filter(|t| inner.token_to_id(t).is_some())
            .map(|t| AddedToken::from(t, true).normalized(false))
            .collect();
        inner.add_special_tokens(&pads);
        Ok(Self::finish(inner, dir.as_deref()))
    }

    /// Sets the maximum length (including special tokens).
    ///
    /// A length too small for the special tokens gives [`Error::InvalidInput`].
    pub fn with_max_length(mut self, max_length: usize) -> Result<Self> {
        self.truncating
            .with_truncation(Some(TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| Error::InvalidInput(format!("max_length {max_length}: {e}")))?;
        self.max_length = max_length;
        Ok(self)
    }

    /// Sets the padding strategy (default [`Padding::MaxLength`]).
    pub fn with_padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// Sets the id used for padding.
    pub fn with_pad_id(mut self, pad_id: u32) -> Self {
        self.pad_id = pad_id;
        self
    }

    /// Turns truncation to `max_length` on (default) or off.
    pub fn with_truncation(mut self, truncation: bool) -> Self {
        self.truncation = truncation;
        self
    }

    /// The maximum length, special tokens included.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The padding id.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Encodes one text (see [`Tokenizer::encode_batch`]).
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        self.encode_batch(&[text])
    }

    /// Encodes texts with special tokens, truncating and padding as configured.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<Encoded> {
        if self.max_length < 2 {
            return Err(Error::InvalidInput(format!(
                "max_length {} leaves no room for the special tokens",
                self.max_length
            )));
        }
        let mut ids = Vec::with_capacity(texts.len());
        for text in texts {
            let enc = self
                .inner
                .encode(*text, true)
                .map_err(|e| tok_err("cannot encode text", e))?;
            let mut row = enc.get_ids().to_vec();
            if row.len() > self.max_length {
                if !self.truncation {
                    return Err(Error::Tokenizer(format!(
                        "prompt too long: {} tokens > {}",
                        row.len(),
                        self.max_length
                    )));
                }
                row = self.truncate(text)?;
            }
            ids.push(row);
        }
        let target = match self.padding {
            Padding::MaxLength => Some(self.max_length),
            Padding::Longest => ids.iter().map(Vec::len).max(),
            Padding::None => None,
        };
        let mut attention_mask = Vec::with_capacity(ids.len());
        for row in &mut ids {
            let mut mask = vec![1u32; row.len()];
            if let Some(target) = target {
                row.resize(target.max(row.len()), self.pad_id);
                mask.resize(row.len(), 0);
            }
            attention_mask.push(mask);
        }
        Ok(Encoded {
            ids,
            attention_mask,
        })
    }

    /// Encodes with the wrapped tokenizer's own truncation, which keeps the special tokens.
    fn truncate(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .truncating
            .encode(text, true)
            .map_err(|e| tok_err("cannot encode text", e))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decodes ids back to text, skipping special tokens.
    ///
    /// For a BPE model with an end-of-word suffix (CLIP's `</w>`) the suffix becomes a space and
    /// the text is trimmed, as `transformers`' `CLIPTokenizerFast` does.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let text = self
            .inner
            .decode(ids, true)
            .map_err(|e| tok_err("cannot decode ids", e))?;
        match self.inner.get_model() {
            ModelWrapper::BPE(bpe) => match bpe.end_of_word_suffix.as_deref() {
                Some(suffix) if !suffix.is_empty() => {
                    Ok(text.replace(suffix, " ").trim().to_owned())
                }
                _ => Ok(text),
            },
            _ => Ok(text),
        }
    }

    /// The id of a token, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token of an id, if it is in the vocabulary.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}
