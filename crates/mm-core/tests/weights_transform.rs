//! `Weights::reshape`, `Weights::split`, `Weights::transpose`, `Weights::swap_halves`,
//! `Weights::insert_with` and `Weights::rename_prefixes`: lazy layout changes between
//! checkpoint formats; and tensors of a dtype that cannot be read (float8), which open but do
//! not load.

use burn::tensor::Tensor;
use mm_core::weights::Weights;
use safetensors::tensor::{Dtype, TensorView};

fn write(path: &std::path::Path, tensors: &[(&str, Vec<usize>, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(&str, TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            (
                *name,
                TensorView::new(Dtype::F32, shape.clone(), b).unwrap(),
            )
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// A path in the temporary folder for this test process.
fn temp(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "mm-weights-{tag}-{}.safetensors",
        std::process::id()
    ))
}

fn values<const D: usize>(w: &Weights, name: &str) -> (Vec<usize>, Vec<f32>) {
    let t: Tensor<D> = w.tensor(name, &mm_core::device::cpu()).unwrap();
    (
        t.dims().to_vec(),
        t.into_data().try_to_vec::<f32>().unwrap(),
    )
}

#[test]
fn reshape_and_split_are_lazy_and_exact() {
    let path = temp("transform");
    let fused: Vec<f32> = (0..12).map(|x| x as f32).collect();
    write(
        &path,
        &[
            ("qkv", vec![6, 2], fused),
            ("conv", vec![2, 2, 1, 1], vec![1.0, 2.0, 3.0, 4.0]),
        ],
    );
    let w = Weights::open(&path)
        .unwrap()
        .reshape(|name, shape| (name == "conv").then(|| shape[..2].to_vec()))
        .unwrap()
        .split(|name| (name == "qkv").then(|| ["q", "k", "v"].map(String::from).to_vec()))
        .unwrap();
    assert_eq!(w.names().collect::<Vec<_>>(), ["conv", "k", "q", "v"]);
    assert_eq!(w.shape("conv"), Some(vec![2, 2]));
    assert_eq!(
        values::<2>(&w, "conv"),
        (vec![2, 2], vec![1.0, 2.0, 3.0, 4.0])
    );
    assert_eq!(values::<2>(&w, "q"), (vec![2, 2], vec![0.0, 1.0, 2.0, 3.0]));
    assert_eq!(values::<2>(&w, "k"), (vec![2, 2], vec![4.0, 5.0, 6.0, 7.0]));
    assert_eq!(
        values::<2>(&w, "v"),
        (vec![2, 2], vec![8.0, 9.0, 10.0, 11.0])
    );

    let bad = Weights::open(&path).unwrap().reshape(|_, _| Some(vec![5]));
    assert!(bad.unwrap_err().to_string().contains("cannot reshape"));
    let bad = Weights::open(&path)
        .unwrap()
        .split(|name| (name == "qkv").then(|| vec!["a".into(); 4]));
    assert!(bad.unwrap_err().to_string().contains("cannot split"));
    std::fs::remove_file(&path).ok();
}

#[test]
fn transpose_swaps_the_dimensions_of_matrices() {
    let path = temp("transpose");
    let m = vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
    write(&path, &[("m", vec![2, 3], m), ("v", vec![3], vec![1.0; 3])]);
    let w = Weights::open(&path)
        .unwrap()
        .transpose(|n| n == "m")
        .unwrap();
    assert_eq!(w.shape("m"), Some(vec![3, 2]));
    assert_eq!(
        values::<2>(&w, "m"),
        (vec![3, 2], vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0])
    );
    assert_eq!(values::<1>(&w, "v"), (vec![3], vec![1.0; 3]));
    let bad = Weights::open(&path).unwrap().transpose(|_| true);
    std::fs::remove_file(&path).ok();
    assert!(bad.unwrap_err().to_string().contains("not a matrix"));
}

#[test]
fn rename_prefixes_takes_the_first_matching_rule() {
    let path = temp("prefixes");
    let names = ["tower.inner.a", "tower.b", "model.c", "modelx", "other"];
    let tensors: Vec<(&str, Vec<usize>, Vec<f32>)> =
        names.iter().map(|n| (*n, vec![1], vec![1.0])).collect();
    write(&path, &tensors);
    let w = Weights::open(&path).unwrap().rename_prefixes(&[
        ("tower.inner.", "tower.inner."),
        ("tower.", "tower.inner."),
        ("model.", ""),
    ]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        w.names().collect::<Vec<_>>(),
        ["c", "modelx", "other", "tower.inner.a", "tower.inner.b"]
    );
    assert_eq!(values::<1>(&w, "tower.inner.b"), (vec![1], vec![1.0]));
}

#[test]
fn swap_halves_exchanges_the_two_halves_of_the_first_dimension() {
    let path = temp("swap");
    let m: Vec<f32> = (0..8).map(|x| x as f32).collect();
    write(
        &path,
        &[
            ("m", vec![4, 2], m),
            ("b", vec![4], vec![1.0, 2.0, 3.0, 4.0]),
            ("odd", vec![3], vec![0.0; 3]),
        ],
    );
    let w = Weights::open(&path)
        .unwrap()
        .swap_halves(|n| n != "odd")
        .unwrap();
    assert_eq!(
        values::<2>(&w, "m"),
        (vec![4, 2], vec![4.0, 5.0, 6.0, 7.0, 0.0, 1.0, 2.0, 3.0])
    );
    assert_eq!(values::<1>(&w, "b"), (vec![4], vec![3.0, 4.0, 1.0, 2.0]));
    let bad = Weights::open(&path).unwrap().swap_halves(|n| n == "odd");
    std::fs::remove_file(&path).ok();
    assert!(
        bad.unwrap_err()
            .to_string()
            .contains("cannot swap the halves")
    );
}

#[test]
fn insert_with_adds_a_tensor_built_when_loaded() {
    let path = temp("insert");
    write(&path, &[("a", vec![1], vec![1.0])]);
    let w = Weights::open(&path).unwrap().insert_with(
        "eye",
        vec![2, 2],
        burn::tensor::DType::F32,
        || burn::tensor::TensorData::new(vec![1.0f32, 0.0, 0.0, 1.0], [2, 2]),
    );
    std::fs::remove_file(&path).ok();
    assert_eq!(w.names().collect::<Vec<_>>(), ["a", "eye"]);
    assert_eq!(
        values::<2>(&w, "eye"),
        (vec![2, 2], vec![1.0, 0.0, 0.0, 1.0])
    );
}

#[test]
fn a_float8_tensor_opens_but_does_not_load() {
    let path = temp("fp8");
    let (f8, f32s) = (vec![0u8; 8], 1.5f32.to_le_bytes().to_vec());
    let views = vec![
        (
            "x.f8",
            TensorView::new(Dtype::F8_E4M3, vec![4, 2], &f8).unwrap(),
        ),
        ("y", TensorView::new(Dtype::F32, vec![1], &f32s).unwrap()),
    ];
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    let w = Weights::open(&path).unwrap();
    assert_eq!(w.shape("x.f8"), Some(vec![4, 2]));
    assert_eq!(w.stored_dtype("x.f8"), None);
    assert_eq!(w.unreadable_dtype("x.f8"), Some("F8_E4M3"));
    assert_eq!(values::<1>(&w, "y"), (vec![1], vec![1.5]));
    let unsupported = |err: mm_core::Error| match err {
        mm_core::Error::UnsupportedDtype { tensor, dtype, .. } => (tensor, dtype),
        other => panic!("{other}"),
    };
    let want = ("x.f8".to_string(), "F8_E4M3".to_string());
    let dev = mm_core::device::cpu();
    assert_eq!(unsupported(w.tensor::<2>("x.f8", &dev).unwrap_err()), want);
    assert_eq!(unsupported(w.check_readable().unwrap_err()), want);
    // Renamed and split, its parts still report it under its name in the file.
    let parts = w
        .clone()
        .rename(|n| Some(n.replace("x.", "z.")))
        .split(|n| (n == "z.f8").then(|| vec!["p".into(), "q".into()]))
        .unwrap();
    assert_eq!(parts.unreadable_dtype("q"), Some("F8_E4M3"));
    assert_eq!(unsupported(parts.tensor::<2>("p", &dev).unwrap_err()), want);
    // Without it, the rest loads.
    let rest = w.rename(|n| (n == "y").then(|| n.into()));
    assert!(rest.check_readable().is_ok());

    // A dtype safetensors does not know is an error at once.
    let header = br#"{"t":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.push(0);
    std::fs::write(&path, bytes).unwrap();
    let err = Weights::open(&path).unwrap_err().to_string();
    std::fs::remove_file(&path).ok();
    assert!(err.contains("unknown dtype Q7"), "{err}");
}
