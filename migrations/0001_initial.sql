-- Initial schema. Never edit an applied migration: add a new numbered file instead.

CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    label TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE calls (
    id TEXT PRIMARY KEY,                 -- our call id (c_ + hex), known before the carrier answers
    call_sid TEXT UNIQUE,                -- Twilio CallSid once known
    run_id INTEGER REFERENCES runs(id),
    direction TEXT NOT NULL,             -- outbound-api | inbound
    to_number TEXT,
    from_number TEXT,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    ended_at TEXT,
    end_reason TEXT,
    backend TEXT,
    say_text TEXT,
    token TEXT,                          -- per-call random token carried in <Parameter>
    stream_sid TEXT,
    recording_path TEXT,
    facts TEXT NOT NULL DEFAULT '{}'     -- JSON: server/tunnel facts at the time of the call
);
CREATE INDEX calls_state ON calls(state);
CREATE INDEX calls_created ON calls(created_at);

-- Every raw event from every source, stored before it is judged. Append-only: only the verdict
-- columns (accepted, reason) are filled in after the insert.
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    call_id TEXT,
    call_sid TEXT,
    source TEXT NOT NULL,                -- rest | status_callback | stream_status | media | local | server
    type TEXT NOT NULL,
    at TEXT NOT NULL,
    dedupe_key TEXT,
    accepted INTEGER,                    -- NULL until judged
    reason TEXT,
    payload TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_call ON events(call_id);
CREATE INDEX events_sid ON events(call_sid);
CREATE INDEX events_dedupe ON events(dedupe_key);

CREATE TABLE transitions (
    id INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL REFERENCES calls(id),
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    trigger TEXT NOT NULL,
    at TEXT NOT NULL,
    event_id INTEGER REFERENCES events(id)
);
CREATE INDEX transitions_call ON transitions(call_id);

CREATE TABLE metrics (
    call_id TEXT NOT NULL REFERENCES calls(id),
    name TEXT NOT NULL,
    value REAL,
    unit TEXT,
    at TEXT NOT NULL,
    PRIMARY KEY (call_id, name)
);

CREATE TABLE checks (
    id INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL REFERENCES calls(id),
    criterion TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pass', 'fail', 'unknown')),
    evidence TEXT,
    decided_by TEXT NOT NULL CHECK (decided_by IN ('auto', 'manual')),
    note TEXT,
    at TEXT NOT NULL
);
CREATE INDEX checks_call ON checks(call_id);
