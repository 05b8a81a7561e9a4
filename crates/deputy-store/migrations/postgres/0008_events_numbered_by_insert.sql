-- Event numbers are now handed out by the statement that appends the events
-- (backend/tasks.rs, events_insert): one past the highest stored or in event_seq.floor,
-- read once per statement, under the lock every append holds. The trigger did the same
-- for every row, which cost about three times the row itself.
DROP TRIGGER events_next_seq ON events;
DROP FUNCTION deputy_next_event_seq();
