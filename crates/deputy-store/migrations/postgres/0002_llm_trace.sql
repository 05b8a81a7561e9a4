-- PostgreSQL dialect of the SQLite migration of the same name: integers are BIGINT.
-- The debug record of model calls (see deputy_core::trace). A run belongs to one
-- attempt of an agent task and goes with it when the task is cleaned. status_rank
-- mirrors status (in_progress 0 < interrupted 1 < error 2 < completed 3): updates only
-- move it up, so a status never regresses.

CREATE TABLE llm_runs (
    id           TEXT COLLATE "C" PRIMARY KEY,
    task_id      TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    task_attempt BIGINT NOT NULL,
    provider     TEXT NOT NULL,
    model        TEXT NOT NULL,
    status       TEXT NOT NULL,
    status_rank  BIGINT NOT NULL,
    error        TEXT,
    usage        TEXT,
    started_at   BIGINT NOT NULL,
    ended_at     BIGINT
);
CREATE INDEX llm_runs_task ON llm_runs (task_id, started_at);

CREATE TABLE llm_steps (
    run_id         TEXT NOT NULL REFERENCES llm_runs (id) ON DELETE CASCADE,
    number         BIGINT NOT NULL,
    operation      TEXT NOT NULL,
    request        TEXT NOT NULL,
    response       TEXT,
    usage          TEXT,
    status         TEXT NOT NULL,
    status_rank    BIGINT NOT NULL,
    error          TEXT,
    started_at     BIGINT NOT NULL,
    first_token_at BIGINT,
    ended_at       BIGINT,
    PRIMARY KEY (run_id, number)
);

CREATE TABLE llm_attempts (
    run_id           TEXT NOT NULL,
    step             BIGINT NOT NULL,
    number           BIGINT NOT NULL,
    method           TEXT NOT NULL,
    url              TEXT NOT NULL,
    status_code      BIGINT,
    request_headers  TEXT NOT NULL,
    request_body     TEXT,
    response_headers TEXT NOT NULL,
    response_body    TEXT,
    chunks           TEXT NOT NULL,
    chunks_omitted   BIGINT NOT NULL,
    started_at       BIGINT NOT NULL,
    duration_ms      BIGINT NOT NULL,
    error            TEXT,
    PRIMARY KEY (run_id, step, number),
    FOREIGN KEY (run_id, step) REFERENCES llm_steps (run_id, number) ON DELETE CASCADE
);
