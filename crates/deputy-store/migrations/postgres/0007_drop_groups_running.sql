-- A group's running tasks are counted from their rows when a claim or a listing needs
-- them (tasks_group_ready makes it one index range). The stored counter was updated by
-- every claim and every end, so every node's writes to the default group queued for its
-- one row.
ALTER TABLE groups DROP COLUMN running;
