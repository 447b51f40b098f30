-- Per-call analysis (speech segments, turns, echo, levels) for reports, and the model's transcript.

CREATE TABLE call_analysis (
    call_id TEXT PRIMARY KEY REFERENCES calls(id),
    data TEXT NOT NULL,
    at TEXT NOT NULL
);

CREATE TABLE transcript (
    id INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL REFERENCES calls(id),
    at_ms REAL NOT NULL,                 -- ms since the stream started
    text TEXT NOT NULL
);
CREATE INDEX transcript_call ON transcript(call_id);
