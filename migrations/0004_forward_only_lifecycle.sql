-- The lifecycle only moves forward: a stopped stream is an event in the timeline and the call stays
-- `streaming` (it used to step back to `in-progress`). Stored history is re-read under that rule, so
-- old and new calls mean the same: "completed from streaming" = it streamed. The raw events are kept
-- as they are (every stop is still in the event log); only the derived rows change.

-- 1. A move out of `in-progress` after the call had stepped back from `streaming` now starts from
--    `streaming` (in-progress -> completed becomes streaming -> completed; a second stream's
--    in-progress -> streaming becomes streaming -> streaming, removed below as the confirmation it is).
UPDATE transitions SET from_state = 'streaming'
WHERE from_state = 'in-progress'
  AND EXISTS (SELECT 1 FROM transitions b
              WHERE b.call_id = transitions.call_id AND b.id < transitions.id
                AND b.from_state = 'streaming' AND b.to_state = 'in-progress');

-- 2. The backward steps themselves, and what step 1 turned into a move to the same state.
DELETE FROM transitions
WHERE from_state = 'streaming' AND to_state IN ('in-progress', 'streaming');

-- 3. A live call that streamed and is still up stays `streaming`.
UPDATE calls SET state = 'streaming'
WHERE state = 'in-progress'
  AND EXISTS (SELECT 1 FROM transitions t WHERE t.call_id = calls.id AND t.to_state = 'streaming');

-- 4. Notes (facts that are not lifecycle events) are no longer judged against the state: one recorded
--    after the call ended is kept as accepted, like the same note during the call.
UPDATE events SET accepted = 1, reason = NULL
WHERE accepted = 0 AND reason LIKE 'terminal:%'
  AND (source, type) IN (VALUES ('rest', 'hangup'), ('voice', 'incoming'), ('reconcile', 'unsettled'),
                                ('local', 'refused_busy'), ('local', 'backend_ended'), ('local', 'media_error'),
                                ('media', 'long_gap'), ('media', 'protocol_error'));
