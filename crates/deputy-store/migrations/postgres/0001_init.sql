-- deputy's schema, PostgreSQL dialect (the same tables as SQLite's). Times are Unix
-- milliseconds; every integer is BIGINT so both backends decode the same Rust types.

CREATE TABLE groups (
    name        TEXT PRIMARY KEY,
    -- NULL: no group limit (the node's global limit still applies).
    parallel    BIGINT,
    paused      BIGINT NOT NULL DEFAULT 0,
    -- Tasks of this group now running, kept in the same transactions that move a task
    -- into or out of `running`, so the group limit is one indexed read at claim time.
    running     BIGINT NOT NULL DEFAULT 0 CHECK (running >= 0),
    created_at  BIGINT NOT NULL
);
INSERT INTO groups (name, parallel, paused, running, created_at) VALUES ('default', NULL, 0, 0, 0);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO settings (key, value) VALUES ('queue_paused', '0');

CREATE TABLE tasks (
    id               TEXT COLLATE "C" PRIMARY KEY,
    status           TEXT NOT NULL,
    priority         BIGINT NOT NULL,
    group_name       TEXT NOT NULL REFERENCES groups (name),
    attempt          BIGINT NOT NULL,
    spec             TEXT NOT NULL,
    title            TEXT NOT NULL,
    idempotency_key  TEXT UNIQUE,
    -- The task.created event's seq: the task's age in queue order.
    queue_seq        BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    ready_at         BIGINT,
    exit_code        BIGINT,
    signal           BIGINT,
    reason           TEXT,
    node             TEXT,
    lease_expires_at BIGINT,
    pgid             BIGINT,
    cancel_requested BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX tasks_ready ON tasks (status, priority, queue_seq);
CREATE INDEX tasks_by_seq ON tasks (queue_seq);
CREATE INDEX tasks_status_seq ON tasks (status, queue_seq);
CREATE INDEX tasks_group_ready ON tasks (group_name, status, priority, queue_seq);
CREATE INDEX tasks_due ON tasks (ready_at) WHERE status = 'scheduled';
CREATE INDEX tasks_node ON tasks (node, status);
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;

-- queue_seq is copied from the task so a label filter walks (label, queue_seq) in list
-- order instead of scanning every task.
CREATE TABLE task_labels (
    label     TEXT NOT NULL,
    task_id   TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    queue_seq BIGINT NOT NULL,
    PRIMARY KEY (label, task_id)
);
CREATE INDEX task_labels_order ON task_labels (label, queue_seq);
CREATE INDEX task_labels_task ON task_labels (task_id);

CREATE TABLE task_deps (
    task_id    TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    depends_on TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    mode       TEXT NOT NULL,
    PRIMARY KEY (task_id, depends_on)
);
CREATE INDEX task_deps_reverse ON task_deps (depends_on);

CREATE TABLE attempts (
    task_id       TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    number        BIGINT NOT NULL,
    status        TEXT NOT NULL,
    node          TEXT,
    started_at    BIGINT NOT NULL,
    finished_at   BIGINT,
    exit_code     BIGINT,
    signal        BIGINT,
    reason        TEXT,
    output_bytes  BIGINT NOT NULL DEFAULT 0,
    omitted_bytes BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, number)
);

-- Append-only. Every transaction that appends holds one advisory lock until it commits,
-- so seqs commit in order and "after N" never misses a row that commits later.
CREATE TABLE events (
    seq     BIGSERIAL PRIMARY KEY,
    task_id TEXT,
    type    TEXT NOT NULL,
    payload TEXT NOT NULL,
    at      BIGINT NOT NULL
);
CREATE INDEX events_task ON events (task_id, seq);

CREATE TABLE output_chunks (
    task_id   TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    attempt   BIGINT NOT NULL,
    stream    TEXT NOT NULL,
    "offset"  BIGINT NOT NULL,
    data      BYTEA NOT NULL,
    event_seq BIGINT NOT NULL,
    PRIMARY KEY (task_id, attempt, stream, "offset")
);
CREATE INDEX output_chunks_event ON output_chunks (event_seq);

CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL,
    address      TEXT
);
