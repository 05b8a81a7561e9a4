-- Task ids are stored in their time-ordered form (`TaskId::key`: the UUIDv7's bytes in
-- their own order) instead of the text form users see, whose bytes are reversed so that
-- its first characters are random. With random keys, every index keyed by task (the
-- tasks' primary key, attempts, events by task, output, labels, edges) took each new
-- entry on a random page: a commit of 90 tasks dirtied about 90 pages in each of them,
-- and the noop benchmark wrote 6.6 pages per task to the WAL. In time order new entries
-- go to each index's right edge.
--
-- Every stored id is rewritten here: its 16 two-character bytes in reverse order.
-- The tasks' keys change under the rows that refer to them, so the foreign keys that
-- point at tasks are made deferrable for this transaction (checked at its end, when
-- every reference has changed too) and immediate again afterwards.
DO $$
DECLARE c record;
BEGIN
    FOR c IN SELECT conname, conrelid::regclass AS tbl FROM pg_constraint
             WHERE contype = 'f' AND confrelid = 'tasks'::regclass LOOP
        EXECUTE format('ALTER TABLE %s ALTER CONSTRAINT %I DEFERRABLE INITIALLY IMMEDIATE', c.tbl, c.conname);
    END LOOP;
END $$;
SET CONSTRAINTS ALL DEFERRED;
UPDATE tasks SET id = substr(id, 31, 2)||substr(id, 29, 2)||substr(id, 27, 2)||substr(id, 25, 2)||substr(id, 23, 2)||substr(id, 21, 2)||substr(id, 19, 2)||substr(id, 17, 2)||substr(id, 15, 2)||substr(id, 13, 2)||substr(id, 11, 2)||substr(id, 9, 2)||substr(id, 7, 2)||substr(id, 5, 2)||substr(id, 3, 2)||substr(id, 1, 2) WHERE length(id) = 32;
UPDATE task_labels SET task_id = substr(task_id, 31, 2)||substr(task_id, 29, 2)||substr(task_id, 27, 2)||substr(task_id, 25, 2)||substr(task_id, 23, 2)||substr(task_id, 21, 2)||substr(task_id, 19, 2)||substr(task_id, 17, 2)||substr(task_id, 15, 2)||substr(task_id, 13, 2)||substr(task_id, 11, 2)||substr(task_id, 9, 2)||substr(task_id, 7, 2)||substr(task_id, 5, 2)||substr(task_id, 3, 2)||substr(task_id, 1, 2) WHERE length(task_id) = 32;
UPDATE task_deps SET task_id = substr(task_id, 31, 2)||substr(task_id, 29, 2)||substr(task_id, 27, 2)||substr(task_id, 25, 2)||substr(task_id, 23, 2)||substr(task_id, 21, 2)||substr(task_id, 19, 2)||substr(task_id, 17, 2)||substr(task_id, 15, 2)||substr(task_id, 13, 2)||substr(task_id, 11, 2)||substr(task_id, 9, 2)||substr(task_id, 7, 2)||substr(task_id, 5, 2)||substr(task_id, 3, 2)||substr(task_id, 1, 2) WHERE length(task_id) = 32;
UPDATE task_deps SET depends_on = substr(depends_on, 31, 2)||substr(depends_on, 29, 2)||substr(depends_on, 27, 2)||substr(depends_on, 25, 2)||substr(depends_on, 23, 2)||substr(depends_on, 21, 2)||substr(depends_on, 19, 2)||substr(depends_on, 17, 2)||substr(depends_on, 15, 2)||substr(depends_on, 13, 2)||substr(depends_on, 11, 2)||substr(depends_on, 9, 2)||substr(depends_on, 7, 2)||substr(depends_on, 5, 2)||substr(depends_on, 3, 2)||substr(depends_on, 1, 2) WHERE length(depends_on) = 32;
UPDATE attempts SET task_id = substr(task_id, 31, 2)||substr(task_id, 29, 2)||substr(task_id, 27, 2)||substr(task_id, 25, 2)||substr(task_id, 23, 2)||substr(task_id, 21, 2)||substr(task_id, 19, 2)||substr(task_id, 17, 2)||substr(task_id, 15, 2)||substr(task_id, 13, 2)||substr(task_id, 11, 2)||substr(task_id, 9, 2)||substr(task_id, 7, 2)||substr(task_id, 5, 2)||substr(task_id, 3, 2)||substr(task_id, 1, 2) WHERE length(task_id) = 32;
UPDATE events SET task_id = substr(task_id, 31, 2)||substr(task_id, 29, 2)||substr(task_id, 27, 2)||substr(task_id, 25, 2)||substr(task_id, 23, 2)||substr(task_id, 21, 2)||substr(task_id, 19, 2)||substr(task_id, 17, 2)||substr(task_id, 15, 2)||substr(task_id, 13, 2)||substr(task_id, 11, 2)||substr(task_id, 9, 2)||substr(task_id, 7, 2)||substr(task_id, 5, 2)||substr(task_id, 3, 2)||substr(task_id, 1, 2) WHERE length(task_id) = 32;
UPDATE output_chunks SET task_id = substr(task_id, 31, 2)||substr(task_id, 29, 2)||substr(task_id, 27, 2)||substr(task_id, 25, 2)||substr(task_id, 23, 2)||substr(task_id, 21, 2)||substr(task_id, 19, 2)||substr(task_id, 17, 2)||substr(task_id, 15, 2)||substr(task_id, 13, 2)||substr(task_id, 11, 2)||substr(task_id, 9, 2)||substr(task_id, 7, 2)||substr(task_id, 5, 2)||substr(task_id, 3, 2)||substr(task_id, 1, 2) WHERE length(task_id) = 32;
UPDATE llm_runs SET task_id = substr(task_id, 31, 2)||substr(task_id, 29, 2)||substr(task_id, 27, 2)||substr(task_id, 25, 2)||substr(task_id, 23, 2)||substr(task_id, 21, 2)||substr(task_id, 19, 2)||substr(task_id, 17, 2)||substr(task_id, 15, 2)||substr(task_id, 13, 2)||substr(task_id, 11, 2)||substr(task_id, 9, 2)||substr(task_id, 7, 2)||substr(task_id, 5, 2)||substr(task_id, 3, 2)||substr(task_id, 1, 2) WHERE length(task_id) = 32;
UPDATE schedule_runs SET task_id = substr(task_id, 31, 2)||substr(task_id, 29, 2)||substr(task_id, 27, 2)||substr(task_id, 25, 2)||substr(task_id, 23, 2)||substr(task_id, 21, 2)||substr(task_id, 19, 2)||substr(task_id, 17, 2)||substr(task_id, 15, 2)||substr(task_id, 13, 2)||substr(task_id, 11, 2)||substr(task_id, 9, 2)||substr(task_id, 7, 2)||substr(task_id, 5, 2)||substr(task_id, 3, 2)||substr(task_id, 1, 2) WHERE length(task_id) = 32;
SET CONSTRAINTS ALL IMMEDIATE;
DO $$
DECLARE c record;
BEGIN
    FOR c IN SELECT conname, conrelid::regclass AS tbl FROM pg_constraint
             WHERE contype = 'f' AND confrelid = 'tasks'::regclass LOOP
        EXECUTE format('ALTER TABLE %s ALTER CONSTRAINT %I NOT DEFERRABLE', c.tbl, c.conname);
    END LOOP;
END $$;
