//! The GGUF reader against the `gguf` Python package (`tools/reference/gen_gguf.py`): header,
//! tensor table and metadata as its GGUFReader reads them, dequantization bit-exact with
//! `gguf.quants.dequantize` for every type, quantization equal to `gguf.quants.quantize`,
//! typed errors for malformed files, and GGUF files loaded through `Weights`.

use std::path::{Path, PathBuf};

use burn::nn::{Linear, LinearConfig};
use burn::tensor::{DType, Tensor};
use mm_core::Error;
use mm_core::gguf::{
    GgmlType, GgufError, GgufFile, MetadataValue, QuantizedMatrix, Section, ValueType, dequantize,
    quantize,
};
use mm_core::weights::Weights;
use safetensors::SafeTensors;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gguf")
}

fn types() -> GgufFile {
    GgufFile::open(fixtures().join("types.gguf")).unwrap()
}

fn manifest() -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("types.json")).unwrap()).unwrap()
}

/// The float32 tensors of `types.safetensors`: `gguf.quants.dequantize` of every tensor, and
/// the inputs of the quantized ones.
fn expected() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(fixtures().join("types.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (name, view.shape().to_vec(), values)
        })
        .collect()
}

fn expected_values(name: &str) -> Vec<f32> {
    expected().into_iter().find(|(n, ..)| n == name).unwrap().2
}

fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|v| v.to_bits()).collect()
}

/// The error of opening a fixture that must fail.
fn open_error(path: PathBuf) -> GgufError {
    match GgufFile::open(&path) {
        Err(Error::Gguf { path: p, kind }) => {
            assert_eq!(p, path);
            kind
        }
        other => panic!("{}: expected a GGUF error, got {other:?}", path.display()),
    }
}

/// Whether a metadata value equals the manifest's JSON value.
fn same_value(value: &MetadataValue, json: &Value) -> bool {
    match value {
        MetadataValue::String(s) => json.as_str() == Some(s),
        MetadataValue::Bool(b) => json.as_bool() == Some(*b),
        MetadataValue::F32(_) | MetadataValue::F64(_) => value.as_f64() == json.as_f64(),
        MetadataValue::Array { values, .. } => json.as_array().is_some_and(|items| {
            items.len() == values.len() && values.iter().zip(items).all(|(v, j)| same_value(v, j))
        }),
        _ => match (value.as_i64(), value.as_u64()) {
            (Some(i), _) if json.as_i64() == Some(i) => true,
            (_, Some(u)) => json.as_u64() == Some(u),
            _ => false,
        },
    }
}

/// The GGUF value type name of the Python package (`UINT8`, …).
fn type_name(ty: ValueType) -> &'static str {
    match ty {
        ValueType::U8 => "UINT8",
        ValueType::I8 => "INT8",
        ValueType::U16 => "UINT16",
        ValueType::I16 => "INT16",
        ValueType::U32 => "UINT32",
        ValueType::I32 => "INT32",
        ValueType::F32 => "FLOAT32",
        ValueType::Bool => "BOOL",
        ValueType::String => "STRING",
        ValueType::Array => "ARRAY",
        ValueType::U64 => "UINT64",
        ValueType::I64 => "INT64",
        ValueType::F64 => "FLOAT64",
        _ => "?",
    }
}

#[test]
fn header_and_tensor_table_match_gguf_reader() {
    let file = types();
    let manifest = manifest();
    assert_eq!(file.version(), 3);
    assert_eq!(file.alignment(), manifest["alignment"].as_u64().unwrap());
    assert_eq!(
        file.data_offset(),
        manifest["data_offset"].as_u64().unwrap()
    );
    let want = manifest["tensors"].as_array().unwrap();
    assert_eq!(file.tensors().len(), want.len());
    assert_eq!(want.len(), 22);
    for (tensor, want) in file.tensors().iter().zip(want) {
        assert_eq!(tensor.name, want["name"].as_str().unwrap());
        let shape: Vec<usize> = serde_json::from_value(want["shape"].clone()).unwrap();
        assert_eq!(tensor.shape, shape, "{}", tensor.name);
        assert_eq!(tensor.ggml_type.name(), want["type"].as_str().unwrap());
        assert_eq!(
            u64::from(tensor.ggml_type.id()),
            want["type_id"].as_u64().unwrap()
        );
        assert_eq!(tensor.offset, want["offset"].as_u64().unwrap());
        assert_eq!(tensor.size, want["size"].as_u64().unwrap());
        assert_eq!(file.raw(&tensor.name).unwrap().len() as u64, tensor.size);
        assert_eq!(file.tensor_info(&tensor.name), Some(tensor));
    }
}

#[test]
fn metadata_of_every_value_type() {
    let file = types();
    let manifest = manifest();
    let arch = file.metadata("general.architecture").unwrap();
    assert_eq!(arch.as_str(), manifest["architecture"].as_str());
    assert_eq!(
        file.metadata("general.alignment"),
        Some(&MetadataValue::U32(64))
    );
    let want = manifest["metadata"].as_array().unwrap();
    let keys: Vec<&str> = file.metadata_entries().map(|(k, _)| k).collect();
    let mut want_keys = vec!["general.architecture", "general.alignment"];
    want_keys.extend(want.iter().map(|e| e["key"].as_str().unwrap()));
    assert_eq!(keys, want_keys);
    let mut seen = std::collections::HashSet::new();
    for entry in want {
        let key = entry["key"].as_str().unwrap();
        let value = file.metadata(key).unwrap();
        assert_eq!(type_name(value.value_type()), entry["type"], "{key}");
        assert!(same_value(value, &entry["value"]), "{key}: {value:?}");
        if let MetadataValue::Array { element, .. } = value {
            assert_eq!(type_name(*element), entry["element"], "{key}");
        }
        seen.insert(value.value_type());
    }
    assert_eq!(seen.len(), 13, "every GGUF value type");
    assert_eq!(file.metadata("test.i8").unwrap().as_i64(), Some(-100));
    assert_eq!(file.metadata("test.i8").unwrap().as_u64(), None);
    assert_eq!(
        file.metadata("test.u64").unwrap().as_u64(),
        Some((1 << 63) + 5)
    );
    assert_eq!(file.metadata("test.bool").unwrap().as_bool(), Some(true));
    let nested = file.metadata("test.array.nested").unwrap().as_array();
    assert_eq!(nested.map(|a| a.len()), Some(2));
    assert!(file.metadata("missing").is_none());
}

/// Every tensor (13 types of random blocks, 7 quantized by the package, a FLUX-named pair)
/// dequantizes to the package's values, bit for bit, through `GgufFile::dequantize`,
/// `GgufFile::tensor` and `gguf::dequantize`.
#[test]
fn dequantization_is_bit_exact_with_the_gguf_package() {
    let file = types();
    let device = mm_core::device::cpu();
    let expected = expected();
    let mut types = std::collections::HashSet::new();
    for tensor in file.tensors() {
        let (_, shape, want) = expected
            .iter()
            .find(|(n, ..)| *n == tensor.name)
            .unwrap_or_else(|| panic!("no expected values for {}", tensor.name));
        assert_eq!(&tensor.shape, shape);
        let got = file.dequantize(&tensor.name).unwrap();
        assert_eq!(
            bits(&got),
            bits(want),
            "{} ({})",
            tensor.name,
            tensor.ggml_type
        );
        let raw = file.raw(&tensor.name).unwrap();
        assert_eq!(
            bits(&dequantize(tensor.ggml_type, raw).unwrap()),
            bits(want)
        );
        let t = match shape.len() {
            1 => file.tensor::<1>(&tensor.name, &device).unwrap().into_data(),
            2 => file.tensor::<2>(&tensor.name, &device).unwrap().into_data(),
            _ => file.tensor::<3>(&tensor.name, &device).unwrap().into_data(),
        };
        assert_eq!(&t.shape().to_vec(), shape);
        assert_eq!(bits(&t.try_to_vec::<f32>().unwrap()), bits(want));
        types.insert(tensor.ggml_type);
    }
    assert_eq!(types.len(), 13);
    for ty in &types {
        assert!(ty.can_dequantize(), "{ty}");
    }
}

/// `quantize` gives `gguf.quants.quantize`'s bytes for the types both write (Q8_0 with a zero
/// block and exact halves, F16 and BF16); the other types the package quantizes are refused.
#[test]
fn quantization_equals_the_gguf_package() {
    let file = types();
    for ty in [GgmlType::Q8_0, GgmlType::F16, GgmlType::BF16] {
        let input = expected_values(&format!("input.{ty}"));
        let want = file.raw(&format!("quantized.{ty}")).unwrap();
        assert_eq!(quantize(ty, &input).unwrap(), want, "{ty}");
    }
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
    ] {
        assert!(!ty.can_quantize());
        let input = expected_values(&format!("input.{ty}"));
        assert!(matches!(quantize(ty, &input), Err(Error::InvalidInput(_))));
    }
    // The FLUX-named weight was quantized by the package too.
    let weight_input: Vec<f32> = file
        .dequantize("double_blocks.0.img_attn.qkv.weight")
        .unwrap();
    let requantized = quantize(GgmlType::Q8_0, &weight_input).unwrap();
    assert_eq!(
        requantized,
        file.raw("double_blocks.0.img_attn.qkv.weight").unwrap()
    );
}

/// Deterministic standard-normal values (xorshift + Box-Muller).
fn normal(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut uniform = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (uniform(), uniform());
            ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
        })
        .collect()
}

/// Q4_K (which the package cannot quantize): the round trip of normal values loses about
/// 7 % of their RMS, no value is off by much more than half a quantization step of its
/// sub-block, zeros come back exactly and values on a grid of 16 levels (a constant, small
/// integers) within the f16 rounding of the super-block scales.
#[test]
fn q4_k_round_trip_error_is_bounded() {
    let x = normal(64 * 256, 7);
    let q = quantize(GgmlType::Q4_K, &x).unwrap();
    assert_eq!(q.len(), 64 * 144);
    let y = dequantize(GgmlType::Q4_K, &q).unwrap();
    let rms = |v: &mut dyn Iterator<Item = f32>| {
        let (s, n) = v.fold((0.0f64, 0), |(s, n), e| (s + (e as f64).powi(2), n + 1));
        (s / n as f64).sqrt()
    };
    let err = rms(&mut x.iter().zip(&y).map(|(a, b)| a - b));
    let rel = err / rms(&mut x.iter().copied());
    eprintln!("Q4_K relative RMS error {rel:.4}");
    assert!(rel < 0.085, "relative RMS error {rel}");
    // Per sub-block: at most ~half the spacing of 16 levels spanning its values.
    let mut worst_step = 0.0f32;
    for (xs, ys) in x.chunks(32).zip(y.chunks(32)) {
        let lo = xs.iter().fold(0.0f32, |m, &v| m.min(v));
        let hi = xs.iter().fold(f32::MIN, |m, &v| m.max(v));
        let worst = xs
            .iter()
            .zip(ys)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        worst_step = worst_step.max(worst / ((hi - lo) / 15.0));
    }
    eprintln!("Q4_K worst error: {worst_step:.3} of a 16-level step");
    assert!(worst_step <= 0.8, "{worst_step}");
    // As accurate as the package's Q4_1 (4 bits, a scale and minimum per 32 values, unrounded
    // f16) on the same values.
    let input = expected_values("input.Q4_1");
    let q4_1 = expected_values("quantized.Q4_1");
    let q4_k = dequantize(GgmlType::Q4_K, &quantize(GgmlType::Q4_K, &input).unwrap()).unwrap();
    let e4_1 = rms(&mut input.iter().zip(&q4_1).map(|(a, b)| a - b));
    let e4_k = rms(&mut input.iter().zip(&q4_k).map(|(a, b)| a - b));
    eprintln!("RMS error of Q4_1 (gguf) {e4_1:.4}, Q4_K {e4_k:.4}");
    assert!(e4_k <= e4_1, "{e4_k} > {e4_1}");
    // Zeros, a negative constant (all in the minimum) and a block of small integers.
    let mut exact = vec![0.0f32; 256];
    exact[32..64].fill(-1.5);
    for (i, v) in exact[64..96].iter_mut().enumerate() {
        *v = (i % 16) as f32;
    }
    let y = dequantize(GgmlType::Q4_K, &quantize(GgmlType::Q4_K, &exact).unwrap()).unwrap();
    assert_eq!(&y[..32], &exact[..32]);
    assert_eq!(&y[96..], &exact[96..]);
    for (a, b) in exact.iter().zip(&y) {
        assert!((a - b).abs() <= 1e-3 * a.abs(), "{a} → {b}");
    }
}

#[test]
fn quantize_refuses_what_it_cannot_store() {
    for (ty, values) in [
        (GgmlType::Q8_0, vec![0.0; 31]),
        (GgmlType::Q4_K, vec![0.0; 255]),
        (GgmlType::Q8_0, [vec![0.0; 31], vec![f32::NAN]].concat()),
        (
            GgmlType::Q4_K,
            [vec![0.0; 255], vec![f32::INFINITY]].concat(),
        ),
        (GgmlType::Q8_0, [vec![0.0; 31], vec![1e10]].concat()),
        (GgmlType::Q4_K, [vec![0.0; 255], vec![-5e6]].concat()),
        (GgmlType::IQ2_XXS, vec![0.0; 256]),
    ] {
        assert!(
            matches!(quantize(ty, &values), Err(Error::InvalidInput(_))),
            "{ty} of {} values",
            values.len()
        );
    }
    assert!(matches!(
        dequantize(GgmlType::Q8_0, &[0u8; 35]),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        dequantize(GgmlType::IQ4_NL, &[0u8; 18]),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn malformed_files_are_typed_errors() {
    let dir = fixtures().join("malformed");
    let open = |name: &str| open_error(dir.join(name));
    assert_eq!(
        open("bad_magic.gguf"),
        GgufError::BadMagic { found: *b"GGUX" }
    );
    assert_eq!(
        open("bad_version.gguf"),
        GgufError::UnsupportedVersion { version: 1 }
    );
    let big = open("big_endian.gguf");
    assert_eq!(
        big,
        GgufError::UnsupportedVersion {
            version: 3u32.swap_bytes()
        }
    );
    assert!(big.to_string().contains("big-endian"), "{big}");
    let truncated = |name: &str| match open(name) {
        GgufError::Truncated {
            section, file_len, ..
        } => {
            let len = std::fs::metadata(dir.join(name)).unwrap().len();
            assert_eq!(file_len, len, "{name}");
            section
        }
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(truncated("empty.gguf"), Section::Header);
    assert_eq!(truncated("truncated_header.gguf"), Section::Header);
    assert_eq!(truncated("truncated_metadata.gguf"), Section::Metadata);
    assert_eq!(truncated("truncated_tensor_info.gguf"), Section::TensorInfo);
    assert_eq!(truncated("truncated_data.gguf"), Section::TensorData);
    // Counts and lengths larger than the file are refused before allocating.
    assert_eq!(truncated("huge_tensor_count.gguf"), Section::TensorInfo);
    assert_eq!(truncated("huge_kv_count.gguf"), Section::Metadata);
    assert_eq!(truncated("huge_array.gguf"), Section::Metadata);
    let tensor = "tensor.q8_0".to_string();
    assert!(matches!(
        open("out_of_bounds.gguf"),
        GgufError::OutOfBounds { tensor: t, start, file_len: 320, .. } if t == tensor && start > 320
    ));
    assert!(matches!(
        open("misaligned.gguf"),
        GgufError::Misaligned { tensor: t, offset: 4, alignment: 32 } if t == tensor
    ));
    assert_eq!(
        open("unknown_type.gguf"),
        GgufError::UnknownType {
            tensor: tensor.clone(),
            id: 99
        }
    );
    assert!(matches!(
        open("shape_mismatch.gguf"),
        GgufError::ShapeMismatch { tensor: t, .. } if t == tensor
    ));
    assert!(matches!(
        open("bad_alignment.gguf"),
        GgufError::InvalidMetadata { key, .. } if key == "general.alignment"
    ));
    // Every error names the file.
    let err = GgufFile::open(dir.join("unknown_type.gguf")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("unknown_type.gguf") && text.contains("99"),
        "{text}"
    );
}

/// A valid file with an IQ4_NL tensor opens; that tensor is a typed error when dequantized,
/// directly and through `Weights`, and the file's other tensor reads.
#[test]
fn unsupported_type_is_an_error_when_read() {
    let path = fixtures().join("malformed/unsupported_type.gguf");
    let file = GgufFile::open(&path).unwrap();
    let info = file.tensor_info("tensor.iq4_nl").unwrap();
    assert_eq!(
        (info.ggml_type, info.shape.clone()),
        (GgmlType::IQ4_NL, vec![2, 32])
    );
    assert!(matches!(
        file.dequantize("tensor.iq4_nl"),
        Err(Error::Gguf {
            kind: GgufError::UnsupportedType {
                tensor,
                ggml_type: GgmlType::IQ4_NL
            },
            ..
        }) if tensor == "tensor.iq4_nl"
    ));
    assert_eq!(file.dequantize("tensor.q8_0").unwrap().len(), 64);
    let weights = Weights::open(&path).unwrap();
    let err = weights
        .tensor::<2>("tensor.iq4_nl", &mm_core::device::cpu())
        .unwrap_err();
    assert!(err.to_string().contains("IQ4_NL"), "{err}");
    assert!(matches!(
        file.dequantize("nope"),
        Err(Error::Gguf { kind: GgufError::MissingTensor(name), .. }) if name == "nope"
    ));
    assert!(matches!(
        file.tensor::<3>("tensor.q8_0", &mm_core::device::cpu()),
        Err(Error::Gguf {
            kind: GgufError::ShapeMismatch { .. },
            ..
        })
    ));
}

/// Version 2 files (the layout of version 3) read the same.
#[test]
fn version_2_reads_like_version_3() {
    let v2 = GgufFile::open(fixtures().join("v2.gguf")).unwrap();
    let v3 = GgufFile::open(fixtures().join("tiny.gguf")).unwrap();
    assert_eq!((v2.version(), v3.version()), (2, 3));
    assert_eq!(v2.tensors(), v3.tensors());
    assert_eq!(
        v2.dequantize("tensor.q8_0").unwrap(),
        v3.dequantize("tensor.q8_0").unwrap()
    );
    assert_eq!(v2.metadata("general.name").unwrap().as_str(), Some("tiny"));
}

/// `Weights::open` reads a `.gguf` file: names as stored, PyTorch shapes, quantized tensors
/// dequantized on load; a linear layer under its FLUX name loads like a safetensors one (in
/// f32 and kept in bf16).
#[test]
fn weights_load_gguf_tensors_into_modules() {
    let path = fixtures().join("types.gguf");
    let weights = Weights::open(&path).unwrap();
    assert_eq!(weights.len(), 22);
    assert_eq!(weights.shape("random.Q4_K"), Some(vec![5, 256]));
    assert_eq!(weights.stored_dtype("random.Q4_K"), Some(DType::F32));
    assert_eq!(weights.stored_dtype("random.F16"), Some(DType::F16));
    assert_eq!(weights.stored_dtype("random.BF16"), Some(DType::BF16));
    let device = mm_core::device::cpu();
    let q6: Tensor<2> = weights.tensor("random.Q6_K", &device).unwrap();
    assert_eq!(
        bits(&q6.into_data().try_to_vec::<f32>().unwrap()),
        bits(&expected_values("random.Q6_K"))
    );
    let f16: Tensor<3> = weights.tensor("random.F16", &device).unwrap();
    assert_eq!(
        bits(&f16.into_data().try_to_vec::<f32>().unwrap()),
        bits(&expected_values("random.F16"))
    );

    let want_w = expected_values("double_blocks.0.img_attn.qkv.weight"); // [6, 64]
    let want_b = expected_values("double_blocks.0.img_attn.qkv.bias");
    for dtype in [DType::F32, DType::BF16] {
        let layer: Linear = Weights::from_gguf(&path)
            .unwrap()
            .select_prefix("double_blocks.0.img_attn.qkv")
            .with_dtype(dtype)
            .load_into(LinearConfig::new(64, 6).init(&device))
            .unwrap();
        let w = layer.weight.val();
        assert_eq!(w.dtype(), dtype);
        // burn's weight is [in, out]: the transpose of the stored [out, in].
        let w = w
            .transpose()
            .cast(DType::F32)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let rounded: Vec<f32> = want_w
            .iter()
            .map(|&v| match dtype {
                DType::BF16 => half::bf16::from_f32(v).to_f32(),
                _ => v,
            })
            .collect();
        assert_eq!(bits(&w), bits(&rounded), "{dtype:?}");
        let b = layer
            .bias
            .unwrap()
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(bits(&b), bits(&want_b));
    }
    // A malformed GGUF file is the reader's typed error through `Weights::open` too.
    assert!(matches!(
        Weights::open(fixtures().join("malformed/truncated_data.gguf")),
        Err(Error::Gguf {
            kind: GgufError::Truncated {
                section: Section::TensorData,
                ..
            },
            ..
        })
    ));
}

/// `QuantizedMatrix::forward` (`x · Wᵀ` with the weight kept quantized) against dequantizing
/// the weight and multiplying: ≤ 1e-4 relative (of the largest output) for Q8_0 and Q4_K
/// weights quantized here and every K-quant and Q4_0 … Q8_0 tensor of the fixture; 1 to 4
/// rows (dot products), 5 to 600 rows (blocked gemm, several row and column blocks), a rank-3
/// input and a strided one.
#[test]
fn quantized_matrix_product_equals_dequantized_product() {
    let device = mm_core::device::cpu();
    let file = types();
    let mut matrices = vec![
        QuantizedMatrix::quantize(GgmlType::Q8_0, [300, 4096], &normal(300 * 4096, 3)).unwrap(),
        QuantizedMatrix::quantize(GgmlType::Q4_K, [70, 512], &normal(70 * 512, 4)).unwrap(),
    ];
    for name in [
        "random.Q4_0",
        "random.Q5_1",
        "random.Q8_0",
        "random.Q2_K",
        "random.Q3_K",
        "random.Q4_K",
        "random.Q5_K",
        "random.Q6_K",
    ] {
        // The 3-D fixtures as matrices of their rows.
        let info = file.tensor_info(name).unwrap();
        let cols = *info.shape.last().unwrap();
        let rows = info.num_elements() / cols;
        let raw = file.raw(name).unwrap().to_vec();
        matrices.push(QuantizedMatrix::new(info.ggml_type, [rows, cols], raw).unwrap());
    }
    for w in &matrices {
        let [n, k] = w.shape();
        let dense = Tensor::<2>::from_data(
            burn::tensor::TensorData::new(w.dequantize(), [n, k]),
            &device,
        );
        for m in [1, 3, 4, 5, 70, 600] {
            let x = Tensor::<2>::from_data(
                burn::tensor::TensorData::new(normal(m * k, m as u64), [m, k]),
                &device,
            );
            let want = x.clone().matmul(dense.clone().transpose());
            let got = w.forward(x).unwrap();
            assert_eq!(got.dims(), [m, n]);
            let scale = want.clone().abs().max().into_scalar::<f32>();
            let err = (got - want).abs().max().into_scalar::<f32>() / scale;
            assert!(err <= 1e-4, "{} {n}×{k}, {m} rows: {err}", w.ggml_type());
        }
        // A rank-3 input, and a strided view of one.
        let x = Tensor::<3>::from_data(
            burn::tensor::TensorData::new(normal(2 * 3 * k, 9), [3, 2, k]),
            &device,
        );
        for x in [x.clone(), x.swap_dims(0, 1)] {
            let want = x.clone().matmul(dense.clone().transpose().unsqueeze::<3>());
            let got = w.forward(x).unwrap();
            let scale = want.clone().abs().max().into_scalar::<f32>();
            let err = (got - want).abs().max().into_scalar::<f32>() / scale;
            assert!(err <= 1e-4, "{} rank 3: {err}", w.ggml_type());
        }
    }
}

/// A GGUF weight kept quantized gives the product of the same weight loaded into a `Linear`;
/// unusable shapes and types are typed errors.
#[test]
fn quantized_matrix_from_gguf() {
    let device = mm_core::device::cpu();
    let file = types();
    let name = "double_blocks.0.img_attn.qkv.weight";
    let w = file.matrix(name).unwrap();
    assert_eq!((w.ggml_type(), w.shape()), (GgmlType::Q8_0, [6, 64]));
    assert_eq!(w.data(), file.raw(name).unwrap());
    let layer: Linear = Weights::from_gguf(fixtures().join("types.gguf"))
        .unwrap()
        .select_prefix("double_blocks.0.img_attn.qkv")
        .load_into(LinearConfig::new(64, 6).init(&device))
        .unwrap();
    let x = Tensor::<2>::from_data(
        burn::tensor::TensorData::new(normal(5 * 64, 11), [5, 64]),
        &device,
    );
    let bias = layer.bias.clone().unwrap().val().unsqueeze::<2>();
    let want = layer.forward(x.clone()) - bias;
    let got = w.forward(x.clone()).unwrap();
    let err = (got - want).abs().max().into_scalar::<f32>();
    assert!(err < 1e-5, "{err}");

    assert!(matches!(
        w.forward(Tensor::<2>::zeros([2, 63], &device)),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        file.matrix("random.Q8_0"),
        Err(Error::Gguf {
            kind: GgufError::ShapeMismatch { .. },
            ..
        })
    ));
    let unsupported = GgufFile::open(fixtures().join("malformed/unsupported_type.gguf")).unwrap();
    assert!(matches!(
        unsupported.matrix("tensor.iq4_nl"),
        Err(Error::Gguf {
            kind: GgufError::UnsupportedType { .. },
            ..
        })
    ));
    for (ty, shape, bytes) in [
        (GgmlType::Q8_0, [2, 32], 67),
        (GgmlType::Q8_0, [2, 33], 68),
        (GgmlType::IQ4_NL, [1, 32], 18),
    ] {
        assert!(matches!(
            QuantizedMatrix::new(ty, shape, vec![0; bytes]),
            Err(Error::InvalidInput(_))
        ));
    }
    assert!(matches!(
        QuantizedMatrix::quantize(GgmlType::Q8_0, [2, 32], &[0.0; 63]),
        Err(Error::InvalidInput(_))
    ));
}
