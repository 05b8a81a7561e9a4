-- Agent tasks: what an ended agent attempt used (tokens, cost, CLI session) as JSON, and
-- the session a retry asked to continue.
ALTER TABLE tasks ADD COLUMN usage TEXT;
ALTER TABLE tasks ADD COLUMN resume_session TEXT;
ALTER TABLE attempts ADD COLUMN usage TEXT;
