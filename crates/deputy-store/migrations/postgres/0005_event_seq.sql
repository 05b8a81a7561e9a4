-- Event sequence numbers handed out inside the transaction that appends the event, so a
-- transaction that rolls back (a failed write, or a daemon killed mid-commit) gives its
-- numbers back and the log stays gapless. A sequence cannot: its values are never
-- returned. The next number is one past the highest stored, read from the primary key
-- index; every write transaction holds the write lock (pg_advisory_xact_lock) before it
-- appends, so no two transactions can read the same highest number. `floor` remembers
-- the highest number ever handed out whenever events are deleted (cleaning finished
-- tasks), so a deleted number is never handed out again.
CREATE TABLE event_seq (
    one   BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    floor BIGINT NOT NULL
);
INSERT INTO event_seq (one, floor)
SELECT TRUE, GREATEST(
    COALESCE((SELECT MAX(seq) FROM events), 0),
    COALESCE(pg_sequence_last_value(pg_get_serial_sequence('events', 'seq')), 0)
);

CREATE FUNCTION deputy_next_event_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.seq := GREATEST(
        COALESCE((SELECT MAX(seq) FROM events), 0),
        (SELECT floor FROM event_seq)
    ) + 1;
    RETURN NEW;
END
$$;

ALTER TABLE events ALTER COLUMN seq DROP DEFAULT;
CREATE TRIGGER events_next_seq BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION deputy_next_event_seq();
