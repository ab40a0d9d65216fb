//! What the LLaVA examples share: loading a snapshot (model, processor, chat template) and
//! answering a prompt about images with the text streamed as it is generated.

use std::io::Write;

use burn::tensor::{DType, Device};
use mm_core::hub::ModelDir;
use mm_core::image::RgbImage;
use mm_vlm::chat::{ChatMessage, ChatTemplate, Content};
use mm_vlm::generate::{Control, GenerationConfig, Streamer};
use mm_vlm::llava::LlavaForConditionalGeneration;
use mm_vlm::processor::LlavaProcessor;

use crate::AnyError;

/// Options of the LLaVA examples.
#[derive(Debug, clap::Args)]
pub struct LlavaArgs {
    /// Model folder or Hugging Face repo id (resolved in the local HF cache), e.g.
    /// llava-hf/llava-1.5-7b-hf.
    #[arg(long, default_value = "llava-hf/llava-1.5-7b-hf")]
    pub model: String,
    /// Weights precision: f32, bf16 or f16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 decodes greedily.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling threshold (with a temperature > 0).
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Device: cpu, or wgpu when built with `--features wgpu`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl LlavaArgs {
    /// The generation settings the options describe.
    pub fn generation_config(&self) -> GenerationConfig {
        let mut config = if self.temperature > 0.0 {
            GenerationConfig::sampling().with_temperature(self.temperature)
        } else {
            GenerationConfig::greedy()
        };
        if let Some(p) = self.top_p {
            config = config.with_top_p(p);
        }
        config
            .with_seed(self.seed)
            .with_max_new_tokens(self.max_new_tokens)
    }
}

fn parse_dtype(name: &str) -> Result<DType, AnyError> {
    match name {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        other => Err(format!("unknown dtype '{other}' (expected f32, bf16 or f16)").into()),
    }
}

/// A loaded LLaVA snapshot: the model, its processor and its chat template.
pub struct Llava {
    model: LlavaForConditionalGeneration,
    processor: LlavaProcessor,
    template: ChatTemplate,
    device: Device,
    generation: GenerationConfig,
}

impl Llava {
    /// Loads the snapshot the options name (only `model_type: llava` checkpoints: LLaVA 1.5).
    pub fn load(args: &LlavaArgs) -> Result<Self, AnyError> {
        let device = crate::device(&args.device)?;
        let dir = ModelDir::resolve(&args.model)?;
        let config: serde_json::Value = mm_core::config::read_json(dir.file("config.json")?)?;
        let model_type = config["model_type"].as_str().unwrap_or_default();
        if model_type != "llava" {
            return Err(format!(
                "{} is a '{model_type}' checkpoint; this example runs LLaVA 1.5 ('llava') models",
                args.model
            )
            .into());
        }
        let dtype = parse_dtype(&args.dtype)?;
        eprintln!("loading {} ...", dir.path().display());
        let model = LlavaForConditionalGeneration::load_with_dtype(&args.model, dtype, &device)?;
        let processor = LlavaProcessor::from_dir(dir.path())?;
        let template = ChatTemplate::from_dir(dir.path())?;
        let generation = args.generation_config();
        generation.validate()?;
        Ok(Self {
            model,
            processor,
            template,
            device,
            generation,
        })
    }

    /// Asks `prompt` about `images` (a single user turn with the images first), printing the
    /// answer to stdout as it is generated; returns the whole answer.
    pub fn answer(&self, images: &[RgbImage], prompt: &str) -> Result<String, AnyError> {
        let mut content = vec![Content::Image; images.len()];
        content.push(Content::Text(prompt.to_owned()));
        let messages = [ChatMessage::new("user", content)];
        let inputs = self
            .processor
            .process_chat(&self.template, &messages, images, true)?;
        let (ids, mask) = inputs.token_tensors(&self.device)?;
        let pixels = if inputs.images.is_empty() {
            None
        } else {
            Some(inputs.images.pixel_values(&self.device)?)
        };
        let mut stdout = std::io::stdout();
        let mut streamer = Streamer::new(|event| {
            if let Some(text) = event.text {
                print!("{text}");
                // A failed flush only delays the text.
                let _ = stdout.flush();
            }
            Control::Continue
        })
        .with_tokenizer(self.processor.tokenizer());
        let out = self.model.generate(
            ids,
            pixels,
            Some(mask),
            &self.generation,
            Some(&mut streamer),
        )?;
        println!();
        let tokens: Vec<u32> = out
            .new_tokens
            .first()
            .map(|row| row.iter().filter_map(|&t| u32::try_from(t).ok()).collect())
            .unwrap_or_default();
        Ok(self
            .processor
            .tokenizer()
            .decode(&tokens)?
            .trim()
            .to_owned())
    }
}
