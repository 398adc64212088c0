-- Every circuit-breaker trip: when, at what equity, until when entries were paused.
-- Columns: account, run, tripped at, equity, detail.
SELECT account_id AS account, run_id AS run, occurred_at AS tripped_at, equity, detail
FROM risk_events
WHERE kind = 'circuit_breaker'
ORDER BY occurred_at;
