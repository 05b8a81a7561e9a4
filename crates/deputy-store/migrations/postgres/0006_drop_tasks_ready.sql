-- PostgreSQL dialect of the SQLite migration 0005 of the same name: tasks_ready served no
-- query (claims use tasks_group_ready, status filters tasks_status_seq), and every status
-- change moved an entry in it.
DROP INDEX IF EXISTS tasks_ready;
