//! Rotary position embeddings over several axes, as FLUX.1 uses them (diffusers'
//! `FluxPosEmbed` and `apply_rotary_emb` with interleaved real/imaginary pairs): each token has
//! integer coordinates on every axis (FLUX: text index, image row, image column), each axis
//! rotates its own slice of a head's features.

use burn::tensor::{Device, Tensor, TensorData};

/// The cosines and sines of a token sequence's rotations, `[tokens, head_dim]` each.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor<2>,
    sin: Tensor<2>,
}

impl Rope {
    /// The rotations of tokens with coordinates `ids` (`tokens × axes` values, row-major) for
    /// heads of `axes_dim.iter().sum()` features: axis `a` takes `axes_dim[a]` features, pairs
    /// `(2i, 2i + 1)` rotated by `pos · θ^(-2i / axes_dim[a])` (f64 as diffusers computes them,
    /// then f32).
    pub fn new(ids: &[f32], axes_dim: &[usize], theta: f64, device: &Device) -> Self {
        let dim: usize = axes_dim.iter().sum();
        let axes = axes_dim.len().max(1);
        let tokens = ids.len() / axes;
        let mut cos = Vec::with_capacity(tokens * dim);
        let mut sin = Vec::with_capacity(tokens * dim);
        for row in ids.chunks_exact(axes) {
            for (&axis_dim, &pos) in axes_dim.iter().zip(row) {
                let pos = f64::from(pos);
                for i in 0..axis_dim / 2 {
                    let freq = 1.0 / theta.powf((2 * i) as f64 / axis_dim as f64);
                    let (s, c) = (pos * freq).sin_cos();
                    cos.extend([c as f32; 2]);
                    sin.extend([s as f32; 2]);
                }
            }
        }
        let shape = [tokens, dim];
        Self {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
        }
    }

    /// The rotations of these tokens followed by those of `other`'s.
    pub fn concat(&self, other: &Rope) -> Self {
        Self {
            cos: Tensor::cat(vec![self.cos.clone(), other.cos.clone()], 0),
            sin: Tensor::cat(vec![self.sin.clone(), other.sin.clone()], 0),
        }
    }

    /// Rotates `x` (`[batch, heads, tokens, head_dim]`, the tokens in this embedding's order):
    /// `x · cos + rot(x) · sin` with `rot(x)` mapping each pair `(a, b)` to `(-b, a)`.
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, h, s, d] = x.dims();
        let dtype = x.dtype();
        let pairs = x.clone().reshape([b, h, s, d / 2, 2]);
        let (real, imag) = (pairs.clone().narrow(4, 0, 1), pairs.narrow(4, 1, 1));
        let rotated = Tensor::cat(vec![imag.neg(), real], 4).reshape([b, h, s, d]);
        let cos = self.cos.clone().cast(dtype).reshape([1, 1, s, d]);
        let sin = self.sin.clone().cast(dtype).reshape([1, 1, s, d]);
        x * cos + rotated * sin
    }
}
