-- The auto-training table: one row per approved signal that became a closed trade, with its
-- features at decision time (signal, market, risk state) and its realised outcome.
-- `rulekit audit export` writes this query's result.
SELECT d.run_id, d.seq, d.mode, d.decided_at, d.policy_name, d.policy_version, d.policy_hash,
       d.symbol, d.side, d.consensus, d.confidence, d.strength, d.model_votes,
       d.price, d.atr, d.ema_200, d.volume_24h, d.spread_bps,
       d.atr / d.price * 100 AS atr_pct,
       (d.price - d.ema_200) / d.atr AS ema_distance_atr,
       d.equity, d.day_start_equity, d.week_start_equity, d.peak_equity,
       d.consecutive_losses, d.open_trades, d.open_exposure,
       d.quantity, d.notional, d.risk_amount, d.stop_loss, d.take_profit,
       t.trade_id, t.entry_price, t.exit_price, t.exit_reason, t.realised_pnl, t.fees,
       t.r_multiple, t.mfe_r, t.mae_r, t.holding_seconds
FROM decisions d
JOIN trades t ON t.run_id = d.run_id AND t.decision_seq = d.seq
WHERE d.approved AND t.state = 'CLOSED'
ORDER BY d.decided_at, d.run_id, d.seq;
