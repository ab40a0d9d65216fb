//! Checkpoints stored in half precision or split into shards load into the same model.

mod common;

use std::path::PathBuf;

use common::{Expected, device, fixture};
use mm_core::weights::Weights;
use mm_vision::Pretrained;
use mm_vision::clip::ClipModel;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

const NAME: &str = "clip-tiny-quickgelu";

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mm-weights-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture(NAME).join("config.json"), dir.join("config.json")).unwrap();
    dir
}

/// The fixture's tensors as (name, dtype, shape, bytes), converted by `convert`.
fn tensors(
    convert: impl Fn(&[u8]) -> (Dtype, Vec<u8>),
) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(fixture(NAME).join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let (dtype, data) = convert(view.data());
            (name, dtype, view.shape().to_vec(), data)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn write(path: PathBuf, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
}

fn logits(dir: &std::path::Path) -> burn::tensor::Tensor<2> {
    let model = ClipModel::load(dir.to_str().unwrap(), &device()).unwrap();
    let exp = Expected::open(NAME);
    model
        .forward(
            exp.int::<2>("input_ids"),
            Some(exp.int::<2>("attention_mask")),
            exp.float::<4>("pixel_values"),
        )
        .unwrap()
        .logits_per_image
}

#[test]
fn f16_and_bf16_checkpoints_are_cast_to_f32() {
    let exp = Expected::open(NAME);
    for (tag, dtype) in [("f16", Dtype::F16), ("bf16", Dtype::BF16)] {
        let dir = scratch(tag);
        let converted = tensors(|b| {
            let data = f32s(b)
                .flat_map(|x| match dtype {
                    Dtype::F16 => half::f16::from_f32(x).to_le_bytes(),
                    _ => half::bf16::from_f32(x).to_le_bytes(),
                })
                .collect();
            (dtype, data)
        });
        write(dir.join("model.safetensors"), &converted);
        let weights = Weights::open(&dir).unwrap();
        assert_eq!(weights.stored_dtype("logit_scale"), Some(dtype_of(dtype)));
        // Half-precision weights: the logits agree to the precision of the storage.
        let tol = if dtype == Dtype::F16 { 1e-2 } else { 5e-2 };
        exp.check("logits_per_image", logits(&dir), tol);
    }
}

fn dtype_of(dtype: Dtype) -> burn::tensor::DType {
    match dtype {
        Dtype::F16 => burn::tensor::DType::F16,
        _ => burn::tensor::DType::BF16,
    }
}

#[test]
fn sharded_checkpoint_loads_through_its_index() {
    let dir = scratch("sharded");
    let all = tensors(|b| (Dtype::F32, b.to_vec()));
    let (first, second) = all.split_at(all.len() / 2);
    write(dir.join("model-00001-of-00002.safetensors"), first);
    write(dir.join("model-00002-of-00002.safetensors"), second);
    let weight_map: serde_json::Map<String, serde_json::Value> = first
        .iter()
        .map(|t| (t.0.clone(), "model-00001-of-00002.safetensors".into()))
        .chain(
            second
                .iter()
                .map(|t| (t.0.clone(), "model-00002-of-00002.safetensors".into())),
        )
        .collect();
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();

    assert_eq!(Weights::open(&dir).unwrap().len(), all.len());
    Expected::open(NAME).check("logits_per_image", logits(&dir), 1e-4);

    // A shard named by the index but absent is a clear error.
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let err = Weights::open(&dir).unwrap_err().to_string();
    assert!(err.contains("model-00002-of-00002.safetensors"), "{err}");
}
