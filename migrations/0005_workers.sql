-- Several orchestrator workers over one database (issue 20). Each `serve --worker NAME` keeps a row here
-- fresh (its heartbeat); a call names the worker whose session it holds, so a claim counts the live
-- calls per worker instead of trusting a counter that a crash would leave wrong. A worker that stopped
-- (`stopped_at`) or whose heartbeat went stale has its live calls adopted and reconciled by another.

CREATE TABLE workers (
    name TEXT PRIMARY KEY,
    public_url TEXT,
    backend TEXT NOT NULL,
    capacity INTEGER NOT NULL,
    host TEXT,
    pid INTEGER,
    started_at TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    stopped_at TEXT,
    in_use INTEGER NOT NULL DEFAULT 0    -- media sessions open on it, as its last heartbeat said
);

ALTER TABLE calls ADD COLUMN worker TEXT;
CREATE INDEX calls_worker ON calls(worker);
