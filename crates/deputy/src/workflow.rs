//! Workflow files: named steps (shell commands or agents) and their dependencies, in TOML
//! or YAML, submitted as one DAG of tasks in one transaction. A later step can use an
//! earlier one's output as `{{steps.NAME.output}}` (the daemon fills it in when the step
//! starts). Every task of a run carries the label `workflow:<name>`, so
//! `deputy ls --workflow NAME` shows the workflow as one unit.
//!
//! ```toml
//! name = "fix-flaky-test"
//! [steps.plan]
//! agent = "builtin"
//! prompt = "Find why tests/net.rs is flaky and write a plan."
//! [steps.implement]
//! agent = "claude"
//! prompt = "Carry out this plan:\n{{steps.plan.output}}"
//! depends_on = ["plan"]
//! [steps.test]
//! command = "cargo test"
//! depends_on = ["implement"]
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use deputy_core::agent::AgentInput;
use deputy_core::submit::{DepInput, DepTarget, NewTask, TimeoutInput};
use deputy_core::{Command, DepMode};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// Defaults to the file's name without its extension.
    #[serde(default)]
    pub name: Option<String>,
    /// Group of every step that names none.
    #[serde(default)]
    pub group: Option<String>,
    pub steps: BTreeMap<String, Step>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// A shell line (or argv list) for a shell step.
    #[serde(default)]
    pub command: Option<Command>,
    /// The prompt of an agent step.
    #[serde(default)]
    pub prompt: Option<String>,
    /// The agent backend (default `builtin` when there is a prompt).
    #[serde(default)]
    pub agent: Option<String>,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub system_prompt: Option<String>,
    #[serde(default)]
    pub worktree: bool,
    #[serde(default)]
    pub max_turns: Option<u32>,
    #[serde(default)]
    pub max_tokens: Option<u64>,
    #[serde(default)]
    pub max_cost_usd: Option<f64>,
    /// Steps that must succeed first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Steps that must end first, whatever their outcome.
    #[serde(default)]
    pub after_finish: Vec<String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub timeout: Option<TimeoutInput>,
    #[serde(default)]
    pub retries: Option<u32>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub priority: Option<deputy_core::Priority>,
}

impl Workflow {
    /// Reads a `.toml`, `.yaml` or `.yml` file.
    pub fn load(path: &Path) -> anyhow::Result<Workflow> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the workflow {}", path.display()))?;
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let mut wf: Workflow = match ext {
            "toml" => toml::from_str(&text)
                .with_context(|| format!("{} is not a valid workflow", path.display()))?,
            "yaml" | "yml" => serde_yaml_ng::from_str(&text)
                .with_context(|| format!("{} is not a valid workflow", path.display()))?,
            _ => bail!(
                "{}: a workflow file ends in .toml, .yaml or .yml",
                path.display()
            ),
        };
        if wf.name.is_none() {
            wf.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        Ok(wf)
    }

    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("workflow")
    }

    /// The tasks of one run, in one batch: each keyed by its step name, depending on
    /// its steps by key. `cwd` is the default working directory.
    pub fn tasks(&self, cwd: &str) -> anyhow::Result<Vec<NewTask>> {
        if self.steps.is_empty() {
            bail!("the workflow has no steps");
        }
        let name = self.name();
        deputy_core::limits::check_group_name(name)
            .map_err(|m| anyhow::anyhow!("workflow name `{name}`: {m}"))?;
        let mut out = Vec::new();
        for (step_name, s) in &self.steps {
            let what = |m: &str| anyhow::anyhow!("step `{step_name}`: {m}");
            for dep in s.depends_on.iter().chain(&s.after_finish) {
                if !self.steps.contains_key(dep) {
                    return Err(what(&format!("depends on `{dep}`, which is not a step")));
                }
            }
            let agent = match (&s.command, &s.prompt) {
                (Some(_), Some(_)) => {
                    return Err(what(
                        "has both a command and a prompt; a step is one or the other",
                    ));
                }
                (None, None) => return Err(what("needs a command (shell) or a prompt (agent)")),
                (Some(_), None) => {
                    if s.agent.is_some() || s.model.is_some() || s.worktree {
                        return Err(what("agent settings need a prompt, not a command"));
                    }
                    None
                }
                (None, Some(prompt)) => Some(AgentInput {
                    backend: s.agent.clone(),
                    prompt: prompt.clone(),
                    provider: s.provider.clone(),
                    model: s.model.clone(),
                    system_prompt: s.system_prompt.clone(),
                    worktree: s.worktree,
                    max_turns: s.max_turns,
                    max_tokens: s.max_tokens,
                    max_cost_usd: s.max_cost_usd,
                    resume_session: None,
                }),
            };
            // Output passing only works along a dependency: the output must exist.
            let text = match (&s.command, &s.prompt) {
                (Some(Command::Line(l)), _) => l.clone(),
                (_, Some(p)) => p.clone(),
                _ => String::new(),
            };
            for r in deputy_core::agent::step_references(&text) {
                if !s.depends_on.contains(&r) && !s.after_finish.contains(&r) {
                    return Err(what(&format!(
                        "uses {{{{steps.{r}.output}}}} but does not depend on `{r}`; add it to depends_on"
                    )));
                }
            }
            let mut depends_on: Vec<DepInput> = s
                .depends_on
                .iter()
                .map(|d| DepInput {
                    target: DepTarget::Key(d.clone()),
                    mode: DepMode::Success,
                })
                .collect();
            depends_on.extend(s.after_finish.iter().map(|d| DepInput {
                target: DepTarget::Key(d.clone()),
                mode: DepMode::Finish,
            }));
            out.push(NewTask {
                kind: None,
                agent,
                command: s.command.clone(),
                name: Some(step_name.clone()),
                labels: vec![format!("workflow:{name}")],
                priority: s.priority,
                group: s.group.clone().or_else(|| self.group.clone()),
                depends_on,
                cwd: Some(s.cwd.clone().unwrap_or_else(|| cwd.to_string())),
                env: s.env.clone(),
                timeout: s.timeout.clone(),
                max_attempts: s.retries.map(|r| r.saturating_add(1)),
                key: Some(step_name.clone()),
                ..NewTask::default()
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> anyhow::Result<Vec<NewTask>> {
        let wf: Workflow = toml::from_str(toml_text)?;
        wf.tasks("/tmp")
    }

    #[test]
    fn a_pipeline_becomes_keyed_tasks_with_labels() {
        let tasks = parse(
            r#"
            name = "fix"
            [steps.plan]
            prompt = "plan it"
            [steps.implement]
            agent = "claude"
            prompt = "do {{steps.plan.output}}"
            depends_on = ["plan"]
            [steps.test]
            command = "make test"
            depends_on = ["implement"]
            "#,
        )
        .unwrap();
        let by_name: BTreeMap<_, _> = tasks.iter().map(|t| (t.key.clone().unwrap(), t)).collect();
        assert_eq!(
            by_name["implement"]
                .agent
                .as_ref()
                .unwrap()
                .backend
                .as_deref(),
            Some("claude")
        );
        assert_eq!(
            by_name["test"].depends_on[0].target,
            DepTarget::Key("implement".into())
        );
        assert!(tasks.iter().all(|t| t.labels == ["workflow:fix"]));
        assert_eq!(by_name["plan"].name.as_deref(), Some("plan"));
    }

    #[test]
    fn mistakes_are_named() {
        let e = parse("[steps.a]\ncommand = \"x\"\ndepends_on = [\"nope\"]").unwrap_err();
        assert!(e.to_string().contains("`nope`, which is not a step"), "{e}");
        let e = parse("[steps.a]\nprompt = \"{{steps.b.output}}\"\n[steps.b]\ncommand = \"x\"")
            .unwrap_err();
        assert!(e.to_string().contains("does not depend on `b`"), "{e}");
        let e = parse("[steps.a]\ncommand = \"x\"\nprompt = \"y\"").unwrap_err();
        assert!(e.to_string().contains("one or the other"), "{e}");
        assert!(parse("[steps.a]\nbogus = 1").is_err());
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        /// A workflow of up to 8 steps with random edges (cycles, unknown steps, output
        /// references to steps not depended on included), as TOML.
        fn workflow_toml() -> impl Strategy<Value = String> {
            let step = (
                prop::collection::vec(0usize..10, 0..3),
                prop::collection::vec(0usize..10, 0..2),
                any::<bool>(),
                prop::option::of(0usize..10),
            );
            prop::collection::vec(step, 1..8).prop_map(|steps| {
                let name = |i: usize| format!("s{i}");
                let mut t = String::from("name = \"w\"\n");
                for (i, (deps, after, agent, uses)) in steps.iter().enumerate() {
                    t.push_str(&format!("[steps.{}]\n", name(i)));
                    let used = uses
                        .map(|u| format!(" {{{{steps.{}.output}}}}", name(u)))
                        .unwrap_or_default();
                    if *agent {
                        t.push_str(&format!("prompt = \"do it{used}\"\n"));
                    } else {
                        t.push_str(&format!("command = \"echo{used}\"\n"));
                    }
                    let list = |v: &[usize]| {
                        v.iter()
                            .map(|d| format!("\"{}\"", name(*d)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    t.push_str(&format!(
                        "depends_on = [{}]\nafter_finish = [{}]\n",
                        list(deps),
                        list(after)
                    ));
                }
                t
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            /// Any text as TOML or YAML is a workflow or an error, never a panic.
            #[test]
            fn any_file_is_a_workflow_or_an_error(text in any::<String>()) {
                if let Ok(wf) = toml::from_str::<Workflow>(&text) {
                    let _ = wf.tasks("/tmp");
                }
                if let Ok(wf) = serde_yaml_ng::from_str::<Workflow>(&text) {
                    let _ = wf.tasks("/tmp");
                }
            }

            /// Generated workflows: when accepted, every dependency names a step of the
            /// batch, and every output a step uses comes from a step it depends on.
            #[test]
            fn accepted_workflows_only_reference_their_own_steps(text in workflow_toml()) {
                let wf: Workflow = toml::from_str(&text).unwrap();
                if let Ok(tasks) = wf.tasks("/tmp") {
                    let keys: Vec<String> = tasks.iter().filter_map(|t| t.key.clone()).collect();
                    prop_assert_eq!(keys.len(), tasks.len());
                    for t in &tasks {
                        for d in &t.depends_on {
                            match &d.target {
                                DepTarget::Key(k) => prop_assert!(keys.contains(k), "unknown {}", k),
                                other => prop_assert!(false, "a workflow depends on {:?}", other),
                            }
                        }
                    }
                }
            }
        }
    }
}
