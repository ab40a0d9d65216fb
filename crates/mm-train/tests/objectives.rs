//! The training objectives against their closed forms on small tensors.

use burn::tensor::{Device, Int, Tensor, TensorData};
use mm_train::Error;
use mm_train::objectives::{
    Prediction, add_noise, autoencoder_loss, causal_lm_loss, condition_dropout, diffusion_loss,
    diffusion_target, flow_matching_inputs, flow_matching_loss, kl_divergence, min_snr_weights,
};

fn device() -> Device {
    Device::flex()
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec().unwrap()
}

fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
    }
}

fn ramp(shape: [usize; 4], offset: f32) -> Tensor<4> {
    let n = shape.iter().product::<usize>();
    let v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37 + offset).sin()).collect();
    Tensor::from_data(TensorData::new(v, shape), &device())
}

#[test]
fn velocity_target_inverts_to_noise_and_sample() {
    let (x0, noise) = (ramp([2, 3, 2, 2], 0.0), ramp([2, 3, 2, 2], 1.0));
    let a = Tensor::<1>::from_floats([0.3, 0.9], &device());
    let xt = add_noise(x0.clone(), noise.clone(), a.clone());
    let v = diffusion_target(Prediction::Velocity, x0.clone(), noise.clone(), a.clone());
    let a4 = a.reshape([2, 1, 1, 1]);
    // x₀ = √ᾱ·x_t − √(1−ᾱ)·v and ε = √(1−ᾱ)·x_t + √ᾱ·v.
    let one_minus = (a4.clone().neg() + 1.0).sqrt();
    let x0_back = xt.clone() * a4.clone().sqrt() - v.clone() * one_minus.clone();
    let eps_back = xt * one_minus + v * a4.sqrt();
    close(&values(x0_back), &values(x0.clone()));
    close(&values(eps_back), &values(noise.clone()));
    let a = Tensor::<1>::from_floats([0.3, 0.9], &device());
    close(
        &values(diffusion_target(
            Prediction::Epsilon,
            x0.clone(),
            noise.clone(),
            a.clone(),
        )),
        &values(noise.clone()),
    );
    close(
        &values(diffusion_target(Prediction::Sample, x0.clone(), noise, a)),
        &values(x0),
    );
}

#[test]
fn min_snr_weights_follow_the_paper() {
    // ᾱ = 0.5: SNR 1; ᾱ = 0.9: SNR 9; γ = 5.
    let a = || Tensor::<1>::from_floats([0.5, 0.9], &device());
    let w = |p| values(min_snr_weights(p, a(), 5.0).unwrap());
    close(&w(Prediction::Epsilon), &[1.0, 5.0 / 9.0]);
    close(&w(Prediction::Velocity), &[0.5, 0.5]);
    close(&w(Prediction::Sample), &[1.0, 5.0]);
    assert!(matches!(
        min_snr_weights(Prediction::Epsilon, a(), 0.0),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn losses_are_weighted_per_sample_means() {
    let zeros = Tensor::<4>::zeros([2, 1, 2, 2], &device());
    let pred = Tensor::<4>::from_data(
        TensorData::new(
            vec![1.0f32, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0],
            [2, 1, 2, 2],
        ),
        &device(),
    );
    close(
        &values(diffusion_loss(pred.clone(), zeros.clone(), None)),
        &[2.5],
    );
    let w = Tensor::<1>::from_floats([1.0, 0.5], &device());
    close(
        &values(diffusion_loss(pred.clone(), zeros.clone(), Some(w))),
        &[1.5],
    );
    // Flow matching: x_σ runs from x₀ (σ = 0) to ε (σ = 1); the target is ε − x₀.
    let (x0, noise) = (ramp([2, 1, 2, 2], 0.0), ramp([2, 1, 2, 2], 2.0));
    let sigmas = Tensor::<1>::from_floats([0.0, 1.0], &device());
    let (noisy, target) = flow_matching_inputs(x0.clone(), noise.clone(), sigmas);
    let n = values(noisy);
    close(&n[..4], &values(x0.clone())[..4]);
    close(&n[4..], &values(noise.clone())[4..]);
    close(&values(target.clone()), &values(noise.clone() - x0.clone()));
    close(&values(flow_matching_loss(target, x0, noise, None)), &[0.0]);
}

#[test]
fn condition_dropout_replaces_the_flagged_rows() {
    let cond = Tensor::<3>::ones([3, 2, 4], &device());
    let uncond = Tensor::<3>::zeros([1, 2, 4], &device());
    let out = condition_dropout(cond.clone(), uncond.clone(), &[false, true, false]).unwrap();
    let v = values(out);
    assert!(v[..8].iter().all(|&x| x == 1.0));
    assert!(v[8..16].iter().all(|&x| x == 0.0));
    assert!(v[16..].iter().all(|&x| x == 1.0));
    assert!(matches!(
        condition_dropout(cond, uncond, &[true]),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn kl_and_autoencoder_loss_match_the_closed_form() {
    let zeros = Tensor::<4>::zeros([2, 2, 2, 2], &device());
    let ones = Tensor::<4>::ones([2, 2, 2, 2], &device());
    close(
        &values(kl_divergence(zeros.clone(), zeros.clone())),
        &[0.0, 0.0],
    );
    // mean 1, log-variance 0: ½·(1 + 1 − 1 − 0) = ½ per value, 8 values.
    close(
        &values(kl_divergence(ones.clone(), zeros.clone())),
        &[4.0, 4.0],
    );
    // log-variance 1: ½·(e − 1 − 1) per value.
    let e = std::f32::consts::E;
    close(
        &values(kl_divergence(zeros.clone(), ones.clone())),
        &[4.0 * (e - 2.0); 2],
    );
    let loss = autoencoder_loss(ones.clone(), zeros.clone(), ones, zeros, 0.1);
    close(&values(loss), &[1.0 + 0.4]);
}

#[test]
fn causal_lm_loss_scores_the_next_token_and_ignores_minus_100() {
    let v = 5;
    // Uniform logits: every scored position costs ln(v).
    let logits = Tensor::<3>::zeros([2, 4, v], &device());
    let labels = Tensor::<2, Int>::from_data(
        TensorData::new(vec![1i64, 2, 3, 4, -100, -100, 0, 1], [2, 4]),
        &device(),
    );
    let loss = causal_lm_loss(logits, labels).unwrap();
    close(&values(loss), &[(v as f32).ln()]);
    // A confident right answer costs about nothing; the first label is never scored.
    let mut raw = vec![0.0f32; 2 * v];
    raw[3] = 20.0; // position 0 predicts token 3
    let logits = Tensor::<3>::from_data(TensorData::new(raw, [1, 2, v]), &device());
    let labels = Tensor::<2, Int>::from_data(TensorData::new(vec![-100i64, 3], [1, 2]), &device());
    let loss = values(causal_lm_loss(logits, labels).unwrap())[0];
    assert!(loss < 1e-6, "{loss}");
    let logits = Tensor::<3>::zeros([1, 2, v], &device());
    let labels = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, -100], [1, 2]), &device());
    assert!(matches!(
        causal_lm_loss(logits, labels),
        Err(Error::InvalidConfig(_))
    ));
}
