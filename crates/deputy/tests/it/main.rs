//! Integration tests: a real daemon (in-process on port 0, or a real child process where
//! the test kills it), driven through its HTTP API and CLI. Waits are on events with a
//! deadline, never on sleeps.

mod agent_cli;
mod agents;
mod chaos;
mod cli;
mod cluster;
mod dag;
mod dashboard;
mod harness;
mod http;
mod input;
mod mcp;
mod mock_llm;
mod output;
mod processes;
mod provider_faults;
mod races;
mod recovery;
mod schedules;
mod scheduling;
mod storage_faults;
mod streams;
mod trace;
mod workflows;
