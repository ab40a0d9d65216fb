//! f32 tensors of the flex backend read where they lie, for the CPU kernels.
//!
//! `Tensor::into_data` copies a tensor that is shared (a clone kept for a residual) or not
//! contiguous (a head-split view) — on burn-flex twice, the second time to realign the bytes.
//! The kernels read the storage through the layout instead.

use burn::tensor::{DType, Tensor, TensorData};
use burn_flex::{Flex, FlexTensor};

/// An f32 tensor of the flex device, with its element strides (none negative) and offset.
pub(crate) struct View<const D: usize> {
    t: FlexTensor,
    strides: [usize; D],
    offset: usize,
}

impl<const D: usize> View<D> {
    /// The view of `t`; `None` when it is not an f32 tensor of the flex device or a stride is
    /// negative.
    pub fn new(t: Tensor<D>) -> Option<Self> {
        let t = t.try_into_primitive::<Flex>().ok()?;
        if t.dtype() != DType::F32 {
            return None;
        }
        let layout = t.layout();
        let strides: Vec<usize> = (layout.strides().iter())
            .map(|&s| usize::try_from(s).ok())
            .collect::<Option<_>>()?;
        let offset = layout.start_offset();
        Some(Self {
            strides: strides.try_into().ok()?,
            offset,
            t,
        })
    }

    /// The element strides.
    pub fn strides(&self) -> [usize; D] {
        self.strides
    }

    /// The storage from the first element on.
    pub fn data(&self) -> &[f32] {
        &self.t.storage::<f32>()[self.offset..]
    }

    /// The values in row-major order, when the view is contiguous.
    pub fn contiguous(&self) -> Option<&[f32]> {
        let (start, end) = self.t.layout().contiguous_offsets()?;
        Some(&self.t.storage::<f32>()[start..end])
    }
}

/// The row-major f32 values of a tensor: read in place when it is a contiguous f32 tensor of
/// the flex device, copied out otherwise.
pub(crate) enum Values<const D: usize> {
    InPlace(View<D>),
    Copied(TensorData),
}

impl<const D: usize> Values<D> {
    /// The values of `t`, an f32 tensor.
    pub fn new(t: Tensor<D>) -> Self {
        match View::new(t.clone()) {
            Some(view) if view.contiguous().is_some() => Self::InPlace(view),
            _ => Self::Copied(t.cast(DType::F32).into_data()),
        }
    }

    /// The values.
    pub fn as_slice(&self) -> &[f32] {
        match self {
            Self::InPlace(view) => view.contiguous().expect("checked contiguous"),
            Self::Copied(data) => data.as_slice().expect("f32 values"),
        }
    }
}
