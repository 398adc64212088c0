-- Rejections by reason and policy version: which rules stop signals, under which policy.
-- Columns: policy, version, mode, reason, rejected, share of that version's rejections.
SELECT policy_name AS policy, policy_version AS version, mode, reason,
       count(*) AS rejected,
       round(count(*) / sum(count(*)) OVER (PARTITION BY policy_name, policy_version, mode), 4)
           AS share
FROM decisions
WHERE NOT approved
GROUP BY policy_name, policy_version, mode, reason
ORDER BY policy, version, mode, rejected DESC;
