//! `mm_core::weights::save_safetensors` writes what it read: a CLIP checkpoint loaded and saved
//! again has the same tensor names, shapes (the 0-d `logit_scale` included) and values.

use burn::tensor::{DType, Device};
use mm_core::weights::{Weights, save_safetensors};
use mm_vision::Pretrained;
use mm_vision::clip::ClipModel;

#[test]
fn a_saved_clip_is_the_checkpoint_it_was_loaded_from() {
    let dir = format!(
        "{}/../../tests/fixtures/clip-tiny-gelu",
        env!("CARGO_MANIFEST_DIR")
    );
    let device = Device::flex();
    let model = ClipModel::load(&dir, &device).unwrap();
    let path =
        std::env::temp_dir().join(format!("mm-save-clip-{}.safetensors", std::process::id()));
    save_safetensors(&model, &path, DType::F32).unwrap();

    let original = Weights::open(format!("{dir}/model.safetensors")).unwrap();
    let saved = Weights::open(&path).unwrap();
    let mut names: Vec<&str> = original.names().collect();
    let mut saved_names: Vec<&str> = saved.names().collect();
    names.sort_unstable();
    saved_names.sort_unstable();
    assert_eq!(names, saved_names);
    for name in names {
        assert_eq!(original.shape(name), saved.shape(name), "{name}");
        if original.shape(name) == Some(vec![]) {
            continue; // the 0-d logit_scale: compared through the reloaded model below
        }
        let flat = |w: &Weights| -> Vec<f32> {
            let shape = w.shape(name).unwrap();
            let n = shape.iter().product::<usize>().max(1);
            let t = match shape.len() {
                1 => w.tensor::<1>(name, &device).unwrap(),
                2 => w.tensor::<2>(name, &device).unwrap().reshape([n]),
                3 => w.tensor::<3>(name, &device).unwrap().reshape([n]),
                _ => w.tensor::<4>(name, &device).unwrap().reshape([n]),
            };
            t.into_data().try_to_vec().unwrap()
        };
        assert_eq!(flat(&original), flat(&saved), "{name}");
    }
    // The saved file loads back strictly.
    let reloaded = ClipModel::from_weights(
        &ClipModel::read_config(format!("{dir}/config.json").as_ref()).unwrap(),
        saved,
        &device,
    );
    let reloaded = reloaded.unwrap();
    let scale = |m: &ClipModel| m.logit_scale.val().into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(scale(&reloaded), scale(&model));
    let _ = std::fs::remove_file(&path);
}
