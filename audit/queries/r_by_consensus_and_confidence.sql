-- R distribution of closed trades by consensus type and confidence band (0.05 wide).
-- Which signals earn their risk? Columns: consensus, confidence band, trades, win rate,
-- average R, quartiles of R.
SELECT d.consensus,
       floor(d.confidence * 20) / 20 AS confidence_from,
       count(*) AS trades,
       round(avg(CASE WHEN t.realised_pnl > 0 THEN 1 ELSE 0 END), 4) AS win_rate,
       round(avg(t.r_multiple), 4) AS avg_r,
       round(quantile_cont(t.r_multiple, 0.25), 4) AS r_q1,
       round(quantile_cont(t.r_multiple, 0.5), 4) AS r_median,
       round(quantile_cont(t.r_multiple, 0.75), 4) AS r_q3
FROM trades t
JOIN decisions d ON d.run_id = t.run_id AND d.seq = t.decision_seq
WHERE t.state = 'CLOSED'
GROUP BY ALL
ORDER BY consensus, confidence_from;
