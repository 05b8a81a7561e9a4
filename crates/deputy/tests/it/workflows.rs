//! `deputy run`: a plan → implement → test workflow with output passing, run in order
//! through the CLI; and a failing step that stops what depends on it.

use deputy_core::{EventBody, Status};
use tokio::process::Command;

use crate::harness::*;
use crate::mock_llm::{self, say};

async fn deputy(url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_deputy"))
        .args(["--url", url])
        .args(args)
        .env("DEPUTY_CONFIG", "/dev/null")
        .output()
        .await
        .unwrap()
}

const WORKFLOW: &str = r#"
name = "fix-calc"

[steps.plan]
prompt = "Plan the fix of calc.sh"

[steps.implement]
agent = "generic"
prompt = "printf '%s\n' '{{steps.plan.output}}' > plan.txt && sed -i 's/-/+/' calc.sh && echo implemented"
depends_on = ["plan"]

[steps.test]
command = "test \"$(sh calc.sh)\" = 4 && grep -q addition plan.txt && echo \"tests pass after: {{steps.implement.output}}\""
depends_on = ["implement"]
"#;

#[tokio::test]
async fn a_three_step_workflow_passes_outputs_and_runs_in_order() {
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(ws.path().join("calc.sh"), "echo $((2 - 2))\n").unwrap();
    std::fs::write(ws.path().join("wf.toml"), WORKFLOW).unwrap();
    let (model, provider) =
        mock_llm::start(vec![say("Use addition instead of subtraction.")], None).await;
    let d = TestDaemon::start_with(2, |c| {
        c.providers.insert("mock".into(), provider);
        c.agents.default_provider = "mock".into();
    })
    .await;
    let wf = ws.path().join("wf.toml");
    let out = deputy(
        &d.url(),
        &[
            "run",
            wf.to_str().unwrap(),
            "--cwd",
            ws.path().to_str().unwrap(),
            "--wait",
        ],
    )
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("workflow fix-calc submitted: 3 steps"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(ws.path().join("plan.txt")).unwrap(),
        "Use addition instead of subtraction.\n"
    );
    let prompt = model.requests.lock().unwrap()[0]["messages"][1]["content"].clone();
    assert_eq!(prompt, "Plan the fix of calc.sh");

    let page = d
        .client
        .list(&[("label", "workflow:fix-calc".into())])
        .await
        .unwrap();
    assert_eq!(page.tasks.len(), 3);
    let id_of = |name: &str| {
        page.tasks
            .iter()
            .find(|t| t.spec.name.as_deref() == Some(name))
            .unwrap()
            .id
    };
    let test = id_of("test");
    let log = String::from_utf8(d.client.logs_text(&test.to_string(), &[]).await.unwrap()).unwrap();
    assert_eq!(log, "tests pass after: implemented\n");
    // In order: each step started only after the one before it succeeded.
    let events = collect_events(&d.client).await;
    let seqs = status_seqs(&events);
    for (before, after) in [("plan", "implement"), ("implement", "test")] {
        assert!(seqs[&(id_of(before), Status::Succeeded)] < seqs[&(id_of(after), Status::Running)]);
    }
    let ls = deputy(&d.url(), &["ls", "--workflow", "fix-calc"]).await;
    let ls = String::from_utf8_lossy(&ls.stdout);
    assert_eq!(ls.lines().count(), 4, "{ls}");
    d.stop().await;
}

#[tokio::test]
async fn a_failing_step_stops_the_steps_after_it() {
    let ws = tempfile::tempdir().unwrap();
    std::fs::write(
        ws.path().join("wf.yaml"),
        "name: broken\nsteps:\n  build:\n    command: \"echo building; exit 3\"\n  test:\n    command: \"echo never\"\n    depends_on: [build]\n  report:\n    command: \"echo report\"\n    after_finish: [build]\n",
    )
    .unwrap();
    let d = TestDaemon::start(2).await;
    let wf = ws.path().join("wf.yaml");
    let out = deputy(&d.url(), &["run", wf.to_str().unwrap(), "--wait"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let page = d
        .client
        .list(&[("label", "workflow:broken".into())])
        .await
        .unwrap();
    let status_of = |name: &str| {
        page.tasks
            .iter()
            .find(|t| t.spec.name.as_deref() == Some(name))
            .unwrap()
            .status
    };
    assert_eq!(status_of("build"), Status::Failed);
    assert_eq!(status_of("test"), Status::Cancelled);
    assert_eq!(
        status_of("report"),
        Status::Succeeded,
        "after_finish runs whatever the outcome"
    );
    let never = page
        .tasks
        .iter()
        .find(|t| t.spec.name.as_deref() == Some("test"))
        .unwrap();
    let events = collect_events(&d.client).await;
    assert!(!events.iter().any(|e| e.task == Some(never.id)
        && matches!(
            e.body,
            EventBody::TaskStatus {
                to: Status::Running,
                ..
            }
        )));
    // A workflow that does not make sense is refused before anything is submitted.
    std::fs::write(
        ws.path().join("bad.toml"),
        "[steps.a]\ncommand = \"x\"\ndepends_on = [\"b\"]\n",
    )
    .unwrap();
    let out = deputy(
        &d.url(),
        &["run", ws.path().join("bad.toml").to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("depends on `b`, which is not a step"));
    d.stop().await;
}
