//! Parsing a recorded-shape stream of 100k chunks: chunks/s through the assembler,
//! against plain `serde_json` parsing of the same chunks in the same run.
//! Run with `cargo bench -p deputy-llm --bench parse`.

use std::time::Instant;

use deputy_llm::openai::stream::StreamAccumulator;

fn main() {
    const N: usize = 100_000;
    let mut chunks: Vec<String> = Vec::with_capacity(N + 2);
    chunks.push(r#"{"choices":[{"index":0,"delta":{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"write_file","arguments":""}}]}}]}"#.into());
    for i in 0..N {
        if i % 2 == 0 {
            chunks.push(format!(r#"{{"choices":[{{"index":0,"delta":{{"content":"token {i} "}},"finish_reason":null}}]}}"#));
        } else {
            chunks.push(format!(r#"{{"choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":0,"function":{{"arguments":"{i},"}}}}]}}}}]}}"#));
        }
    }
    chunks.push(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":10,"completion_tokens":100000}}"#.into());

    let start = Instant::now();
    let mut parsed = 0usize;
    for c in &chunks {
        let v: serde_json::Value = serde_json::from_str(c).expect("valid");
        parsed += v.as_object().map_or(0, |o| o.len());
    }
    let baseline = start.elapsed();

    let start = Instant::now();
    let mut acc = StreamAccumulator::new();
    for c in &chunks {
        acc.push(c).expect("valid");
    }
    acc.push("[DONE]").expect("done");
    let done = acc.finish().expect("complete");
    let ours = start.elapsed();

    let rate = |d: std::time::Duration| chunks.len() as f64 / d.as_secs_f64();
    println!(
        "== parse: {} chunks ({parsed} top-level keys)",
        chunks.len()
    );
    println!(
        "  serde_json::from_str only : {:>12.0} chunks/s ({baseline:.2?})",
        rate(baseline)
    );
    println!(
        "  StreamAccumulator         : {:>12.0} chunks/s ({ours:.2?})",
        rate(ours)
    );
    println!(
        "  ratio assembler / parse-only time: {:.2}x",
        ours.as_secs_f64() / baseline.as_secs_f64()
    );
    assert!(matches!(
        done.finish_reason,
        deputy_llm::FinishReason::ToolCalls
    ));
}
