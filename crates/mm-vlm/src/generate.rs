//! Autoregressive generation: greedy or sampled decoding with transformers' logits processors
//! (repetition penalty, minimum length, temperature, top-k, top-p), EOS ids, stop strings and a
//! streaming callback that sees every new token and can cancel.
//!
//! ```no_run
//! use mm_vlm::generate::{Control, GenerationConfig, Streamer};
//! use mm_vlm::llava::VisionLanguageModel;
//! # fn demo(model: &mm_vlm::llava::LlavaForConditionalGeneration,
//! #         ids: burn::tensor::Tensor<2, burn::tensor::Int>,
//! #         pixels: burn::tensor::Tensor<4>,
//! #         tokenizer: &mm_core::tokenizer::Tokenizer) -> mm_vlm::Result<()> {
//! let config = GenerationConfig::sampling()
//!     .with_temperature(0.7)
//!     .with_top_p(0.9)
//!     .with_seed(42)
//!     .with_max_new_tokens(64)
//!     .with_stop_strings(["\nUSER:"]);
//! let mut streamer = Streamer::new(|event| {
//!     print!("{}", event.text.unwrap_or_default());
//!     Control::Continue
//! })
//! .with_tokenizer(tokenizer);
//! let out = model.generate(ids, Some(pixels), None, &config, Some(&mut streamer))?;
//! println!("{:?}", out.new_tokens[0]);
//! # Ok(()) }
//! ```

use burn::tensor::Tensor;
use mm_core::precision::{Autocast, ComputeDtype};
use mm_core::tokenizer::Tokenizer;

use crate::kv_cache::KvCache;
use crate::llama::{LlamaForCausalLM, ids_tensor};
use crate::{Error, Result};

/// How to pick tokens. Defaults follow transformers' `GenerationConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// The most tokens to add per row.
    pub max_new_tokens: usize,
    /// EOS ids are suppressed until this many tokens are generated.
    pub min_new_tokens: usize,
    /// Sample (true) or take the most likely token (false).
    pub do_sample: bool,
    /// Divides the logits before sampling.
    pub temperature: f32,
    /// Sample among the `k` most likely tokens (ties at the k-th score kept).
    pub top_k: Option<usize>,
    /// Sample among the smallest set of tokens whose probability reaches `p`.
    pub top_p: Option<f32>,
    /// `> 1` discourages tokens already in the sequence (prompt included): a positive logit
    /// is divided by it, a negative one multiplied (transformers semantics).
    pub repetition_penalty: f32,
    /// Seed of the sampler (same seed and inputs, same tokens).
    pub seed: u64,
    /// Tokens that end a row; `None` uses the model's (`generation_config.json` or config).
    pub eos_token_ids: Option<Vec<i64>>,
    /// Token fed for rows that have finished while others go on.
    pub pad_token_id: i64,
    /// A row ends once its decoded continuation contains one of these (needs a tokenizer in
    /// the [`Streamer`]).
    pub stop_strings: Vec<String>,
    /// The arithmetic of the matrix products on the flex CPU backend: f32 (the default), or
    /// bf16 with f32 sums ([`ComputeDtype::Bf16`]) for the vision tower, the projector and the
    /// prompt's prefill (a one-token decoding step reads each weight once and stays f32). In
    /// bf16, f32 weights used more than once are packed to bf16 into a cache at their second
    /// use and kept until the generation returns (up to half their size more memory
    /// meanwhile; weights stored in bf16 are used as they are).
    pub compute_dtype: ComputeDtype,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self::greedy()
    }
}

impl GenerationConfig {
    /// Greedy decoding of up to 256 tokens.
    pub fn greedy() -> Self {
        Self {
            max_new_tokens: 256,
            min_new_tokens: 0,
            do_sample: false,
            temperature: 1.0,
            top_k: Some(50),
            top_p: None,
            repetition_penalty: 1.0,
            seed: 0,
            eos_token_ids: None,
            pad_token_id: 0,
            stop_strings: Vec::new(),
            compute_dtype: ComputeDtype::F32,
        }
    }

    /// Sampling with transformers' defaults (temperature 1, top-k 50, no top-p).
    pub fn sampling() -> Self {
        Self {
            do_sample: true,
            ..Self::greedy()
        }
    }

    /// Sets the arithmetic of the matrix products ([`GenerationConfig::compute_dtype`]).
    pub fn with_compute_dtype(mut self, dtype: ComputeDtype) -> Self {
        self.compute_dtype = dtype;
        self
    }

    /// Sets `max_new_tokens`.
    pub fn with_max_new_tokens(mut self, n: usize) -> Self {
        self.max_new_tokens = n;
        self
    }

    /// Sets `min_new_tokens`.
    pub fn with_min_new_tokens(mut self, n: usize) -> Self {
        self.min_new_tokens = n;
        self
    }

    /// Switches sampling on or off.
    pub fn with_sampling(mut self, do_sample: bool) -> Self {
        self.do_sample = do_sample;
        self
    }

    /// Sets the temperature.
    pub fn with_temperature(mut self, t: f32) -> Self {
        self.temperature = t;
        self
    }

    /// Sets top-k (`None` or `0` = off).
    pub fn with_top_k(mut self, k: impl Into<Option<usize>>) -> Self {
        self.top_k = k.into().filter(|&k| k > 0);
        self
    }

    /// Sets top-p (`1.0` = off). A value outside `(0, 1]` (or NaN) is kept, so that
    /// [`validate`](Self::validate) and generation reject it instead of ignoring it.
    pub fn with_top_p(mut self, p: f32) -> Self {
        self.top_p = (p != 1.0).then_some(p);
        self
    }

    /// Sets the repetition penalty.
    pub fn with_repetition_penalty(mut self, penalty: f32) -> Self {
        self.repetition_penalty = penalty;
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the EOS ids (an empty list: never stop at a token).
    pub fn with_eos_token_ids(mut self, ids: impl Into<Vec<i64>>) -> Self {
        self.eos_token_ids = Some(ids.into());
        self
    }

    /// Sets the padding id fed for finished rows.
    pub fn with_pad_token_id(mut self, id: i64) -> Self {
        self.pad_token_id = id;
        self
    }

    /// Sets the stop strings.
    pub fn with_stop_strings<S: Into<String>>(
        mut self,
        stops: impl IntoIterator<Item = S>,
    ) -> Self {
        self.stop_strings = stops.into_iter().map(Into::into).collect();
        self
    }

    /// This config with `eos` as the EOS ids unless it names its own.
    pub fn with_default_eos(&self, eos: &[i64]) -> Self {
        let mut config = self.clone();
        config.eos_token_ids.get_or_insert_with(|| eos.to_vec());
        config
    }

    /// Checks the values are usable.
    pub fn validate(&self) -> Result<()> {
        if self.do_sample && !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "temperature must be positive when sampling, got {}",
                self.temperature
            )));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(Error::InvalidInput(format!(
                "top_p must be in (0, 1], got {p}"
            )));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "repetition_penalty must be positive, got {}",
                self.repetition_penalty
            )));
        }
        Ok(())
    }
}

/// What the streaming callback sees for each new token.
#[derive(Debug, Clone, Copy)]
pub struct StreamEvent<'a> {
    /// The batch row.
    pub row: usize,
    /// The new token id.
    pub token: i64,
    /// Its position among the row's new tokens (0 = first).
    pub index: usize,
    /// The text this token completes (with a tokenizer; empty while a multi-byte character is
    /// still incomplete).
    pub text: Option<&'a str>,
}

/// The callback's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// Stop generating (every row).
    Stop,
}

/// Receives the tokens as they are generated; with a tokenizer, also their text (and stop
/// strings become usable).
pub struct Streamer<'a> {
    callback: Box<dyn FnMut(StreamEvent<'_>) -> Control + 'a>,
    tokenizer: Option<&'a Tokenizer>,
}

impl<'a> Streamer<'a> {
    /// A streamer calling `callback` for every new token.
    pub fn new(callback: impl FnMut(StreamEvent<'_>) -> Control + 'a) -> Self {
        Self {
            callback: Box::new(callback),
            tokenizer: None,
        }
    }

    /// Decodes the tokens with `tokenizer` (text deltas and stop strings).
    pub fn with_tokenizer(mut self, tokenizer: &'a Tokenizer) -> Self {
        self.tokenizer = Some(tokenizer);
        self
    }
}

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// It produced an EOS id (kept as its last token).
    Eos,
    /// Its text contains a stop string.
    StopString,
    /// `max_new_tokens` reached.
    Length,
    /// The model's `max_position_embeddings` reached.
    MaxPositions,
    /// The streaming callback asked to stop.
    Cancelled,
}

/// The result of [`generate_from_embeds`] and the models' `generate`.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The new tokens of each row (up to and including an EOS token).
    pub new_tokens: Vec<Vec<i64>>,
    /// Why each row stopped.
    pub finish: Vec<FinishReason>,
}

/// A small deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Turns one row of logits into the next token, as transformers' logits processors and
/// sampling do.
#[derive(Debug, Clone)]
pub struct Sampler {
    config: GenerationConfig,
    eos: Vec<i64>,
    rng: Rng,
}

impl Sampler {
    /// A sampler for `config` (its EOS ids matter for `min_new_tokens`).
    pub fn new(config: &GenerationConfig) -> Self {
        Self {
            config: config.clone(),
            eos: config.eos_token_ids.clone().unwrap_or_default(),
            rng: Rng(config.seed),
        }
    }

    /// The scores after the repetition penalty and the minimum-length rule (what greedy
    /// decoding takes the argmax of). `history` is the row so far, prompt included;
    /// `generated` how many tokens were added to it.
    pub fn process(&self, logits: &mut [f32], history: &[i64], generated: usize) {
        let p = self.config.repetition_penalty;
        if p != 1.0 {
            let mut seen = vec![false; logits.len()];
            for &t in history {
                if let Some(s) = usize::try_from(t).ok().filter(|&t| t < logits.len())
                    && !std::mem::replace(&mut seen[s], true)
                {
                    let v = logits[s];
                    logits[s] = if v < 0.0 { v * p } else { v / p };
                }
            }
        }
        if generated < self.config.min_new_tokens {
            for &e in &self.eos {
                if let Some(v) = usize::try_from(e).ok().and_then(|e| logits.get_mut(e)) {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
    }

    /// Picks the next token from one row of logits.
    pub fn next_token(&mut self, logits: &mut [f32], history: &[i64], generated: usize) -> i64 {
        self.process(logits, history, generated);
        if !self.config.do_sample {
            return argmax(logits) as i64;
        }
        let t = self.config.temperature;
        if t != 1.0 {
            logits.iter_mut().for_each(|v| *v /= t);
        }
        if let Some(k) = self.config.top_k.filter(|&k| k < logits.len()) {
            let mut sorted: Vec<f32> = logits.to_vec();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let kth = sorted[k - 1];
            logits
                .iter_mut()
                .filter(|v| **v < kth)
                .for_each(|v| *v = f32::NEG_INFINITY);
        }
        if let Some(top_p) = self.config.top_p {
            top_p_filter(logits, top_p);
        }
        let probs = softmax(logits);
        let u = self.rng.next_f64();
        let mut acc = 0.0f64;
        let mut last = argmax(logits);
        for (i, &p) in probs.iter().enumerate() {
            if p > 0.0 {
                acc += p;
                last = i;
                if u < acc {
                    return i as i64;
                }
            }
        }
        last as i64
    }
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

fn softmax(v: &[f32]) -> Vec<f64> {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = v.iter().map(|&x| (x as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// transformers' `TopPLogitsWarper`: sorted ascending, drop the tokens whose cumulative
/// probability stays `<= 1 - top_p`, always keeping the most likely one.
fn top_p_filter(logits: &mut [f32], top_p: f32) {
    let probs = softmax(logits);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[a].total_cmp(&logits[b]));
    let mut cum = 0.0f64;
    let n = order.len();
    for (rank, &i) in order.iter().enumerate() {
        cum += probs[i];
        if cum <= 1.0 - top_p as f64 && rank + 1 < n {
            logits[i] = f32::NEG_INFINITY;
        }
    }
}

/// Per-row decoding state for text deltas and stop strings.
struct RowText {
    emitted: String,
}

impl RowText {
    /// The new text of `tokens` since the last call (held back while it ends in an
    /// incomplete character).
    fn delta(&mut self, tokenizer: &Tokenizer, tokens: &[i64]) -> Result<String> {
        let ids: Vec<u32> = tokens.iter().map(|&t| t.max(0) as u32).collect();
        let text = tokenizer.decode(&ids)?;
        if text.ends_with('\u{FFFD}') || !text.starts_with(&self.emitted) {
            return Ok(String::new());
        }
        let delta = text[self.emitted.len()..].to_string();
        self.emitted = text;
        Ok(delta)
    }
}

/// Generates from prompt embeddings `[batch, seq, hidden]` (image features already merged).
/// `prompt` holds the prompt ids of each row (for the repetition penalty), `mask` the left
/// padding (`[batch][seq]`, true = token). Prefills once, then feeds one token per step.
pub fn generate_from_embeds(
    lm: &LlamaForCausalLM,
    embeds: Tensor<3>,
    prompt: Vec<Vec<i64>>,
    mask: Option<Vec<Vec<bool>>>,
    config: &GenerationConfig,
    mut streamer: Option<&mut Streamer<'_>>,
) -> Result<Generation> {
    config.validate()?;
    let _compute = Autocast::enter(config.compute_dtype);
    let [b, s, _] = embeds.dims();
    if s == 0 {
        return Err(Error::EmptyPrompt);
    }
    if prompt.len() != b || prompt.iter().any(|r| r.len() != s) {
        return Err(Error::Shape {
            what: "prompt ids",
            expected: format!("[{b}, {s}] like the embeddings"),
            got: vec![prompt.len(), prompt.first().map_or(0, Vec::len)],
        });
    }
    let tokenizer = streamer.as_ref().and_then(|st| st.tokenizer);
    if !config.stop_strings.is_empty() && tokenizer.is_none() {
        return Err(Error::InvalidInput(
            "stop strings need a tokenizer (Streamer::with_tokenizer)".into(),
        ));
    }
    let eos = config.eos_token_ids.clone().unwrap_or_default();
    let mut sampler = Sampler::new(config);
    let device = embeds.device();
    let max_positions = lm.model.max_positions();
    let mut cache = KvCache::new();
    let mut history = prompt;
    let mut new_tokens = vec![Vec::new(); b];
    let mut finish: Vec<Option<FinishReason>> = vec![None; b];
    let mut texts: Vec<RowText> = (0..b)
        .map(|_| RowText {
            emitted: String::new(),
        })
        .collect();
    let mut logits = lm.last_logits(embeds, mask.as_deref(), &mut cache)?;
    for step in 0..config.max_new_tokens {
        let vocab = logits.dims()[1];
        let flat = logits
            .to_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| Error::InvalidInput(format!("cannot read logits: {e:?}")))?;
        let mut next = vec![config.pad_token_id; b];
        let mut cancelled = false;
        for row in 0..b {
            if finish[row].is_some() {
                continue;
            }
            let mut scores = flat[row * vocab..(row + 1) * vocab].to_vec();
            // -inf is a masked token; NaN means broken weights or inputs: no token is right.
            if scores.iter().any(|s| s.is_nan()) {
                return Err(Error::InvalidInput(format!(
                    "the logits of row {row} are NaN at step {step}: the model's weights or \
                     inputs are not finite"
                )));
            }
            let token = sampler.next_token(&mut scores, &history[row], step);
            next[row] = token;
            history[row].push(token);
            new_tokens[row].push(token);
            let text = match tokenizer {
                Some(tok) => Some(texts[row].delta(tok, &new_tokens[row])?),
                None => None,
            };
            if let Some(st) = streamer.as_deref_mut() {
                let event = StreamEvent {
                    row,
                    token,
                    index: step,
                    text: text.as_deref(),
                };
                cancelled |= (st.callback)(event) == Control::Stop;
            }
            if eos.contains(&token) {
                finish[row] = Some(FinishReason::Eos);
            } else if config
                .stop_strings
                .iter()
                .any(|stop| texts[row].emitted.contains(stop.as_str()))
            {
                finish[row] = Some(FinishReason::StopString);
            }
        }
        if cancelled {
            for f in finish.iter_mut().filter(|f| f.is_none()) {
                *f = Some(FinishReason::Cancelled);
            }
        }
        if finish.iter().all(Option::is_some) || step + 1 == config.max_new_tokens {
            break;
        }
        if max_positions.is_some_and(|max| cache.len() >= max) {
            for f in finish.iter_mut().filter(|f| f.is_none()) {
                *f = Some(FinishReason::MaxPositions);
            }
            break;
        }
        let ids = ids_tensor(&next.iter().map(|&t| vec![t]).collect::<Vec<_>>(), &device);
        let embeds = lm.model.embed(ids)?;
        logits = lm.last_logits(embeds, None, &mut cache)?;
    }
    Ok(Generation {
        new_tokens,
        finish: finish
            .into_iter()
            .map(|f| f.unwrap_or(FinishReason::Length))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(config: GenerationConfig) -> Sampler {
        Sampler::new(&config)
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative_scores() {
        let s = sampler(GenerationConfig::greedy().with_repetition_penalty(2.0));
        let mut logits = vec![2.0, -2.0, 1.0, 0.5];
        // token 0 twice: penalised once, as transformers' gather/scatter does
        s.process(&mut logits, &[0, 1, 0, 99], 0);
        assert_eq!(logits, vec![1.0, -4.0, 1.0, 0.5]);
    }

    #[test]
    fn min_new_tokens_suppresses_eos() {
        let config = GenerationConfig::greedy()
            .with_eos_token_ids([1, 3])
            .with_min_new_tokens(2);
        let mut s = sampler(config);
        let mut logits = vec![0.0, 5.0, 1.0, 4.0];
        assert_eq!(s.next_token(&mut logits.clone(), &[], 1), 2);
        assert_eq!(s.next_token(&mut logits, &[], 2), 1);
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = sampler(GenerationConfig::greedy());
        assert_eq!(s.next_token(&mut [0.5, 2.0, 2.0, -1.0], &[], 0), 1);
    }

    #[test]
    fn top_k_keeps_ties_at_the_kth_score() {
        let mut s = sampler(GenerationConfig::sampling().with_top_k(2).with_seed(3));
        for _ in 0..200 {
            let t = s.next_token(&mut [1.0, 3.0, 3.0, 2.0], &[], 0);
            assert!(t == 1 || t == 2, "{t}");
        }
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        let mut logits: Vec<f32> = [0.5f32, 0.3, 0.2].iter().map(|p| p.ln()).collect();
        top_p_filter(&mut logits, 0.6);
        assert!(logits[0].is_finite() && logits[1].is_finite());
        assert_eq!(logits[2], f32::NEG_INFINITY);
        // the most likely token always survives
        let mut logits: Vec<f32> = [0.9f32, 0.1].iter().map(|p| p.ln()).collect();
        top_p_filter(&mut logits, 0.01);
        assert!(logits[0].is_finite() && logits[1] == f32::NEG_INFINITY);
    }

    #[test]
    fn sampling_follows_the_distribution_and_the_seed() {
        let config = GenerationConfig::sampling().with_top_k(None).with_seed(7);
        let draw = |config: &GenerationConfig| {
            let mut s = sampler(config.clone());
            (0..4000)
                .map(|_| s.next_token(&mut [0.7f32.ln(), 0.3f32.ln()], &[], 0))
                .collect::<Vec<_>>()
        };
        let a = draw(&config);
        assert_eq!(a, draw(&config), "same seed, same tokens");
        assert_ne!(a, draw(&config.clone().with_seed(8)));
        let share = a.iter().filter(|&&t| t == 0).count() as f64 / a.len() as f64;
        assert!((share - 0.7).abs() < 0.03, "{share}");
        // temperature flattens: at T = 1000 both tokens are about equally likely
        let mut s = sampler(config.with_temperature(1000.0));
        let hot = (0..4000)
            .filter(|_| s.next_token(&mut [0.7f32.ln(), 0.3f32.ln()], &[], 0) == 0)
            .count() as f64
            / 4000.0;
        assert!((hot - 0.5).abs() < 0.04, "{hot}");
    }

    #[test]
    fn invalid_settings_are_errors() {
        let bad = [
            GenerationConfig::sampling().with_temperature(0.0),
            GenerationConfig::sampling().with_top_p(0.0),
            GenerationConfig::greedy().with_repetition_penalty(-1.0),
            // Out of range or NaN top-p is kept and rejected, not silently switched off.
            GenerationConfig::sampling().with_top_p(2.0),
            GenerationConfig::sampling().with_top_p(f32::NAN),
            GenerationConfig::sampling().with_temperature(f32::NAN),
            GenerationConfig::sampling().with_temperature(-1.0),
        ];
        for config in bad {
            assert!(matches!(config.validate(), Err(Error::InvalidInput(_))));
        }
        assert!(
            GenerationConfig::greedy()
                .with_temperature(0.0)
                .validate()
                .is_ok()
        );
    }
}
