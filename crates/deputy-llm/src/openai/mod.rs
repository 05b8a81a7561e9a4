//! OpenAI-compatible Chat Completions (OpenAI, vLLM, llama.cpp, Ollama, LiteLLM,
//! OpenRouter). For now: assembling a streamed response.

pub mod stream;
