//! OpenAI-compatible Chat Completions (OpenAI, vLLM, llama.cpp, Ollama, LiteLLM,
//! OpenRouter): the client and the assembly of streamed responses.

pub mod client;
pub mod stream;
