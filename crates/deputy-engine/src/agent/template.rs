//! Workflow output passing: `{{steps.NAME.output}}` in an agent's prompt becomes the
//! output of the dependency named NAME, read when the attempt starts (so it is the
//! dependency's final output). For an agent dependency that is its final answer; for a
//! shell dependency, its stdout (the last 64 KiB).

use deputy_core::agent::{MAX_RESULT_BYTES, cap_result, step_placeholder, step_references};
use deputy_core::{Stream, Task, TaskKind};
use deputy_store::Store;

/// The text with every reference replaced, or why it cannot be.
pub async fn expand(store: &dyn Store, task: &Task, text: &str) -> Result<String, String> {
    let mut out = text.to_string();
    for (name, output) in resolve(store, task, text).await? {
        out = out.replace(&step_placeholder(&name), &output);
    }
    Ok(out)
}

/// The environment variable a shell step reads an output from.
pub fn env_name(step: &str) -> String {
    let upper: String = step
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("DEPUTY_STEP_{upper}_OUTPUT")
}

/// For a shell command line: each reference becomes a quoted variable
/// (`"$DEPUTY_STEP_PLAN_OUTPUT"`) set to the output, so an output is never parsed as
/// shell code.
pub async fn expand_shell(
    store: &dyn Store,
    task: &Task,
    line: &str,
) -> Result<(String, Vec<(String, String)>), String> {
    let mut out = line.to_string();
    let mut env = Vec::new();
    for (name, output) in resolve(store, task, line).await? {
        let var = env_name(&name);
        out = out.replace(&step_placeholder(&name), &format!("\"${var}\""));
        env.push((var, output));
    }
    Ok((out, env))
}

/// Each referenced step and its output.
async fn resolve(
    store: &dyn Store,
    task: &Task,
    text: &str,
) -> Result<Vec<(String, String)>, String> {
    let names = step_references(text);
    if names.is_empty() {
        return Ok(vec![]);
    }
    let full = store
        .get(task.id)
        .await
        .map_err(|e| format!("cannot read the task's dependencies: {e}"))?;
    let mut out = Vec::new();
    for name in names {
        let mut found = None;
        for dep in &full.depends_on {
            let t = store
                .get(dep.task)
                .await
                .map_err(|e| format!("cannot read dependency {}: {e}", dep.task))?;
            if t.spec.name.as_deref() == Some(name.as_str()) {
                found = Some(t);
                break;
            }
        }
        let Some(dep) = found else {
            return Err(format!(
                "{{{{steps.{name}.output}}}} names no dependency of this task: depend on the step named `{name}`"
            ));
        };
        let output = output_of(store, &dep).await?;
        out.push((name, output));
    }
    Ok(out)
}

async fn output_of(store: &dyn Store, dep: &Task) -> Result<String, String> {
    if matches!(dep.spec.kind, TaskKind::Agent { .. })
        && let Some(r) = dep.usage.as_ref().and_then(|u| u.result.clone())
    {
        return Ok(r);
    }
    let chunks = store
        .read_output(dep.id, dep.attempt, Some(Stream::Stdout), 0)
        .await
        .map_err(|e| format!("cannot read the output of {}: {e}", dep.id))?;
    let bytes: Vec<u8> = chunks.into_iter().flat_map(|c| c.data).collect();
    let text = String::from_utf8_lossy(&bytes);
    let start = text.ceil_char_boundary(text.len().saturating_sub(MAX_RESULT_BYTES));
    Ok(cap_result(text[start..].trim_end()))
}
