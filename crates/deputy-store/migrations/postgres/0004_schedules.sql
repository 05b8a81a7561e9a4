-- Recurring schedules. A tick fires by a compare-and-set on next_fire_at in the same
-- transaction as the task it submits; schedule_runs has one row per tick.
CREATE TABLE schedules (
    name           TEXT PRIMARY KEY,
    -- A cron pattern read in tz, or (cron NULL) every every_ms from anchor.
    cron           TEXT,
    tz             TEXT NOT NULL,
    every_ms       BIGINT,
    anchor         BIGINT,
    -- The task template (the NewTask JSON as submitted).
    task           TEXT NOT NULL,
    missed         TEXT NOT NULL,
    catch_up_limit BIGINT NOT NULL,
    overlap        TEXT NOT NULL,
    keep_runs      BIGINT NOT NULL,
    paused         BIGINT NOT NULL DEFAULT 0,
    next_fire_at   BIGINT,
    last_fire_at   BIGINT,
    fired          BIGINT NOT NULL DEFAULT 0,
    skipped        BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    CHECK ((cron IS NULL) <> (every_ms IS NULL))
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE paused = 0;

CREATE TABLE schedule_runs (
    schedule TEXT NOT NULL REFERENCES schedules (name) ON DELETE CASCADE,
    tick     BIGINT NOT NULL,
    task_id  TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    fired_at BIGINT NOT NULL,
    PRIMARY KEY (schedule, tick)
);
CREATE INDEX schedule_runs_task ON schedule_runs (task_id);
