//! Chat messages and Hugging Face chat templates.
//!
//! [`ChatTemplate`] renders a conversation into the prompt string a model was trained on, like
//! `processor.apply_chat_template(messages, tokenize=False)` of `transformers`: the Jinja
//! template of the model folder is rendered with [`minijinja`] configured the way `transformers`
//! configures Jinja2 (`trim_blocks`, `lstrip_blocks`, loop controls, `raise_exception`,
//! `strftime_now`, a `tojson` that writes like Python's `json.dumps`, Python string methods such
//! as `.upper()` / `.strip()`, and the `{% generation %}` tag rendering its body), with the
//! tokenizer's `bos_token` / `eos_token` / `unk_token` / `pad_token` and `add_generation_prompt`.
//!
//! Message contents reach the template as a list of parts (`{"type": "text", "text": ...}`,
//! `{"type": "image"}`) when the template reads parts, else as a plain string (see
//! [`ContentFormat`]).
//!
//! ```no_run
//! use mm_vlm::chat::{ChatMessage, ChatTemplate};
//! # fn main() -> mm_vlm::Result<()> {
//! let template = ChatTemplate::from_dir("llava-1.5-7b-hf")?;
//! let prompt = template.render(&[ChatMessage::user_with_images(1, "What is this?")], true)?;
//! assert_eq!(prompt, "USER: <image>\nWhat is this? ASSISTANT:");
//! # Ok(()) }
//! ```

use std::path::Path;
use std::sync::Arc;

use minijinja::value::{Kwargs, Serde, Value, ValueKind};
use minijinja::{Environment, ErrorKind};
use serde::Serialize;

use crate::{Error, Result};

/// One part of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Text.
    Text(String),
    /// An image (its pixels travel separately, in order, to the processor).
    Image,
}

/// A chat message: a role (`"system"`, `"user"`, `"assistant"`) and its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// The role.
    pub role: String,
    /// Text and image parts, in order.
    pub content: Vec<Content>,
}

impl ChatMessage {
    /// A message with the given parts.
    pub fn new(role: impl Into<String>, content: Vec<Content>) -> Self {
        Self {
            role: role.into(),
            content,
        }
    }

    /// A text-only message.
    pub fn text(role: impl Into<String>, text: impl Into<String>) -> Self {
        Self::new(role, vec![Content::Text(text.into())])
    }

    /// A user message with `images` images followed by the text.
    pub fn user_with_images(images: usize, text: impl Into<String>) -> Self {
        let mut content = vec![Content::Image; images];
        content.push(Content::Text(text.into()));
        Self::new("user", content)
    }

    /// The number of image parts.
    pub fn num_images(&self) -> usize {
        self.content
            .iter()
            .filter(|c| matches!(c, Content::Image))
            .count()
    }
}

/// How message contents are handed to the template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentFormat {
    /// A list of `{"type": "text", "text": ...}` / `{"type": "image"}` parts (the
    /// multimodal templates of LLaVA processors).
    Parts,
    /// One string: the text parts concatenated, each image part written as the image token
    /// and a newline (text-only templates such as Mistral-Instruct's).
    String,
}

/// The templates used when a model folder has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultTemplate {
    /// llava-hf/llava-1.5-*-hf: `USER: <image>\n... ASSISTANT:` (roles upper-cased, each text
    /// part followed by a space, system messages rendered without a role).
    Llava15,
    /// llava-hf/llava-v1.6-vicuna-*-hf: like LLaVA 1.5, but a system message is written first
    /// as plain text.
    Vicuna,
    /// llava-hf/llava-v1.6-mistral-7b-hf: `[INST] <image>\n... [/INST]`, assistant turns end
    /// with `</s>`, a system message becomes a `<<SYS>>` block.
    Mistral,
}

/// The llava-1.5-hf template (`chat_template.json` of llava-hf/llava-1.5-7b-hf, written from
/// memory).
pub const LLAVA15_TEMPLATE: &str = "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}";

/// A Vicuna-style template for llava-v1.6-vicuna models: a system message's text first, then
/// `USER:` / `ASSISTANT:` turns like LLaVA 1.5 (reconstructed, not a verbatim copy of
/// llava-hf/llava-v1.6-vicuna-7b-hf's template).
pub const VICUNA_TEMPLATE: &str = "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'][0]['text'] + ' ' }}{% else %}{{ message['role'].upper() + ': '}}{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}";

/// The llava-v1.6-mistral-7b-hf template (written from memory).
pub const MISTRAL_TEMPLATE: &str = "{% for message in messages %}{% if message['role'] == 'system' %}{{ '<<SYS>>\n' + message['content'][0]['text'] + '\n<</SYS>>\n\n' }}{% elif message['role'] == 'user' %}{{ '[INST] ' }}{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render all text next #}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}{{' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'][0]['text'] + '</s> '}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

impl DefaultTemplate {
    /// The Jinja source.
    pub fn source(self) -> &'static str {
        match self {
            DefaultTemplate::Llava15 => LLAVA15_TEMPLATE,
            DefaultTemplate::Vicuna => VICUNA_TEMPLATE,
            DefaultTemplate::Mistral => MISTRAL_TEMPLATE,
        }
    }

    /// The default for a model `config.json`: `llava` → LLaVA 1.5; `llava_next` with a
    /// Mistral text model → Mistral, otherwise Vicuna.
    pub fn for_config(config: &serde_json::Value) -> Self {
        let model_type = config.get("model_type").and_then(|v| v.as_str());
        let text_type = config
            .get("text_config")
            .and_then(|t| t.get("model_type"))
            .and_then(|v| v.as_str());
        match (model_type, text_type) {
            (Some("llava_next"), Some("mistral")) => DefaultTemplate::Mistral,
            (Some("llava_next"), _) => DefaultTemplate::Vicuna,
            _ => DefaultTemplate::Llava15,
        }
    }
}

/// The tokens a template may reference.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// `bos_token`.
    pub bos_token: Option<String>,
    /// `eos_token`.
    pub eos_token: Option<String>,
    /// `unk_token`.
    pub unk_token: Option<String>,
    /// `pad_token`.
    pub pad_token: Option<String>,
}

impl SpecialTokens {
    /// The special tokens of a `tokenizer_config.json` (strings or `{"content": ...}` objects),
    /// completed from a `special_tokens_map.json` next to it.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let mut tokens = Self::default();
        for name in ["tokenizer_config.json", "special_tokens_map.json"] {
            let path = dir.join(name);
            if !path.is_file() {
                continue;
            }
            let json: serde_json::Value = mm_core::config::read_json(&path)?;
            let get = |key: &str| {
                let v = json.get(key)?;
                v.as_str()
                    .or_else(|| v.get("content").and_then(|c| c.as_str()))
                    .map(str::to_owned)
            };
            tokens.bos_token = tokens.bos_token.or_else(|| get("bos_token"));
            tokens.eos_token = tokens.eos_token.or_else(|| get("eos_token"));
            tokens.unk_token = tokens.unk_token.or_else(|| get("unk_token"));
            tokens.pad_token = tokens.pad_token.or_else(|| get("pad_token"));
        }
        Ok(tokens)
    }
}

/// A compiled chat template (cheap to clone: the compiled template is shared).
#[derive(Clone)]
pub struct ChatTemplate {
    source: String,
    env: Arc<Environment<'static>>,
    special: SpecialTokens,
    content_format: ContentFormat,
    image_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .field("special", &self.special)
            .field("content_format", &self.content_format)
            .finish()
    }
}

const TEMPLATE_NAME: &str = "chat";

type JResult<T> = std::result::Result<T, minijinja::Error>;

fn template_error(e: minijinja::Error) -> Error {
    // `raise_exception` errors carry the template's own message as their detail.
    let message = match (e.kind(), e.detail()) {
        (ErrorKind::InvalidOperation, Some(detail)) => detail.to_owned(),
        _ => {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            msg
        }
    };
    Error::Template(message)
}

/// Rewrites `{% generation %}` / `{% endgeneration %}` (a `transformers` extension marking
/// assistant text) to `{% if true %}` / `{% endif %}`, keeping whitespace control markers so
/// `trim_blocks` / `lstrip_blocks` act identically.
fn rewrite_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let trimmed = inner.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        let replacement = match trimmed {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => {
                let lead = &inner[..inner.len() - inner.trim_start_matches(['-', '+']).len()];
                let trail = &inner[inner.trim_end_matches(['-', '+']).len()..];
                out.push_str("{%");
                out.push_str(lead);
                out.push(' ');
                out.push_str(r);
                out.push(' ');
                out.push_str(trail);
                out.push_str("%}");
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Writes a JSON list or object the way Python's `json.dumps` lays it out: `, ` between items
/// without indent; with indent, `,` and each item on its own indented line.
fn write_items(
    (open, close): (char, char),
    items: &[Value],
    indent: Option<usize>,
    level: usize,
    out: &mut String,
    mut write: impl FnMut(&Value, &mut String) -> JResult<()>,
) -> JResult<()> {
    out.push(open);
    if items.is_empty() {
        out.push(close);
        return Ok(());
    }
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(if indent.is_some() { "," } else { ", " });
        }
        newline(out, level + 1);
        write(item, out)?;
    }
    newline(out, level);
    out.push(close);
    Ok(())
}

/// Python's `json.dumps(x, ensure_ascii=False, indent=indent)`.
fn python_json(
    value: &Value,
    indent: Option<usize>,
    level: usize,
    out: &mut String,
) -> JResult<()> {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if let Some(i) = value.as_i64().filter(|_| value.is_integer()) {
                out.push_str(&i.to_string());
            } else if let Ok(f) = f64::try_from(value.clone()) {
                if f.is_nan() {
                    out.push_str("NaN");
                } else if f.is_infinite() {
                    out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
                } else {
                    out.push_str(&format!("{f:?}"));
                }
            } else {
                out.push_str(&value.to_string());
            }
        }
        ValueKind::String => {
            let s = value.as_str().unwrap_or_default();
            let quoted = serde_json::to_string(s).map_err(|e| {
                minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}"))
            })?;
            out.push_str(&quoted);
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            write_items(('[', ']'), &items, indent, level, out, |item, out| {
                python_json(item, indent, level + 1, out)
            })?;
        }
        ValueKind::Map => {
            let keys: Vec<Value> = value.try_iter()?.collect();
            write_items(('{', '}'), &keys, indent, level, out, |key, out| {
                let key_str = match key.as_str() {
                    Some(s) => Value::from(s),
                    None => Value::from(key.to_string()),
                };
                python_json(&key_str, indent, level + 1, out)?;
                out.push_str(": ");
                python_json(&value.get_item(key)?, indent, level + 1, out)
            })?;
        }
        _ => {
            let quoted = serde_json::to_string(&value.to_string()).map_err(|e| {
                minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}"))
            })?;
            out.push_str(&quoted);
        }
    }
    Ok(())
}

fn tojson(value: &Value, kwargs: Kwargs) -> JResult<Value> {
    let indent: Option<Value> = kwargs.get("indent")?;
    // Accepted for compatibility with transformers' filter; the output is always
    // `ensure_ascii=False`, unsorted, with the default separators.
    for ignored in ["ensure_ascii", "separators", "sort_keys"] {
        let _: Option<Value> = kwargs.get(ignored)?;
    }
    kwargs.assert_all_used()?;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(usize::try_from(v)?),
    };
    let mut out = String::new();
    python_json(value, indent, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn strftime_now(format: &str) -> JResult<String> {
    use std::fmt::Write;
    let mut out = String::new();
    write!(out, "{}", chrono::Local::now().format(format)).map_err(|_| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: invalid format {format:?}"),
        )
    })?;
    Ok(out)
}

fn raise_exception(message: String) -> JResult<Value> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

/// A message as the template sees it.
#[derive(Serialize)]
struct TemplateMessage<'a> {
    role: &'a str,
    content: TemplateContent<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum TemplateContent<'a> {
    Parts(Vec<TemplatePart<'a>>),
    String(String),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum TemplatePart<'a> {
    Text { text: &'a str },
    Image,
}

impl ChatTemplate {
    /// Compiles a Jinja chat template (no special tokens; see [`ChatTemplate::with_special_tokens`]).
    ///
    /// The content format is [`ContentFormat::Parts`] when the template mentions a part's
    /// `type`, else [`ContentFormat::String`].
    pub fn new(source: impl Into<String>) -> Result<Self> {
        let source = source.into();
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(template_error)?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        minijinja_contrib::add_to_environment(&mut env);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME, rewrite_generation_tags(&source))
            .map_err(template_error)?;
        let content_format = if ["'type'", "\"type\"", ".type"]
            .iter()
            .any(|p| source.contains(p))
        {
            ContentFormat::Parts
        } else {
            ContentFormat::String
        };
        Ok(Self {
            source,
            env: Arc::new(env),
            special: SpecialTokens::default(),
            content_format,
            image_token: "<image>".into(),
        })
    }

    /// A built-in default template.
    pub fn builtin(which: DefaultTemplate) -> Self {
        // The built-in sources are fixed and compile.
        Self::new(which.source()).expect("built-in chat templates compile")
    }

    /// The template of a model folder, from the first of:
    ///
    /// 1. `chat_template.jinja`;
    /// 2. `chat_template.json` (`{"chat_template": "..."}`);
    /// 3. `tokenizer_config.json`'s `chat_template`: a string, or a list of
    ///    `{"name", "template"}` of which the one named `default` is used;
    /// 4. otherwise the [`DefaultTemplate`] for the folder's `config.json`
    ///    ([`DefaultTemplate::for_config`]; LLaVA 1.5 without a `config.json`).
    ///
    /// Special tokens come from `tokenizer_config.json` / `special_tokens_map.json`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_dir_named(dir, None)
    }

    /// Like [`ChatTemplate::from_dir`], choosing a named template (from a list of named
    /// templates in `tokenizer_config.json`) instead of `default`.
    pub fn from_dir_named(dir: impl AsRef<Path>, name: Option<&str>) -> Result<Self> {
        let dir = dir.as_ref();
        let source = match Self::source_in_dir(dir, name)? {
            Some(source) => source,
            None => {
                let config = dir.join("config.json");
                let which = if config.is_file() {
                    DefaultTemplate::for_config(&mm_core::config::read_json(&config)?)
                } else {
                    DefaultTemplate::Llava15
                };
                which.source().to_owned()
            }
        };
        Ok(Self::new(source)?.with_special_tokens(SpecialTokens::from_dir(dir)?))
    }

    fn source_in_dir(dir: &Path, name: Option<&str>) -> Result<Option<String>> {
        let jinja = dir.join("chat_template.jinja");
        if name.is_none() && jinja.is_file() {
            let text = std::fs::read_to_string(&jinja).map_err(|source| {
                Error::Core(mm_core::Error::Io {
                    path: jinja.clone(),
                    source,
                })
            })?;
            return Ok(Some(text));
        }
        for file in ["chat_template.json", "tokenizer_config.json"] {
            let path = dir.join(file);
            if !path.is_file() {
                continue;
            }
            let json: serde_json::Value = mm_core::config::read_json(&path)?;
            if let Some(t) = json.get("chat_template") {
                return Self::pick_template(t, name, &path).map(Some);
            }
        }
        Ok(None)
    }

    fn pick_template(value: &serde_json::Value, name: Option<&str>, path: &Path) -> Result<String> {
        let invalid = |m: String| Error::Template(format!("{}: chat_template {m}", path.display()));
        match value {
            serde_json::Value::String(s) if name.is_none() => Ok(s.clone()),
            serde_json::Value::String(_) => Err(invalid(format!(
                "is a single template; there is no template named {:?}",
                name.unwrap_or_default()
            ))),
            serde_json::Value::Array(items) => {
                let wanted = name.unwrap_or("default");
                let mut names = Vec::new();
                for item in items {
                    let n = item.get("name").and_then(|v| v.as_str());
                    let t = item.get("template").and_then(|v| v.as_str());
                    match (n, t) {
                        (Some(n), Some(t)) if n == wanted => return Ok(t.to_owned()),
                        (Some(n), Some(_)) => names.push(n.to_owned()),
                        _ => {
                            return Err(invalid(
                                "list items need \"name\" and \"template\"".into(),
                            ));
                        }
                    }
                }
                Err(invalid(format!(
                    "has no template named {wanted:?} (available: {})",
                    names.join(", ")
                )))
            }
            _ => Err(invalid(
                "must be a string or a list of named templates".into(),
            )),
        }
    }

    /// Sets the special tokens passed to the template.
    pub fn with_special_tokens(mut self, special: SpecialTokens) -> Self {
        self.special = special;
        self
    }

    /// Overrides the detected [`ContentFormat`].
    pub fn with_content_format(mut self, format: ContentFormat) -> Self {
        self.content_format = format;
        self
    }

    /// Sets the image token written for image parts in [`ContentFormat::String`] (default
    /// `<image>`).
    pub fn with_image_token(mut self, token: impl Into<String>) -> Self {
        self.image_token = token.into();
        self
    }

    /// The Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The content format in use.
    pub fn content_format(&self) -> ContentFormat {
        self.content_format
    }

    /// The special tokens passed to the template.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// Renders a conversation. An empty conversation is an [`Error::EmptyPrompt`]; a template
    /// that fails (e.g. `raise_exception` on an unsupported role) is an [`Error::Template`]
    /// with the template's message.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let converted: Vec<TemplateMessage<'_>> = messages
            .iter()
            .map(|m| TemplateMessage {
                role: &m.role,
                content: match self.content_format {
                    ContentFormat::Parts => TemplateContent::Parts(
                        m.content
                            .iter()
                            .map(|c| match c {
                                Content::Text(text) => TemplatePart::Text { text },
                                Content::Image => TemplatePart::Image,
                            })
                            .collect(),
                    ),
                    ContentFormat::String => TemplateContent::String(
                        m.content
                            .iter()
                            .map(|c| match c {
                                Content::Text(t) => t.clone(),
                                Content::Image => format!("{}\n", self.image_token),
                            })
                            .collect(),
                    ),
                },
            })
            .collect();
        self.render_value(
            Value::from(Serde(&converted)),
            messages.len(),
            add_generation_prompt,
        )
    }

    /// Renders messages given as JSON (e.g. the `messages` of a Python call), passed to the
    /// template as they are.
    pub fn render_json(
        &self,
        messages: &serde_json::Value,
        add_generation_prompt: bool,
    ) -> Result<String> {
        let len = messages.as_array().map_or(0, Vec::len);
        self.render_value(Value::from(Serde(messages)), len, add_generation_prompt)
    }

    fn render_value(
        &self,
        messages: Value,
        len: usize,
        add_generation_prompt: bool,
    ) -> Result<String> {
        if len == 0 {
            return Err(Error::EmptyPrompt);
        }
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(template_error)?;
        let opt = |t: &Option<String>| t.as_deref().map(Value::from).unwrap_or(Value::UNDEFINED);
        let ctx = minijinja::context! {
            messages => messages,
            // transformers passes these as None when the caller gives none.
            tools => Value::from(()),
            documents => Value::from(()),
            add_generation_prompt => add_generation_prompt,
            bos_token => opt(&self.special.bos_token),
            eos_token => opt(&self.special.eos_token),
            unk_token => opt(&self.special.unk_token),
            pad_token => opt(&self.special.pad_token),
        };
        tmpl.render(ctx).map_err(template_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_tags_rewritten() {
        assert_eq!(
            rewrite_generation_tags("a{% generation %}b{%- endgeneration -%}c{% if x %}"),
            "a{% if true %}b{%- endif -%}c{% if x %}"
        );
    }

    #[test]
    fn builtins_render() {
        let t = ChatTemplate::builtin(DefaultTemplate::Llava15);
        let p = t
            .render(&[ChatMessage::user_with_images(1, "What is this?")], true)
            .unwrap();
        assert_eq!(p, "USER: <image>\nWhat is this? ASSISTANT:");
        let t = ChatTemplate::builtin(DefaultTemplate::Mistral);
        let p = t
            .render(&[ChatMessage::user_with_images(1, "Hi")], true)
            .unwrap();
        assert_eq!(p, "[INST] <image>\nHi [/INST]");
        let err = t
            .render(&[ChatMessage::text("tool", "x")], false)
            .unwrap_err();
        assert!(
            matches!(err, Error::Template(ref m) if m == "Only user and assistant roles are supported!"),
            "{err}"
        );
        assert!(matches!(t.render(&[], true), Err(Error::EmptyPrompt)));
    }

    #[test]
    fn string_content_format() {
        let t = ChatTemplate::new("{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
            .unwrap()
            .with_image_token("<img>");
        assert_eq!(t.content_format(), ContentFormat::String);
        let out = t
            .render(&[ChatMessage::user_with_images(2, "Hi")], false)
            .unwrap();
        assert_eq!(out, "[<img>\n<img>\nHi]");
        let parts = t.with_content_format(ContentFormat::Parts);
        let out = parts
            .render(&[ChatMessage::text("user", "Hi")], false)
            .unwrap();
        assert_eq!(out, "[[{'type': 'text', 'text': 'Hi'}]]");
    }

    #[test]
    fn tojson_like_python() {
        let t = ChatTemplate::new("{{ x | tojson }}|{{ x | tojson(indent=2) }}").unwrap();
        let env_t = t.env.get_template(TEMPLATE_NAME).unwrap();
        let out = env_t
            .render(minijinja::context! { x => Value::from(Serde(serde_json::json!({"a": [1, 2.5, 2.0, "é\n"], "b": {}}))) })
            .unwrap();
        assert_eq!(
            out,
            "{\"a\": [1, 2.5, 2.0, \"é\\n\"], \"b\": {}}|{\n  \"a\": [\n    1,\n    2.5,\n    2.0,\n    \"é\\n\"\n  ],\n  \"b\": {}\n}"
        );
    }
}
