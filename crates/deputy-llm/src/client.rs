//! One client for any configured provider: the wire format is the provider's `kind`.

use std::time::Duration;

use crate::anthropic::client::AnthropicClient;
use crate::call::{LlmError, Outcome};
use crate::openai::client::{ChatRequest, OpenAiClient};
use crate::providers::{ProviderConfig, ProviderKind};
use crate::record::RunRecorder;
use crate::retry::RetryPolicy;

#[derive(Debug, Clone)]
pub enum ModelClient {
    OpenAi(OpenAiClient),
    Anthropic(AnthropicClient),
}

impl ModelClient {
    /// A client for `provider`, its key read from the environment now.
    pub fn for_provider(provider: &ProviderConfig, env: &dyn Fn(&str) -> Option<String>) -> Self {
        let key = provider.api_key(env);
        let retry = RetryPolicy {
            deadline: provider.timeout().max(Duration::from_secs(1)),
            ..RetryPolicy::default()
        };
        match provider.kind {
            ProviderKind::OpenAi => {
                let mut c = OpenAiClient::new(&provider.base_url, key);
                c.retry = retry;
                ModelClient::OpenAi(c)
            }
            ProviderKind::Anthropic => {
                let mut c = AnthropicClient::new(&provider.base_url, key);
                c.retry = retry;
                ModelClient::Anthropic(c)
            }
        }
    }

    pub fn retry_mut(&mut self) -> &mut RetryPolicy {
        match self {
            ModelClient::OpenAi(c) => &mut c.retry,
            ModelClient::Anthropic(c) => &mut c.retry,
        }
    }

    /// A streamed completion, recorded as a step of `run` when there is one.
    pub async fn stream(
        &self,
        req: &ChatRequest,
        on_text: &mut (dyn FnMut(&str) + Send),
        run: Option<&RunRecorder>,
    ) -> Result<Outcome, LlmError> {
        match self {
            ModelClient::OpenAi(c) => c.call(req, true, on_text, run).await,
            ModelClient::Anthropic(c) => c.call(req, on_text, run).await,
        }
    }
}
