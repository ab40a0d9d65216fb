//! Bad input gives clear errors; configs round-trip and cross-construct;
//! guidance matches diffusers.

use burn::tensor::{Device, Tensor, TensorData};
use mm_schedulers::{
    DdimConfig, EulerAncestralConfig, EulerConfig, Guidance, NoNoise, QueuedNoise,
    SUPPORTED_CLASSES, ScaleSchedule, Scheduler, SchedulerConfig, SchedulerError, SeededNoise,
    TimestepRequest, scheduler_from_config, scheduler_from_json,
};
use serde_json::{Value, json};

fn build(class: &str, config: Value) -> Box<dyn Scheduler<4>> {
    scheduler_from_config::<4>(class, &config).expect("scheduler")
}

fn t4(v: Vec<f32>, shape: [usize; 4]) -> Tensor<4> {
    Tensor::from_data(TensorData::new(v, shape), &Device::flex())
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("data")
}

fn needs_mu(class: &str) -> Value {
    if class == "FlowMatchEulerDiscreteScheduler" {
        json!({"use_dynamic_shifting": false})
    } else {
        json!({})
    }
}

#[test]
fn zero_steps_is_an_error() {
    for class in SUPPORTED_CLASSES {
        let mut s = build(class, needs_mu(class));
        let e = s.set_timesteps(0).expect_err(class);
        assert!(
            matches!(
                e,
                SchedulerError::ZeroSteps | SchedulerError::InvalidSchedule(_)
            ),
            "{class}: {e}"
        );
    }
}

#[test]
fn more_steps_than_training_is_an_error() {
    for class in SUPPORTED_CLASSES {
        let mut s = build(class, json!({"num_train_timesteps": 100}));
        let e = s.set_timesteps(101).expect_err(class);
        assert!(
            matches!(
                e,
                SchedulerError::TooManySteps {
                    steps: 101,
                    train: 100
                }
            ),
            "{class}: {e}"
        );
        assert!(e.to_string().contains("cannot be larger"), "{e}");
    }
}

#[test]
fn strength_outside_unit_interval_is_an_error() {
    for class in SUPPORTED_CLASSES {
        let mut s = build(class, json!({}));
        s.set_timesteps(4).expect("set_timesteps");
        for bad in [-0.1, 1.5, f64::NAN] {
            let e = s.set_strength(bad).expect_err(class);
            assert!(
                matches!(e, SchedulerError::InvalidStrength(_)),
                "{class}: {e}"
            );
        }
        assert_eq!(s.set_strength(0.5).expect("strength"), 2 * s.order());
    }
}

#[test]
fn unknown_prediction_type_is_an_error() {
    for class in SUPPORTED_CLASSES {
        let e =
            scheduler_from_config::<4>(class, &json!({"prediction_type": "x_prediction"})).err();
        if class == &"FlowMatchEulerDiscreteScheduler" {
            continue; // has no prediction_type: the key is ignored like in diffusers
        }
        let e = e.expect(class);
        assert!(matches!(e, SchedulerError::Json(_)), "{class}: {e}");
        assert!(e.to_string().contains("x_prediction"), "{e}");
    }
    // a known type the scheduler cannot handle
    let e = scheduler_from_config::<4>(
        "DDIMScheduler",
        &json!({"prediction_type": "flow_prediction"}),
    )
    .err();
    assert!(
        matches!(e, Some(SchedulerError::UnsupportedPredictionType(..))),
        "{e:?}"
    );
}

#[test]
fn bad_configs_are_errors() {
    let e = scheduler_from_config::<4>("NoSuchScheduler", &json!({})).err();
    assert!(matches!(e, Some(SchedulerError::UnknownClass(_))));
    let e =
        scheduler_from_config::<4>("DDIMScheduler", &json!({"beta_schedule": "quadratic"})).err();
    assert!(e.is_some_and(|e| e.to_string().contains("quadratic")));
    let e = scheduler_from_config::<4>("DPMSolverMultistepScheduler", &json!({"solver_order": 4}))
        .err();
    assert!(matches!(e, Some(SchedulerError::InvalidConfig(_))));
    let e = scheduler_from_config::<4>(
        "EulerDiscreteScheduler",
        &json!({"use_karras_sigmas": true, "use_exponential_sigmas": true}),
    );
    assert!(matches!(e.err(), Some(SchedulerError::InvalidConfig(_))));
    let e = scheduler_from_config::<4>(
        "FlowMatchEulerDiscreteScheduler",
        &json!({"use_dynamic_shifting": true}),
    )
    .expect("flow")
    .set_timesteps(10)
    .err();
    assert!(
        matches!(e, Some(SchedulerError::InvalidConfig(_))),
        "dynamic shifting without mu: {e:?}"
    );
    assert!(scheduler_from_json::<4>(&json!({"num_train_timesteps": 10})).is_err());
}

#[test]
fn step_before_set_timesteps_is_an_error() {
    let mut s = build("DDIMScheduler", json!({}));
    let x = t4(vec![0.0; 4], [1, 1, 2, 2]);
    assert!(matches!(
        s.step(x.clone(), 10.0, x, &mut NoNoise),
        Err(SchedulerError::NotInitialized(_))
    ));
}

#[test]
fn stochastic_scheduler_without_noise_is_an_error() {
    let mut s = build("EulerAncestralDiscreteScheduler", json!({}));
    s.set_timesteps(5).expect("set_timesteps");
    let t = s.timesteps()[0];
    let x = t4(vec![0.5; 4], [1, 1, 2, 2]);
    assert!(matches!(
        s.step(x.clone(), t, x, &mut NoNoise),
        Err(SchedulerError::Noise(_))
    ));
    // a timestep that is not in the schedule
    let mut s = build("EulerDiscreteScheduler", json!({}));
    s.set_timesteps(5).expect("set_timesteps");
    let x = t4(vec![0.5; 4], [1, 1, 2, 2]);
    assert!(matches!(
        s.step(x.clone(), 123.5, x, &mut NoNoise),
        Err(SchedulerError::UnknownTimestep(_))
    ));
}

#[test]
fn seeded_noise_is_reproducible() {
    let run = |seed| {
        let mut s = build("EulerAncestralDiscreteScheduler", json!({}));
        s.set_timesteps(4).expect("set_timesteps");
        let mut rng = SeededNoise::new(seed);
        let mut x = t4(vec![0.3; 8], [1, 2, 2, 2]) * (s.init_noise_sigma() as f32);
        for t in s.timesteps().to_vec() {
            let out = s.scale_model_input(x.clone(), t).expect("scale") * 0.1;
            x = s.step(out, t, x, &mut rng).expect("step").prev_sample;
        }
        values(x)
    };
    assert_eq!(run(3), run(3));
    assert_ne!(run(3), run(4));
}

/// SDXL ships an Euler config; "Euler a" is built from it in one line.
#[test]
fn cross_construction_keeps_compatible_keys() {
    let sdxl = r#"{"_class_name": "EulerDiscreteScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "beta_start": 0.00085, "clip_sample": false, "interpolation_type": "linear", "num_train_timesteps": 1000,
        "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": false, "skip_prk_steps": true,
        "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": null, "use_karras_sigmas": false,
        "lambda_min_clipped": -Infinity}"#;
    let euler = EulerConfig::from_json_str(sdxl).expect("euler config");
    let ea = EulerAncestralConfig::from_config(&euler).expect("from_config");
    assert_eq!(ea.steps_offset, 1);
    assert_eq!(ea.beta_start, 0.00085);
    let ddim = DdimConfig::from_config(&ea).expect("ddim");
    assert!(
        ddim.clip_sample,
        "keys the source lacks take the target's defaults"
    );
    let v = ea.to_value().expect("to_value");
    assert_eq!(v["_class_name"], "EulerAncestralDiscreteScheduler");
    let mut s = scheduler_from_json::<4>(&v).expect("from json");
    s.set_timesteps(5).expect("set_timesteps");
    assert_eq!(s.timesteps(), &[801.0, 601.0, 401.0, 201.0, 1.0]);
}

#[test]
fn custom_schedules() {
    let mut s = build("EulerDiscreteScheduler", json!({}));
    s.set_timesteps_with(&TimestepRequest::sigmas(vec![10.0, 5.0, 1.0, 0.0]))
        .expect("sigmas");
    assert_eq!(s.timesteps().len(), 3);
    let mut d = build("DDPMScheduler", json!({}));
    let e = d
        .set_timesteps_with(&TimestepRequest::timesteps(vec![10.0, 500.0]))
        .err();
    assert!(matches!(e, Some(SchedulerError::InvalidSchedule(_))));
    let e = build("DDIMScheduler", json!({}))
        .set_timesteps_with(&TimestepRequest::sigmas(vec![1.0, 0.0]))
        .err();
    assert!(matches!(e, Some(SchedulerError::Unsupported(_))));
}

#[test]
fn flux_mu_from_sequence_length() {
    let c = mm_schedulers::FlowMatchEulerConfig::from_json_str(
        r#"{"base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15,
            "shift": 3.0, "use_dynamic_shifting": true}"#,
    )
    .expect("flux config");
    assert!((c.mu_for_seq_len(256) - 0.5).abs() < 1e-12);
    assert!((c.mu_for_seq_len(4096) - 1.15).abs() < 1e-12);
    let mut s = mm_schedulers::FlowMatchEulerScheduler::new(c.clone()).expect("flux");
    let req = TimestepRequest::steps(4).with_mu(c.mu_for_seq_len(1024));
    Scheduler::<3>::set_timesteps_with(&mut s, &req).expect("set_timesteps");
    assert_eq!(Scheduler::<3>::timesteps(&s).len(), 4);
}

#[test]
fn works_for_token_latents() {
    // [B, L, C] latents of a transformer: same scheduler type, rank 3
    let mut s: Box<dyn Scheduler<3>> =
        scheduler_from_config("FlowMatchEulerDiscreteScheduler", &json!({"shift": 3.0}))
            .expect("flow");
    s.set_timesteps(4).expect("set_timesteps");
    let mut x: Tensor<3> = Tensor::from_data(
        TensorData::new(vec![1.0f32; 12], [1, 4, 3]),
        &Device::flex(),
    );
    for t in s.timesteps().to_vec() {
        let v = x.clone() * 0.5;
        x = s.step(v, t, x, &mut NoNoise).expect("step").prev_sample;
    }
    assert_eq!(x.dims(), [1, 4, 3]);
}

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/schedulers/traces.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// CFG and `rescale_noise_cfg` against diffusers' Stable Diffusion pipeline.
#[test]
fn guidance_matches_diffusers() {
    let fx = fixture();
    for g in fx["guidance"].as_array().expect("guidance") {
        let shape = [2, 2, 4, 4];
        let uncond = t4(floats(&g["uncond"]), shape);
        let cond = t4(floats(&g["cond"]), shape);
        let guidance = Guidance::cfg(g["scale"].as_f64().expect("scale"))
            .with_rescale(g["rescale"].as_f64().expect("r"));
        let got = values(
            guidance
                .combine(&[uncond.clone(), cond.clone()], 0, 1)
                .expect("combine"),
        );
        let want = floats(&g["result"]);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
            / scale;
        assert!(err < 1e-5, "guidance {g:?}: rel err {err}");
        // batched [uncond; cond] gives the same
        let batched = Tensor::cat(vec![uncond, cond], 0);
        let got_b = values(guidance.combine_batched(batched, 0, 1).expect("batched"));
        assert_eq!(got, got_b);
    }
}

#[test]
fn guidance_variants() {
    let a = t4(vec![1.0; 4], [1, 1, 2, 2]);
    let b = t4(vec![3.0; 4], [1, 1, 2, 2]);
    let c = t4(vec![4.0; 4], [1, 1, 2, 2]);
    // no guidance: one branch passes through
    let none = Guidance::none();
    assert_eq!(none.num_branches(), 1);
    assert_eq!(
        values(none.combine(std::slice::from_ref(&b), 0, 10).expect("none")),
        vec![3.0; 4]
    );
    // per-step scale
    let g = Guidance::cfg_schedule(ScaleSchedule::Linear {
        start: 1.0,
        end: 3.0,
    });
    assert_eq!(
        values(g.combine(&[a.clone(), b.clone()], 2, 3).expect("cfg")),
        vec![7.0; 4]
    );
    assert!(!g.is_active(0, 3) && g.is_active(1, 3));
    // image + text: uncond + 2 (img - uncond) + 3 (full - img) = 1 + 4 + 3
    let it = Guidance::image_text(ScaleSchedule::Constant(2.0), ScaleSchedule::Constant(3.0));
    assert_eq!(it.num_branches(), 3);
    assert_eq!(
        values(it.combine(&[a.clone(), b.clone(), c], 0, 1).expect("it")),
        vec![8.0; 4]
    );
    assert!(matches!(
        it.combine(&[a.clone(), b], 0, 1),
        Err(SchedulerError::Guidance(_))
    ));
    assert!(
        Guidance::cfg(5.0)
            .combine_batched(t4(vec![0.0; 12], [3, 1, 2, 2]), 0, 1)
            .is_err()
    );
    let _ = QueuedNoise::<4>::default();
}
