-- Event sequence numbers handed out inside the transaction that appends the event, so a
-- transaction that rolls back (a failed write, or a daemon killed mid-commit) gives its
-- numbers back and the log stays gapless. A sequence cannot: its values are never
-- returned. Every write transaction holds the write lock (pg_advisory_xact_lock) before
-- it appends, so the counter row is never contended. The counter only grows, so a number
-- is never reused even after the newest events are deleted.
CREATE TABLE event_seq (
    one  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
    last BIGINT NOT NULL
);
INSERT INTO event_seq (one, last)
SELECT TRUE, GREATEST(
    COALESCE((SELECT MAX(seq) FROM events), 0),
    COALESCE(pg_sequence_last_value(pg_get_serial_sequence('events', 'seq')), 0)
);

CREATE FUNCTION deputy_next_event_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE event_seq SET last = last + 1 RETURNING last INTO NEW.seq;
    RETURN NEW;
END
$$;

ALTER TABLE events ALTER COLUMN seq DROP DEFAULT;
CREATE TRIGGER events_next_seq BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION deputy_next_event_seq();
