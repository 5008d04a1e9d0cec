use radixlm_core::{EngineHandle, EngineOptions, Event, PromptInput};
use serde_json::json;

fn model_path() -> String {
    let home = std::env::var("HOME").unwrap();
    format!("{home}/.cache/radixlm/SmolLM2-135M-Instruct.Q4_1.gguf")
}

#[test]
fn greedy_generation_runs() {
    let opts = EngineOptions::from_json(&json!({"modelPath": model_path()})).unwrap();
    let t = std::time::Instant::now();
    let eng = EngineHandle::start(opts, &mut |_| {}).unwrap();
    eprintln!("load {:?}", t.elapsed());
    let tk = eng.tokenizer().unwrap();
    eprintln!("ids {:?}", tk.encode("The capital of France is").unwrap());
    let t = std::time::Instant::now();
    let mut hs = eng.submit(PromptInput::Text("The capital of France is".into()), &json!({"temperature": 0, "maxNewTokens": 32}), None, false).unwrap();
    let ev = hs[0].next_blocking().unwrap();
    eprintln!("gen {:?}", t.elapsed());
    match ev {
        Event::Done(o) => eprintln!("{:?} {:?} {:?}", o.text, o.output_ids, o.finish),
        other => panic!("{other:?}"),
    }
}
