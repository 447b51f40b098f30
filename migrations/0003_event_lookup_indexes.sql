-- Server facts are read per call evaluation: find the last `server/listening` event without a scan.
CREATE INDEX events_source_type ON events(source, type);
