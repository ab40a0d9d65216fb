//! IP-Adapter scales per adapter, per block and per transformer (diffusers'
//! `set_ip_adapter_scale`, including InstantStyle's per-block form).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Result;
use crate::unet::UNet2DConditionModel;

/// How strongly one IP-Adapter acts: diffusers' `set_ip_adapter_scale` config of one adapter.
///
/// In JSON as diffusers takes it: a number (every cross-attention), or InstantStyle's
/// per-block dict, e.g. `{"down": {"block_2": [0.0, 1.0]}, "up": {"block_0": [0.0, 1.0,
/// 0.0]}}` (SDXL's layout and style blocks: the second transformer of down block 2 and of up
/// block 0).
///
/// ```
/// use mm_diffusion::ip_adapter::{BlockScales, IpAdapterScale};
/// let style = IpAdapterScale::Blocks(
///     BlockScales::default().down(2, [0.0, 1.0]).up(0, [0.0, 1.0, 0.0]),
/// );
/// let json = r#"{"down": {"block_2": [0.0, 1.0]}, "up": {"block_0": [0.0, 1.0, 0.0]}}"#;
/// assert_eq!(IpAdapterScale::parse(json).unwrap(), vec![style]);
/// assert_eq!(IpAdapterScale::parse("[0.6, 1]").unwrap().len(), 2); // one per adapter
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IpAdapterScale {
    /// The same scale in every cross-attention.
    Uniform(f64),
    /// Per block (the blocks not named get 0).
    Blocks(BlockScales),
}

/// Per-block scales of one adapter; every block not named gets 0, as in diffusers. In JSON a
/// dict with the keys `"down"`, `"mid"` and `"up"` (only a dict: serde's list form of a struct
/// is refused, so that a list of numbers is always one scale per adapter).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BlockScales {
    /// The down blocks with transformers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<LevelScales>,
    /// The middle block (one transformer: a number, or a list of one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<BlockScale>,
    /// The up blocks with transformers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up: Option<LevelScales>,
}

impl<'de> Deserialize<'de> for BlockScales {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Fields {
            #[serde(default)]
            down: Option<LevelScales>,
            #[serde(default)]
            mid: Option<BlockScale>,
            #[serde(default)]
            up: Option<LevelScales>,
        }
        struct DictOnly;
        impl<'de> serde::de::Visitor<'de> for DictOnly {
            type Value = BlockScales;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a dict of \"down\", \"mid\" and \"up\" scales")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<BlockScales, A::Error> {
                let fields =
                    Fields::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(BlockScales {
                    down: fields.down,
                    mid: fields.mid,
                    up: fields.up,
                })
            }
        }
        deserializer.deserialize_map(DictOnly)
    }
}

impl BlockScales {
    /// Sets down block `block`'s scales, one per transformer (`Transformer2DModel`) or a
    /// list of one for all of them.
    pub fn down(mut self, block: usize, scales: impl Into<Vec<f64>>) -> Self {
        self.down = Some(Self::with_block(self.down.take(), block, scales.into()));
        self
    }

    /// Sets up block `block`'s scales (see [`BlockScales::down`]).
    pub fn up(mut self, block: usize, scales: impl Into<Vec<f64>>) -> Self {
        self.up = Some(Self::with_block(self.up.take(), block, scales.into()));
        self
    }

    /// Sets the middle block's scale.
    pub fn mid(mut self, scale: f64) -> Self {
        self.mid = Some(BlockScale::Uniform(scale));
        self
    }

    fn with_block(level: Option<LevelScales>, block: usize, scales: Vec<f64>) -> LevelScales {
        let mut blocks = match level {
            Some(LevelScales::PerBlock(blocks)) => blocks,
            _ => BTreeMap::new(),
        };
        blocks.insert(block, BlockScale::PerTransformer(scales));
        LevelScales::PerBlock(blocks)
    }
}

/// The scales of the down or the up blocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LevelScales {
    /// Per block index (`{"block_1": …}`); the blocks not named get 0.
    PerBlock(#[serde(with = "block_keys")] BTreeMap<usize, BlockScale>),
    /// The same for every block with transformers.
    Every(BlockScale),
}

/// The scales of one block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BlockScale {
    /// One scale for all its transformers.
    Uniform(f64),
    /// One scale per transformer (`Transformer2DModel`) in order, or a list of one for all.
    PerTransformer(Vec<f64>),
}

/// An IP-Adapter scale config that does not fit the UNet (diffusers raises `ValueError`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ScaleError {
    /// The JSON is not a scale config.
    #[error("cannot parse IP-Adapter scales: {0}")]
    Parse(String),
    /// Not one config per loaded adapter.
    #[error("{configs} scale configs for {adapters} loaded IP-Adapters")]
    AdapterCount {
        /// Configs given.
        configs: usize,
        /// Adapters loaded.
        adapters: usize,
    },
    /// A list of scales of the wrong length.
    #[error("expected {expected} scales for {block}, got {got}")]
    Count {
        /// The block (`up.block_1`, `mid`).
        block: String,
        /// Its transformers.
        expected: usize,
        /// Scales given.
        got: usize,
    },
    /// A block that does not exist or has no transformers (diffusers ignores such down/up
    /// blocks; they are refused here so that a config written for another UNet shows).
    #[error("{block} does not exist in this UNet or has no attentions")]
    UnknownBlock {
        /// The block (`down.block_3`, `mid`).
        block: String,
    },
    /// A NaN or infinite scale.
    #[error("scale {value} of {block} is not finite")]
    NotFinite {
        /// Where it was given.
        block: String,
        /// The value.
        value: f64,
    },
}

impl IpAdapterScale {
    /// Parses diffusers' `set_ip_adapter_scale` argument from JSON: one config (a number or a
    /// per-block dict) or a list of them, one per adapter.
    pub fn parse(json: &str) -> Result<Vec<Self>> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(IpAdapterScale),
            Many(Vec<IpAdapterScale>),
        }
        match serde_json::from_str(json) {
            Ok(OneOrMany::One(scale)) => Ok(vec![scale]),
            Ok(OneOrMany::Many(scales)) => Ok(scales),
            Err(e) => Err(ScaleError::Parse(format!(
                "{e}; expected a number, a dict of \"down\"/\"mid\"/\"up\" scales, or a list \
                 of them (one per adapter)"
            ))
            .into()),
        }
    }

    /// `(module path prefix, scale)` rules in the order diffusers applies them (`mid`, the up
    /// blocks, the down blocks: `_maybe_expand_lora_scales` with default 0); a cross-attention
    /// takes the last rule its path starts with.
    fn rules(&self, layout: &Layout) -> Result<Vec<(String, f64)>, ScaleError> {
        let blocks = match self {
            IpAdapterScale::Uniform(scale) => {
                check_finite("every block", *scale)?;
                return Ok(vec![(String::new(), *scale)]);
            }
            IpAdapterScale::Blocks(blocks) => blocks,
        };
        let mid = match &blocks.mid {
            None => 0.0,
            Some(BlockScale::Uniform(scale)) => *scale,
            Some(BlockScale::PerTransformer(list)) => match list.as_slice() {
                [scale] => *scale,
                _ => {
                    return Err(ScaleError::Count {
                        block: "mid".into(),
                        expected: 1,
                        got: list.len(),
                    });
                }
            },
        };
        check_finite("mid", mid)?;
        let mut rules = vec![("mid_block.attentions.0".to_string(), mid)];
        for (name, level, present) in [
            ("up", &blocks.up, &layout.up),
            ("down", &blocks.down, &layout.down),
        ] {
            if let Some(LevelScales::PerBlock(named)) = level
                && let Some(block) = named.keys().find(|i| !present.contains_key(i))
            {
                return Err(ScaleError::UnknownBlock {
                    block: format!("{name}.block_{block}"),
                });
            }
            for (&i, &transformers) in present {
                let block = format!("{name}.block_{i}");
                let scale = match level {
                    None => None,
                    Some(LevelScales::Every(scale)) => Some(scale),
                    Some(LevelScales::PerBlock(named)) => named.get(&i),
                };
                let scales = match scale {
                    None => vec![0.0; transformers],
                    Some(BlockScale::Uniform(s)) => vec![*s; transformers],
                    Some(BlockScale::PerTransformer(list)) if list.len() == 1 => {
                        vec![list[0]; transformers]
                    }
                    Some(BlockScale::PerTransformer(list)) if list.len() == transformers => {
                        list.clone()
                    }
                    Some(BlockScale::PerTransformer(list)) => {
                        return Err(ScaleError::Count {
                            block,
                            expected: transformers,
                            got: list.len(),
                        });
                    }
                };
                for (t, scale) in scales.into_iter().enumerate() {
                    check_finite(&block, scale)?;
                    rules.push((format!("{name}_blocks.{i}.attentions.{t}"), scale));
                }
            }
        }
        if !layout.mid {
            return Err(ScaleError::UnknownBlock {
                block: "mid".into(),
            });
        }
        Ok(rules)
    }
}

fn check_finite(block: &str, value: f64) -> Result<(), ScaleError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(ScaleError::NotFinite {
            block: block.into(),
            value,
        })
    }
}

/// The blocks with transformers (index → number of transformers) and whether the middle
/// block has one: what the block names of a [`BlockScales`] may refer to.
struct Layout {
    down: BTreeMap<usize, usize>,
    up: BTreeMap<usize, usize>,
    mid: bool,
}

impl Layout {
    fn of(unet: &UNet2DConditionModel) -> Self {
        fn with_transformers(counts: impl Iterator<Item = usize>) -> BTreeMap<usize, usize> {
            counts.enumerate().filter(|&(_, n)| n > 0).collect()
        }
        Self {
            down: with_transformers(unet.down_blocks.iter().map(|b| b.attentions.len())),
            up: with_transformers(unet.up_blocks.iter().map(|b| b.attentions.len())),
            mid: (unet.mid_block.as_ref()).is_some_and(|b| !b.attentions.is_empty()),
        }
    }
}

impl UNet2DConditionModel {
    /// Sets the scales of the loaded IP-Adapters, one config per adapter, as diffusers'
    /// `set_ip_adapter_scale` does: a number sets every cross-attention; a [`BlockScales`]
    /// sets the named blocks (`"mid"`, `"down"` / `"up"` as a whole or `"block_i"`, each as
    /// a number or one scale per transformer) and 0 everywhere else. After loading, every
    /// scale is 1.
    ///
    /// Fails with [`Error::IpAdapterScale`](crate::Error::IpAdapterScale) (the model
    /// unchanged) when the number of configs is not the number of adapters, a list has the
    /// wrong length, a scale is not finite, or a named block does not exist or has no
    /// transformers. Unlike diffusers, which ignores
    /// the latter, this also refuses a `"down"`/`"up"` block without transformers, so that a
    /// config written for another UNet (SDXL's `"up": {"block_0": …}` on SD 1.5, whose up
    /// block 0 has none) does not silently do nothing.
    pub fn set_ip_adapter_scale(&mut self, scales: &[IpAdapterScale]) -> Result<()> {
        // (attention processor name, current scale of each adapter) of every cross-attention.
        let layers: Vec<(String, Option<Vec<f64>>)> = (self.named_transformer_blocks())
            .into_iter()
            .map(|(name, block)| {
                let current = (block.attn2.ip_adapter.as_ref()).map(|ip| ip.scales().to_vec());
                (format!("{name}.attn2.processor"), current)
            })
            .collect();
        let adapters = layers
            .iter()
            .find_map(|(_, s)| s.as_ref())
            .map_or(0, Vec::len);
        if scales.len() != adapters {
            return Err(ScaleError::AdapterCount {
                configs: scales.len(),
                adapters,
            }
            .into());
        }
        let layout = Layout::of(self);
        let rules = (scales.iter())
            .map(|scale| scale.rules(&layout))
            .collect::<Result<Vec<_>, _>>()?;
        let updated = layers.into_iter().map(|(name, current)| {
            let mut current = current?;
            for (value, rules) in current.iter_mut().zip(&rules) {
                // diffusers applies every matching rule in turn: the last one wins.
                let matching = rules
                    .iter()
                    .rev()
                    .find(|(prefix, _)| name.starts_with(prefix));
                if let Some((_, scale)) = matching {
                    *value = *scale;
                }
            }
            Some(current)
        });
        for (block, scales) in self.transformer_blocks_mut().zip(updated) {
            if let (Some(ip), Some(scales)) = (&mut block.attn2.ip_adapter, scales) {
                ip.set_scales(scales);
            }
        }
        Ok(())
    }
}

/// `{"block_1": …}` keys as block indices.
mod block_keys {
    use super::*;

    pub fn serialize<S: Serializer>(
        blocks: &BTreeMap<usize, BlockScale>,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        let named: BTreeMap<String, &BlockScale> = blocks
            .iter()
            .map(|(i, s)| (format!("block_{i}"), s))
            .collect();
        named.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<BTreeMap<usize, BlockScale>, D::Error> {
        let named = BTreeMap::<String, BlockScale>::deserialize(deserializer)?;
        named
            .into_iter()
            .map(|(key, scale)| {
                let index = key.strip_prefix("block_").and_then(|i| i.parse().ok());
                index.map(|i| (i, scale)).ok_or_else(|| {
                    serde::de::Error::custom(format!("unknown block `{key}` (expected block_<i>)"))
                })
            })
            .collect()
    }
}
