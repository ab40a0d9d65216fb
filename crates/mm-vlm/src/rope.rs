//! Rotary position embeddings as transformers computes them (`default`, `linear`, `dynamic`
//! NTK and `llama3` frequency scaling).

use burn::tensor::{Device, Tensor, TensorData};

use crate::config::TextConfig;

/// The inverse frequencies of one model and the rule to rescale them.
#[derive(Debug, Clone)]
pub struct Rope {
    head_dim: usize,
    theta: f64,
    kind: RopeKind,
    max_positions: usize,
    /// The frequencies for sequences within `max_position_embeddings`.
    inv_freq: Vec<f64>,
}

#[derive(Debug, Clone, Copy)]
enum RopeKind {
    Fixed,
    Dynamic { factor: f64 },
}

impl Rope {
    /// Builds the frequencies from a validated config (see [`TextConfig::validate`]).
    pub fn new(config: &TextConfig) -> Self {
        let rope = config.rope();
        let head_dim = config.head_size();
        let theta = rope.rope_theta.unwrap_or(10000.0);
        let base = inv_freq(theta, head_dim);
        let factor = rope.factor.unwrap_or(1.0);
        let (kind, inv) = match rope.rope_type.as_str() {
            "linear" => (RopeKind::Fixed, base.iter().map(|f| f / factor).collect()),
            "dynamic" => (RopeKind::Dynamic { factor }, base),
            "llama3" => (
                RopeKind::Fixed,
                llama3(
                    &base,
                    factor,
                    rope.low_freq_factor.unwrap_or(1.0),
                    rope.high_freq_factor.unwrap_or(4.0),
                    rope.original_max_position_embeddings.unwrap_or(8192) as f64,
                ),
            ),
            _ => (RopeKind::Fixed, base),
        };
        Self {
            head_dim,
            theta,
            kind,
            max_positions: config.max_position_embeddings,
            inv_freq: inv,
        }
    }

    /// Whether positions past `max_position_embeddings` are meant to be used (dynamic NTK
    /// scaling stretches the frequencies for them).
    pub fn extrapolates(&self) -> bool {
        matches!(self.kind, RopeKind::Dynamic { .. })
    }

    /// The frequencies used when the largest position in the batch is `max_pos`
    /// (dynamic NTK stretches the base past `max_position_embeddings`).
    fn frequencies(&self, max_pos: usize) -> Vec<f32> {
        let seq_len = max_pos + 1;
        match self.kind {
            RopeKind::Dynamic { factor } if seq_len > self.max_positions => {
                let dim = self.head_dim as f64;
                let base = self.theta
                    * ((factor * seq_len as f64 / self.max_positions as f64) - (factor - 1.0))
                        .powf(dim / (dim - 2.0));
                inv_freq(base, self.head_dim)
                    .into_iter()
                    .map(|f| f as f32)
                    .collect()
            }
            _ => self.inv_freq.iter().map(|&f| f as f32).collect(),
        }
    }

    /// `cos` and `sin` tables `[batch, 1, seq, head_dim]` for per-row positions.
    pub fn tables(&self, positions: &[Vec<usize>], device: &Device) -> (Tensor<4>, Tensor<4>) {
        let batch = positions.len();
        let seq = positions.first().map_or(0, Vec::len);
        let max_pos = positions.iter().flatten().copied().max().unwrap_or(0);
        let freqs = self.frequencies(max_pos);
        let d = self.head_dim;
        let mut cos = Vec::with_capacity(batch * seq * d);
        let mut sin = Vec::with_capacity(batch * seq * d);
        for row in positions {
            for &p in row {
                for _ in 0..2 {
                    for f in &freqs {
                        let angle = f * p as f32;
                        cos.push(angle.cos());
                        sin.push(angle.sin());
                    }
                }
            }
        }
        let shape = [batch, 1, seq, d];
        (
            Tensor::from_data(TensorData::new(cos, shape), device),
            Tensor::from_data(TensorData::new(sin, shape), device),
        )
    }
}

/// Rotates `[batch, heads, seq, head_dim]` by the tables: `x cos + rotate_half(x) sin`.
pub fn apply(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let d = x.dims()[3];
    let x1 = x.clone().narrow(3, 0, d / 2);
    let x2 = x.clone().narrow(3, d / 2, d / 2);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}

fn inv_freq(base: f64, dim: usize) -> Vec<f64> {
    (0..dim)
        .step_by(2)
        .map(|i| 1.0 / base.powf(i as f64 / dim as f64))
        .collect()
}

fn llama3(base: &[f64], factor: f64, low: f64, high: f64, old_context: f64) -> Vec<f64> {
    let low_wavelen = old_context / low;
    let high_wavelen = old_context / high;
    base.iter()
        .map(|&f| {
            let wavelen = 2.0 * std::f64::consts::PI / f;
            if wavelen < high_wavelen {
                f
            } else if wavelen > low_wavelen {
                f / factor
            } else {
                let smooth = (old_context / wavelen - low) / (high - low);
                (1.0 - smooth) * f / factor + smooth * f
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_keeps_high_and_divides_low_frequencies() {
        let base = inv_freq(500000.0, 128);
        let scaled = llama3(&base, 8.0, 1.0, 4.0, 8192.0);
        assert_eq!(scaled[0], base[0]);
        let last = base.len() - 1;
        assert!((scaled[last] - base[last] / 8.0).abs() < 1e-15);
    }

    #[test]
    fn dynamic_changes_only_past_the_limit() {
        let mut config = TextConfig {
            hidden_size: 64,
            num_attention_heads: 4,
            max_position_embeddings: 32,
            ..TextConfig::llama()
        };
        config.rope_scaling = Some(crate::config::RopeScaling {
            rope_type: "dynamic".into(),
            rope_theta: None,
            factor: Some(2.0),
            low_freq_factor: None,
            high_freq_factor: None,
            original_max_position_embeddings: None,
        });
        let rope = Rope::new(&config);
        assert_eq!(rope.frequencies(10), rope.frequencies(31));
        assert_ne!(rope.frequencies(10)[1], rope.frequencies(40)[1]);
    }
}
