"""The default policy decided by hand in plain Python: what a dry run costs without rulekit.

    python bench/handwritten_evaluate.py SIGNALS.jsonl > decisions.jsonl

Reads JSON Lines, decides each signal against a fresh account of 10,000 (a signal's own
``equity`` wins, as in ``rulekit evaluate --equity 10000``) and prints one JSON object per decision
with the fields ``rulekit evaluate --json`` prints (less its ``failed`` detail). Only the standard
library, so its start-up is Python's own. ``bench/bench_dry_run.py`` times it against rulekit and
requires both to make the same decisions; ``bench/bench_evaluate.py`` checks ``baseline_decide``
against the engine on every signal.
"""
from __future__ import annotations

import json
import math
import sys
from datetime import datetime

POLICY = ("default", 2, "246ec839338d5f56a3f424243868dc01eeebb741d0766a452e80bc04f8a9400a")
EQUITY = 10_000.0
MARKET_FIELDS = ("price", "atr", "ema_200", "volume_24h", "spread_bps")

# policies/default.yaml written by hand.
# Numbers copied from the YAML (an RM_ override or an edit makes the agreement check fail: good).
# Markets as (step units, step scale, min notional, min amount): step = units / scale.
MARKETS = {"BTCUSDT": (1, 10_000, 10.0, 0.0), "ETHUSDT": (1, 1_000, 10.0, 0.0),
           "SOLUSDT": (1, 100, 10.0, 0.0), "XRPUSDT": (1, 10, 5.0, 0.0)}
TRADED = ("UNANIMOUS", "STRONG")
CONSENSUS = ("UNANIMOUS", "STRONG", "WEAK", "SPLIT")
INF = math.inf
_iso = datetime.fromisoformat


LEVELS = ("quantity", "stop_loss", "take_profit", "notional", "leverage", "risk_amount",
          "risk_at_stop", "breakeven_trigger", "partial_tp_price", "reward_risk")


def _no(reason: str) -> tuple:  # a rejection: (approved, reason, *LEVELS)
    return (False, reason) + (None,) * len(LEVELS)


def baseline_decide(r: dict, equity: float) -> tuple:
    """Input checks, gates, limits (fresh account), sizing, round down, exits; first failure wins.
    Assumes typed records as the generator makes them (Signal.from_record also copes with junk)."""
    symbol, side, consensus = r["symbol"], r["side"], r["consensus"]
    confidence, price, atr, ema = r["confidence"], r["price"], r["atr"], r["ema_200"]
    volume, spread = r["volume_24h"], r["spread_bps"]
    equity = r.get("equity", equity)
    market = MARKETS.get(symbol)
    if market is None: return _no("unknown_symbol")
    is_long = side == "LONG"
    if not (is_long or side == "SHORT"): return _no("invalid_side")
    if consensus not in CONSENSUS: return _no("invalid_consensus")
    if not 0 <= confidence <= 1: return _no("invalid_confidence")
    if not 0 < price < INF: return _no("invalid_price")
    if not 0 < atr < INF: return _no("invalid_atr")
    if not 0 < ema < INF: return _no("invalid_ema_200")
    if not 0 <= volume < INF: return _no("invalid_volume_24h")
    if not 0 <= spread < INF: return _no("invalid_spread_bps")
    if not 0 < equity < INF: return _no("invalid_equity")
    # A fresh account (invalid_risk_state cannot fail): reference equities are today's, no trades.
    peak = day_start = week_start = equity
    losses, open_trades, open_exposure, paused = 0, 0, 0.0, False
    seen = r.get("market_timestamp")
    if seen and not (_iso(r["timestamp"]) - _iso(seen)).total_seconds() <= 60.0:
        return _no("stale_market_data")
    atr_pct = atr / price * 100
    if consensus not in TRADED: return _no("min_consensus")
    if not confidence >= (0.80 if atr_pct > 4.0 else 0.70): return _no("min_confidence")
    if not (price > ema if is_long else price < ema): return _no("trend_alignment")
    if not atr_pct <= 5.0: return _no("max_volatility")
    if not volume >= 1_000_000.0: return _no("min_volume")
    if not spread <= 10.0: return _no("max_spread")
    drawdown = max(0.0, (peak - equity) / peak * 100)
    if paused or not drawdown < 5.0: return _no("circuit_breaker")
    if not max(0.0, (day_start - equity) / day_start * 100) < 3.0: return _no("daily_drawdown")
    if not max(0.0, (week_start - equity) / week_start * 100) < 10.0: return _no("weekly_drawdown")
    if not open_trades < 4: return _no("max_concurrent_trades")
    if not open_exposure / equity * 100 < 80.0: return _no("max_exposure")
    quality = (1.5 if consensus == "UNANIMOUS" and confidence >= 0.85
               else 0.5 if confidence < 0.75 else 1.0)
    streak = 0.5 if losses >= 3 else 1.0
    recovery = 0.5 if drawdown >= 2.0 else 1.0
    risk_amount = equity * (1.0 * quality * streak * recovery) / 100
    stop_distance = atr * 1.5
    max_notional = min(equity * 1.0, 250_000.0, equity * 80.0 / 100 - open_exposure)
    raw = min(risk_amount / stop_distance, max_notional / price)
    if not (0 < risk_amount < INF and 0 < stop_distance < INF and max_notional < INF
            and raw == raw): return _no("invalid_size")
    units, scale, min_notional, min_amount = market
    steps = math.floor(raw * scale / units) if raw > 0 else 0  # DOWN to the step; fix float error
    steps += (steps + 1) * units / scale <= raw
    steps -= steps > 0 and steps * units / scale > raw
    quantity = steps * units / scale
    if not (quantity > 0 and quantity >= min_amount): return _no("below_min_amount")
    if not quantity * price >= min_notional: return _no("below_min_notional")
    direction = 1.0 if is_long else -1.0
    stop_loss = price - direction * stop_distance
    take_profit = price + direction * atr * 3.75
    # breakeven and partial take-profit lie between: finite whenever stop and target are.
    if not ((0 < stop_loss < price < take_profit) if is_long
            else (0 < take_profit < price < stop_loss)): return _no("invalid_exit_levels")
    notional = quantity * price
    return (True, None, quantity, stop_loss, take_profit, notional, notional / equity, risk_amount,
            quantity * stop_distance, price + direction * stop_distance * 1.0,
            price + direction * stop_distance * 2.0,
            abs(take_profit - price) / abs(price - stop_loss))


def main(path: str) -> int:
    out = sys.stdout
    name, version, sha = POLICY
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                decided = baseline_decide(record, EQUITY)
            except (ValueError, KeyError, TypeError, AttributeError):
                record, decided = {}, _no("malformed_signal")
            result = {"signal_id": record.get("signal_id"), "symbol": record.get("symbol"),
                      "side": record.get("side")}
            for field in MARKET_FIELDS:
                value = record.get(field)
                result[field] = value if value is None or math.isfinite(value) else None
            result["approved"], result["reason"] = decided[0], decided[1]
            result.update(zip(LEVELS, decided[2:], strict=True))
            result.update(policy_name=name, policy_version=version, policy_hash=sha)
            out.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
