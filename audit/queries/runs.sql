-- Every run in the database: its mode, policy (name, version, hash), when it started, the time
-- range of its decisions and its headline figures (decisions, approved, trades, closed trades'
-- PnL). `rulekit audit runs` prints it; pass a run id to the other commands as --run ID|last.
-- Columns: run, mode, policy, version, hash, started, first and last decision, decisions,
-- approved, trades, pnl.
WITH decided AS (
    SELECT run_id, min(decided_at) AS first_decision, max(decided_at) AS last_decision,
           count(*) AS decisions, count(*) FILTER (WHERE approved) AS approved
    FROM decisions GROUP BY run_id
), traded AS (
    SELECT run_id, count(*) AS trades,
           round(sum(realised_pnl) FILTER (WHERE state = 'CLOSED'), 2) AS pnl
    FROM trades GROUP BY run_id
)
SELECT r.run_id AS run, r.mode, p.policy_name AS policy, p.policy_version AS version,
       left(r.policy_hash, 12) AS hash, r.started_at AS started, d.first_decision,
       d.last_decision, coalesce(d.decisions, 0) AS decisions, coalesce(d.approved, 0) AS approved,
       coalesce(t.trades, 0) AS trades, t.pnl
FROM runs r
LEFT JOIN policies p USING (policy_hash)
LEFT JOIN decided d USING (run_id)
LEFT JOIN traded t USING (run_id)
ORDER BY r.started_at, r.run_id;
