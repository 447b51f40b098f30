-- PostgreSQL dialect of ../0005_workers.sql: the times compared byte by byte (COLLATE "C"), as elsewhere.

CREATE TABLE workers (
    name TEXT PRIMARY KEY,
    public_url TEXT,
    backend TEXT NOT NULL,
    capacity INTEGER NOT NULL,
    host TEXT,
    pid BIGINT,
    started_at TEXT COLLATE "C" NOT NULL,
    heartbeat_at TEXT COLLATE "C" NOT NULL,
    stopped_at TEXT COLLATE "C",
    in_use INTEGER NOT NULL DEFAULT 0
);

ALTER TABLE calls ADD COLUMN worker TEXT;
CREATE INDEX calls_worker ON calls(worker);
