//! Rotary scaling variants match transformers' `LlamaForCausalLM` (default, linear, dynamic
//! NTK past `max_position_embeddings`, llama3), configs in the published spelling.

#[path = "../../mm-vision/tests/common/mod.rs"]
mod common;

use common::{Expected, device, fixture};
use mm_core::weights::Weights;
use mm_vlm::config::TextConfig;
use mm_vlm::kv_cache::KvCache;
use mm_vlm::llama::LlamaForCausalLM;

const NAME: &str = "llama-rope-tiny";

#[test]
fn rope_variants_match_transformers() {
    let exp = Expected::open(NAME);
    let dir = fixture(NAME);
    for rope in ["default", "linear", "dynamic", "llama3"] {
        let config: TextConfig =
            mm_core::config::read_json(dir.join(format!("config_{rope}.json"))).unwrap();
        assert_eq!(config.rope().rope_type, rope);
        let weights = Weights::open(&dir).unwrap();
        let model = LlamaForCausalLM::from_weights(&config, weights, &device()).unwrap();
        let ids = exp.int::<2>("input_ids");
        // 24 tokens, max_position_embeddings = 16: only dynamic scaling may run past it
        let logits = model.forward(ids, None, &mut KvCache::new());
        if rope == "dynamic" {
            exp.check(&format!("logits_{rope}"), logits.unwrap(), 1e-4);
        } else {
            assert!(matches!(
                logits,
                Err(mm_vlm::Error::TooLong { len: 24, max: 16 })
            ));
            let ids = exp.int::<2>("input_ids").narrow(1, 0, 16);
            let logits = model.forward(ids, None, &mut KvCache::new()).unwrap();
            let expected = exp.float::<3>(&format!("logits_{rope}")).narrow(1, 0, 16);
            let err: f32 = (logits - expected).abs().max().into_scalar();
            eprintln!("logits_{rope} (16 positions): max abs error {err:.2e}");
            assert!(err <= 1e-4, "{rope}: {err}");
        }
    }
}
