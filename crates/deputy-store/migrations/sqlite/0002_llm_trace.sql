-- The debug record of model calls (see deputy_core::trace). A run belongs to one
-- attempt of an agent task and goes with it when the task is cleaned. status_rank
-- mirrors status (in_progress 0 < interrupted 1 < error 2 < completed 3): updates only
-- move it up, so a status never regresses.

CREATE TABLE llm_runs (
    id           TEXT PRIMARY KEY,
    task_id      TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    task_attempt INTEGER NOT NULL,
    provider     TEXT NOT NULL,
    model        TEXT NOT NULL,
    status       TEXT NOT NULL,
    status_rank  INTEGER NOT NULL,
    error        TEXT,
    usage        TEXT,
    started_at   INTEGER NOT NULL,
    ended_at     INTEGER
);
CREATE INDEX llm_runs_task ON llm_runs (task_id, started_at);

CREATE TABLE llm_steps (
    run_id         TEXT NOT NULL REFERENCES llm_runs (id) ON DELETE CASCADE,
    number         INTEGER NOT NULL,
    operation      TEXT NOT NULL,
    request        TEXT NOT NULL,
    response       TEXT,
    usage          TEXT,
    status         TEXT NOT NULL,
    status_rank    INTEGER NOT NULL,
    error          TEXT,
    started_at     INTEGER NOT NULL,
    first_token_at INTEGER,
    ended_at       INTEGER,
    PRIMARY KEY (run_id, number)
);

CREATE TABLE llm_attempts (
    run_id           TEXT NOT NULL,
    step             INTEGER NOT NULL,
    number           INTEGER NOT NULL,
    method           TEXT NOT NULL,
    url              TEXT NOT NULL,
    status_code      INTEGER,
    request_headers  TEXT NOT NULL,
    request_body     TEXT,
    response_headers TEXT NOT NULL,
    response_body    TEXT,
    chunks           TEXT NOT NULL,
    chunks_omitted   INTEGER NOT NULL,
    started_at       INTEGER NOT NULL,
    duration_ms      INTEGER NOT NULL,
    error            TEXT,
    PRIMARY KEY (run_id, step, number),
    FOREIGN KEY (run_id, step) REFERENCES llm_steps (run_id, number) ON DELETE CASCADE
);
