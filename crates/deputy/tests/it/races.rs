//! Cancel racing completion: exactly one terminal status, one terminal event.

use deputy_core::{EventBody, Status, TaskId};

use crate::harness::*;

#[tokio::test]
async fn cancel_racing_completion_ends_exactly_once() {
    let d = TestDaemon::start(4).await;
    let mut ids: Vec<TaskId> = Vec::new();
    // 200 rounds, 10 at a time: submit a task that ends at once, cancel it at once.
    for _ in 0..20 {
        let mut handles = Vec::new();
        for i in 0..10 {
            let c = d.client.clone();
            handles.push(tokio::spawn(async move {
                let line = if i % 2 == 0 { "true" } else { "echo done" };
                let t = c.submit(&sh(line)).await.unwrap().task;
                // Both outcomes of the race are fine; an error other than "already
                // ended" is not.
                if let Err(e) = c.cancel(&t.id.to_string(), None).await {
                    assert_eq!(e.status(), Some(409), "{e}");
                }
                t.id
            }));
        }
        for h in handles {
            ids.push(h.await.unwrap());
        }
    }
    let mut finals = Vec::new();
    for id in &ids {
        finals.push(wait_done(&d.client, *id).await);
    }
    let events = d.events().await;
    let mut cancelled = 0;
    for t in &finals {
        let terminal: Vec<Status> = events
            .iter()
            .filter(|e| e.task == Some(t.id))
            .filter_map(|e| match e.body {
                EventBody::TaskFinished { status, .. } => Some(status),
                _ => None,
            })
            .collect();
        assert_eq!(
            terminal.len(),
            1,
            "task {} has terminal events {terminal:?}",
            t.id
        );
        assert_eq!(
            terminal[0], t.status,
            "the stored status equals the terminal event"
        );
        assert!(
            matches!(t.status, Status::Succeeded | Status::Cancelled),
            "{:?}",
            t.status
        );
        let status_changes_to_terminal = events
            .iter()
            .filter(|e| e.task == Some(t.id))
            .filter(|e| matches!(&e.body, EventBody::TaskStatus { to, .. } if to.is_terminal()))
            .count();
        assert_eq!(status_changes_to_terminal, 1);
        cancelled += usize::from(t.status == Status::Cancelled);
    }
    eprintln!("{cancelled} of {} rounds ended cancelled", finals.len());
    d.stop().await;
}
