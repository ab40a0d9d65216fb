//! Replays the diffusers traces of `tests/fixtures/schedulers/traces.json`
//! (written by `tools/reference/gen_schedulers.py`) step by step.

use burn::tensor::{Device, Tensor, TensorData};
use mm_schedulers::{
    QueuedNoise, SUPPORTED_CLASSES, Scheduler, TimestepRequest, scheduler_from_config,
};
use serde_json::Value;

const TOL: f64 = 1e-5;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/schedulers/traces.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture file");
    serde_json::from_str(&text).expect("fixture json")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn tensor(v: Vec<f32>, device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(v, [1, 2, 4, 4]), device)
}

fn values(t: Tensor<4>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 data")
}

/// max |a - b| / max |b|: the error relative to the tensor's scale.
fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-12);
    a.iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs()))
        / scale
}

fn request(case: &Value) -> TimestepRequest {
    let kw = &case["set_kwargs"];
    TimestepRequest {
        num_inference_steps: case["num_inference_steps"].as_u64().map(|n| n as usize),
        timesteps: kw.get("timesteps").map(f64s),
        sigmas: kw.get("sigmas").map(f64s),
        mu: kw.get("mu").and_then(Value::as_f64),
        strength: kw.get("strength").and_then(Value::as_f64),
        original_inference_steps: None,
    }
}

/// Runs one case; returns the max relative error over its steps.
fn run_case(case: &Value, device: &Device) -> Result<f64, String> {
    let name = case["name"].as_str().unwrap_or("?");
    // cross-construction cases build from a model's published config of another class
    let from_source = !case["source_config"].is_null();
    let mut config = if from_source {
        case["source_config"].clone()
    } else {
        case["config"].clone()
    };
    if let (Value::Object(c), Value::Object(kw)) = (&mut config, &case["step_kwargs"]) {
        for (k, v) in kw {
            c.insert(k.clone(), v.clone());
        }
    }
    let cls = case["cls"].as_str().unwrap_or("");
    let mut s: Box<dyn Scheduler<4>> =
        scheduler_from_config(cls, &config).map_err(|e| format!("{name}: {e}"))?;
    s.set_timesteps_with(&request(case))
        .map_err(|e| format!("{name}: set_timesteps: {e}"))?;

    let want_t = f64s(&case["timesteps"]);
    let got_t = s.timesteps().to_vec();
    if want_t.len() != got_t.len()
        || want_t
            .iter()
            .zip(&got_t)
            .any(|(a, b)| (a - b).abs() > 1e-4 * a.abs().max(1.0))
    {
        return Err(format!("{name}: timesteps {got_t:?} != {want_t:?}"));
    }
    if let (Some(want), Some(got)) = (
        case["sigmas"].as_array().map(|_| floats(&case["sigmas"])),
        s.sigmas(),
    ) {
        let e = rel_err(got, &want);
        if got.len() != want.len() || e > TOL {
            return Err(format!("{name}: sigmas {got:?} != {want:?}"));
        }
    }
    let want_ins = case["init_noise_sigma"].as_f64().unwrap_or(1.0);
    if (s.init_noise_sigma() - want_ins).abs() > 1e-5 * want_ins.abs() {
        return Err(format!(
            "{name}: init_noise_sigma {} != {want_ins}",
            s.init_noise_sigma()
        ));
    }
    let begin = case["begin_index"].as_u64().unwrap_or(0) as usize;
    if let Some(strength) = case["strength"].as_f64() {
        let b = s
            .set_strength(strength)
            .map_err(|e| format!("{name}: {e}"))?;
        if b != begin {
            return Err(format!("{name}: begin index {b} != {begin}"));
        }
    }
    let mut sample = tensor(floats(&case["sample0"]), device) * (want_ins as f32);
    let mut max_err = 0f64;
    for (i, step) in case["steps"].as_array().expect("steps").iter().enumerate() {
        let want_t = step["t"].as_f64().expect("t");
        let t = got_t[begin + i];
        if (t - want_t).abs() > 1e-4 * want_t.abs().max(1.0) {
            return Err(format!("{name}: step {i}: timestep {t} != {want_t}"));
        }
        let mut noise = QueuedNoise::new(
            step["noise"]
                .as_array()
                .expect("noise")
                .iter()
                .map(|n| tensor(floats(n), device)),
        );
        let x = s
            .scale_model_input(sample.clone(), t)
            .map_err(|e| format!("{name}: step {i}: {e}"))?;
        let t32 = t as f32;
        let mut out = x.clone() * t32 / (t32 + 1.0);
        if case["model"] == "learned_variance" {
            // second half of the channels: the predicted variance
            out = Tensor::cat(vec![out, x.clone() * x * 0.01 + 0.001], 1);
        }
        sample = s
            .step(out, t, sample, &mut noise)
            .map_err(|e| format!("{name}: step {i}: {e}"))?
            .prev_sample;
        if noise.remaining() != 0 {
            return Err(format!(
                "{name}: step {i}: {} noise tensors unused",
                noise.remaining()
            ));
        }
        let want = floats(&step["prev_sample"]);
        let got = values(sample.clone());
        let e = rel_err(&got, &want);
        max_err = max_err.max(e);
        if e.is_nan() || e > TOL {
            return Err(format!(
                "{name}: step {i} (t={t}): rel err {e:.3e}\n got  {got:?}\n want {want:?}"
            ));
        }
    }
    Ok(max_err)
}

#[test]
fn diffusers_traces() {
    let fx = fixture();
    let device = Device::flex();
    let mut failures = Vec::new();
    let (mut ran, mut skipped, mut worst) = (0, Vec::new(), 0f64);
    for case in fx["cases"].as_array().expect("cases") {
        let cls = case["cls"].as_str().unwrap_or("");
        if !SUPPORTED_CLASSES.contains(&cls) {
            skipped.push(case["name"].as_str().unwrap_or("?").to_string());
            continue;
        }
        match run_case(case, &device) {
            Ok(e) => {
                ran += 1;
                worst = worst.max(e);
            }
            Err(msg) => failures.push(msg),
        }
    }
    println!(
        "trace cases passed: {ran}, max relative error {worst:.3e}, skipped (unsupported class): {skipped:?}"
    );
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
