-- Realised PnL per UTC day and account, with the account's equity at each day's end and its
-- drawdown from the running peak (realised only: open trades are not marked here).
-- Columns: account, day, trades closed, pnl, equity, drawdown_pct.
WITH daily AS (
    SELECT t.account_id AS account, CAST(timezone('UTC', t.closed_at) AS DATE) AS day,
           count(*) AS trades_closed, sum(t.realised_pnl) AS pnl
    FROM trades t
    WHERE t.state = 'CLOSED'
    GROUP BY ALL
), curve AS (
    SELECT d.*, coalesce(a.start_equity, 0) + sum(d.pnl) OVER (
               PARTITION BY d.account ORDER BY d.day) AS equity,
           coalesce(a.start_equity, 0) AS start_equity
    FROM daily d LEFT JOIN account_state a ON a.account_id = d.account
)
SELECT account, day, trades_closed, round(pnl, 6) AS pnl, round(equity, 6) AS equity,
       round(100 * (1 - equity / greatest(start_equity, max(equity) OVER (
           PARTITION BY account ORDER BY day))), 4) AS drawdown_pct
FROM curve
ORDER BY account, day;
