//! The training loop on a toy batch: the loss goes down, a checkpoint reloads to identical
//! outputs, a resumed run ends where an uninterrupted one does, the EMA follows the weights.

use std::path::PathBuf;

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use mm_core::config::read_json;
use mm_core::weights::Weights;
use mm_diffusion::vae::{AutoencoderKL, AutoencoderKLConfig};
use mm_train::ema::Ema;
use mm_train::train::{TrainConfig, fit};

fn vae_config() -> AutoencoderKLConfig {
    let path = format!(
        "{}/../../tests/fixtures/vae-kl-tiny/config.json",
        env!("CARGO_MANIFEST_DIR")
    );
    read_json(std::path::Path::new(&path)).unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mm-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A fixed batch and a deterministic loss: reconstruct it through the posterior mean.
fn toy_loss(
    device: &Device,
) -> (
    Tensor<4>,
    impl FnMut(&AutoencoderKL, usize) -> mm_train::Result<Tensor<1>> + Clone,
) {
    let plain = device.clone().inner();
    plain.seed(7);
    let x = Tensor::<4>::random([2, 3, 16, 16], Distribution::Uniform(-1.0, 1.0), &plain);
    let batch = x.clone();
    let loss = move |model: &AutoencoderKL, _step: usize| {
        let x = batch.clone().autodiff();
        let reconstruction = model.decode(model.encode(x.clone())?.mean)?;
        Ok((reconstruction - x).powi_scalar(2).mean())
    };
    (x, loss)
}

fn flat(t: Tensor<4>) -> Vec<f32> {
    t.into_data().try_to_vec().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn loss_goes_down_and_checkpoints_reload() {
    let device = Device::flex().autodiff();
    device.seed(1);
    let model = AutoencoderKL::new(&vae_config(), &device).unwrap();
    let (x, loss) = toy_loss(&device);
    let dir = temp_dir("ckpt");
    let config = TrainConfig::new(40, 3e-3)
        .with_checkpoints(&dir, 20)
        .with_ema(0.9);
    let mut losses = Vec::new();
    let trained = fit(model, &config, loss, |r| {
        losses.push(r.loss);
        true
    })
    .unwrap();
    assert_eq!(trained.steps, 40);
    let (first, last) = (losses[0], *losses.last().unwrap());
    eprintln!("toy loss {first:.4} → {last:.4}");
    assert!(last < 0.5 * first, "loss {first} → {last}");

    // The checkpoint's weights are the trained ones, bit for bit through the file.
    let plain = trained.model.valid();
    let fresh = AutoencoderKL::new(&vae_config(), &Device::flex()).unwrap();
    let reloaded = Weights::open(dir.join("model.safetensors"))
        .unwrap()
        .load_into(fresh)
        .unwrap();
    let run = |m: &AutoencoderKL| flat(m.decode(m.encode(x.clone()).unwrap().mean).unwrap());
    assert_eq!(max_diff(&run(&plain), &run(&reloaded)), 0.0);
    // The EMA weights are saved beside them, and differ from the last weights.
    let fresh = AutoencoderKL::new(&vae_config(), &Device::flex()).unwrap();
    let ema = Weights::open(dir.join("ema.safetensors"))
        .unwrap()
        .load_into(fresh)
        .unwrap();
    let ema_trained = trained.ema.as_ref().unwrap().model();
    assert_eq!(max_diff(&run(&ema), &run(ema_trained)), 0.0);
    assert!(max_diff(&run(&ema), &run(&plain)) > 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_resumed_run_ends_where_an_uninterrupted_one_does() {
    let device = Device::flex().autodiff();
    let (x, loss) = toy_loss(&device);
    let base = AutoencoderKL::new(&vae_config(), &device).unwrap();
    let build = || base.clone();
    let mut straight_losses = Vec::new();
    let straight = fit(
        build(),
        &TrainConfig::new(12, 3e-3).with_ema(0.9),
        loss.clone(),
        |r| {
            straight_losses.push(r.loss);
            true
        },
    )
    .unwrap();

    let dir = temp_dir("resume");
    let config = TrainConfig::new(12, 3e-3)
        .with_ema(0.9)
        .with_checkpoints(&dir, 6);
    // Interrupted after 6 steps (the progress callback cancels), then rerun from the folder.
    let first = fit(build(), &config, loss.clone(), |r| r.step + 1 < 6).unwrap();
    assert_eq!(first.steps, 6);
    let mut resumed_losses = Vec::new();
    let resumed = fit(build(), &config, loss, |r| {
        resumed_losses.push(r.loss);
        true
    })
    .unwrap();
    eprintln!("straight {straight_losses:?}\nresumed {resumed_losses:?}");
    assert_eq!(resumed.steps, 12);
    let run = |m: &AutoencoderKL| flat(m.decode(m.encode(x.clone()).unwrap().mean).unwrap());
    let d = max_diff(&run(&straight.model.valid()), &run(&resumed.model.valid()));
    let e = max_diff(&run(&straight.best()), &run(&resumed.best()));
    eprintln!("resumed vs straight: weights {d:e}, EMA {e:e}");
    assert!(d < 1e-5 && e < 1e-5);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ema_warms_up_and_follows() {
    let device = Device::flex();
    let model = AutoencoderKL::new(&vae_config(), &device).unwrap();
    let mut ema = Ema::new(&model, 0.999);
    assert!((ema.decay() - 0.1).abs() < 1e-12);
    // The average of a model with itself is the model.
    ema.update(&model);
    assert_eq!(ema.updates(), 1);
    let x = Tensor::<4>::random([1, 3, 16, 16], Distribution::Uniform(-1.0, 1.0), &device);
    let a = flat(model.decode(model.encode(x.clone()).unwrap().mean).unwrap());
    let m = ema.model();
    let b = flat(m.decode(m.encode(x).unwrap().mean).unwrap());
    assert!(max_diff(&a, &b) < 1e-5);
}
