//! What the LLaVA examples share: loading a snapshot (model, processor, chat template) and
//! answering a prompt about images with the text streamed as it is generated.

use std::io::Write;

use burn::tensor::Device;
use mm_core::hub::ModelDir;
use mm_core::image::RgbImage;
use mm_vlm::chat::{ChatMessage, ChatTemplate, Content};
use mm_vlm::generate::{Control, GenerationConfig, Streamer};
use mm_vlm::llava::{LlavaForConditionalGeneration, VisionLanguageModel};
use mm_vlm::llava_next::LlavaNextForConditionalGeneration;
use mm_vlm::processor::{LlavaProcessor, ProcessorOutput};

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
    /// The generation settings the options describe; a temperature that is negative or not
    /// a number, or a top-p outside (0, 1], is an error rather than a silent greedy decode.
    pub fn generation_config(&self) -> Result<GenerationConfig, AnyError> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(format!(
                "--temperature must be a finite number >= 0 (0 decodes greedily), got {}",
                self.temperature
            )
            .into());
        }
        let mut config = if self.temperature > 0.0 {
            GenerationConfig::sampling().with_temperature(self.temperature)
        } else {
            GenerationConfig::greedy()
        };
        if let Some(p) = self.top_p {
            config = config.with_top_p(p);
        }
        let config = config
            .with_seed(self.seed)
            .with_max_new_tokens(self.max_new_tokens);
        config.validate()?;
        Ok(config)
    }
}

/// LLaVA 1.5 or LLaVA-NeXT.
enum Model {
    Llava(LlavaForConditionalGeneration),
    Next(LlavaNextForConditionalGeneration),
}

impl Model {
    fn generate(
        &self,
        inputs: &ProcessorOutput,
        device: &Device,
        config: &GenerationConfig,
        streamer: &mut Streamer<'_>,
    ) -> Result<Vec<i64>, AnyError> {
        let (ids, mask) = inputs.token_tensors(device)?;
        let images = &inputs.images;
        let out = match self {
            Model::Llava(m) => {
                let pixels = (!images.is_empty())
                    .then(|| images.pixel_values(device))
                    .transpose()?;
                m.generate(ids, pixels, Some(mask), config, Some(streamer))?
            }
            Model::Next(m) => {
                let pixels = (!images.is_empty())
                    .then(|| images.to_next_images(device))
                    .transpose()?;
                m.generate(ids, pixels, Some(mask), config, Some(streamer))?
            }
        };
        Ok(out.new_tokens.into_iter().next().unwrap_or_default())
    }
}

/// A loaded LLaVA snapshot: the model, its processor and its chat template.
pub struct Llava {
    model: Model,
    processor: LlavaProcessor,
    template: ChatTemplate,
    device: Device,
    generation: GenerationConfig,
}

impl Llava {
    /// Loads the snapshot the options name: a `llava` (LLaVA 1.5) or `llava_next` (LLaVA-NeXT)
    /// checkpoint, by its `config.json`'s `model_type`.
    pub fn load(args: &LlavaArgs) -> Result<Self, AnyError> {
        let device = crate::device(&args.device)?;
        let dir = ModelDir::resolve(&args.model)?;
        let config: serde_json::Value = mm_core::config::read_json(dir.file("config.json")?)?;
        let dtype = crate::parse_dtype(&args.dtype)?;
        eprintln!("loading {} ...", dir.path().display());
        let model = match config["model_type"].as_str().unwrap_or_default() {
            "llava" => Model::Llava(LlavaForConditionalGeneration::load_with_dtype(
                &args.model,
                dtype,
                &device,
            )?),
            "llava_next" => Model::Next(LlavaNextForConditionalGeneration::load_with_dtype(
                &args.model,
                dtype,
                &device,
            )?),
            other => {
                return Err(format!(
                    "{} is a '{other}' checkpoint; these examples run 'llava' (LLaVA 1.5) and \
                     'llava_next' (LLaVA-NeXT) models",
                    args.model
                )
                .into());
            }
        };
        let processor = LlavaProcessor::from_dir(dir.path())?;
        let template = ChatTemplate::from_dir(dir.path())?;
        let generation = args.generation_config()?;
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
        let new_tokens =
            self.model
                .generate(&inputs, &self.device, &self.generation, &mut streamer)?;
        println!();
        let tokens: Vec<u32> = new_tokens
            .iter()
            .filter_map(|&t| u32::try_from(t).ok())
            .collect();
        Ok(self
            .processor
            .tokenizer()
            .decode(&tokens)?
            .trim()
            .to_owned())
    }
}
