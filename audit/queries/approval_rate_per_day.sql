-- Approval rate per UTC day (by the decision's time) and mode.
-- Columns: day, mode, decisions, approved, approval_rate.
SELECT CAST(timezone('UTC', decided_at) AS DATE) AS day, mode,
       count(*) AS decisions,
       count(*) FILTER (WHERE approved) AS approved,
       round(count(*) FILTER (WHERE approved) / count(*), 4) AS approval_rate
FROM decisions
GROUP BY ALL
ORDER BY day, mode;
