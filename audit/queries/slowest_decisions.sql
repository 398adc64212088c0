-- The slowest decisions by the engine's own time (a batch's rows carry the batch's average).
-- Parameter: top (how many; default 20). Columns: run, seq, mode, symbol, reason, decide_us.
SELECT run_id AS run, seq, mode, symbol, coalesce(reason, 'APPROVED') AS outcome,
       round(decide_us, 2) AS decide_us, decided_at
FROM decisions
WHERE decide_us IS NOT NULL
ORDER BY decide_us DESC
LIMIT coalesce(try_cast(getvariable('top') AS INTEGER), 20);
