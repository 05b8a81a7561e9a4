-- tasks_ready (status, priority, queue_seq) served no query: claims read the best queued
-- tasks per group through tasks_group_ready, and everything that filters on status alone
-- uses tasks_status_seq. Every status change moved an entry in it, in the write path of
-- every claim and every end.
DROP INDEX IF EXISTS tasks_ready;
