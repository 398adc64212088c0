"""Performance figures of a run: from its closed trades, its decisions and its equity curve.

Conventions (the README repeats them):
- R of a trade = its PnL after fees / its initial risk (quantity x stop distance), partial included.
- Expectancy = average R. Profit factor = gross profit / gross loss (None without a loss).
- Max drawdown = the largest fall of marked equity from a running peak, in percent of that peak,
  over the equity curve sampled at every bar close.
- Sharpe and Sortino from DAILY returns of marked equity (UTC days; the last equity of each day),
  annualised with sqrt(365): crypto trades every day. Risk-free rate 0. Sortino's downside deviation
  is the root mean square of the negative daily returns over all days.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from rulekit.trading.lifecycle import Trade

DAY = 86_400
R_BINS = (-math.inf, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, math.inf)


def trade_figures(trades: Sequence[Trade]) -> dict[str, Any]:
    r = np.array([t.r_multiple for t in trades], dtype=float)
    pnl = np.array([t.realised_pnl for t in trades], dtype=float)
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    counts = np.histogram(r, bins=np.array(R_BINS))[0] if len(r) else np.zeros(len(R_BINS) - 1)
    return {
        "trades": len(trades),
        "win_rate": float(len(wins) / len(trades)) if trades else None,
        "avg_r": float(r.mean()) if len(r) else None,
        "expectancy_r": float(r.mean()) if len(r) else None,
        "median_r": float(np.median(r)) if len(r) else None,
        "best_r": float(r.max()) if len(r) else None,
        "worst_r": float(r.min()) if len(r) else None,
        "profit_factor": float(wins.sum() / -losses.sum()) if len(losses) else None,
        "gross_profit": float(wins.sum()), "gross_loss": float(losses.sum()),
        "fees": float(sum(t.fees for t in trades)),
        "avg_position_notional": (float(np.mean([t.initial_quantity * t.entry_price
                                                 for t in trades])) if trades else None),
        "avg_holding_hours": (float(np.mean([((t.closed_at or t.opened_at) - t.opened_at) / 3600
                                             for t in trades])) if trades else None),
        "exit_reasons": dict(Counter(t.exit_reason for t in trades).most_common()),
        "r_distribution": {_bin_label(lo, hi): int(n)
                           for lo, hi, n in zip(R_BINS[:-1], R_BINS[1:], counts, strict=False)},
    }


def equity_figures(times: np.ndarray, equity: np.ndarray, start_equity: float,
                   first_time: float, last_time: float) -> dict[str, Any]:
    """Drawdown, worst day/week and Sharpe/Sortino from equity sampled at ``times`` (epoch s) over
    a run from ``first_time`` to ``last_time``; between samples equity is unchanged (no trade open).
    """
    final = float(equity[-1]) if len(equity) else start_equity
    curve = np.concatenate([[start_equity], equity])
    peaks = np.maximum.accumulate(curve)
    drawdown = (peaks - curve) / peaks * 100
    daily = _period_returns(times, curve, DAY, first_time, last_time)
    weekly = _period_returns(times - 4 * DAY, curve, 7 * DAY, first_time - 4 * DAY,
                             last_time - 4 * DAY)  # weeks start on Monday (1970-01-05)
    sharpe = sortino = None
    if len(daily) >= 2 and daily.std(ddof=1) > 0:
        sharpe = float(daily.mean() / daily.std(ddof=1) * math.sqrt(365))
        downside = math.sqrt(float(np.mean(np.minimum(daily, 0.0) ** 2)))
        sortino = float(daily.mean() / downside * math.sqrt(365)) if downside > 0 else None
    return {
        "final_equity": final,
        "return_pct": (final / start_equity - 1) * 100,
        "max_drawdown_pct": float(drawdown.max()),
        "worst_day_pct": float(daily.min() * 100) if len(daily) else None,
        "worst_week_pct": float(weekly.min() * 100) if len(weekly) else None,
        "sharpe": sharpe, "sortino": sortino,
    }


def _period_returns(times: np.ndarray, curve: np.ndarray, period: int, first: float,
                    last: float) -> np.ndarray:
    """Returns of every UTC period (day or week) the run touched, from the equity at each period's
    end (the last sample at or before it; the start equity before the first sample)."""
    start, stop = math.floor(first / period), math.floor((last - 1) / period)
    ends = (np.arange(start, stop + 1) + 1) * period
    at_end = curve[np.searchsorted(times, ends, side="right")]  # curve[0] is the start equity
    closes = np.concatenate([[curve[0]], at_end])
    return np.diff(closes) / closes[:-1]


def decision_figures(reasons: Iterable[str | None]) -> dict[str, Any]:
    reasons = list(reasons)
    rejected = Counter(r for r in reasons if r)
    approved = len(reasons) - sum(rejected.values())
    return {"signals": len(reasons), "approved": approved,
            "approval_rate": approved / len(reasons) if reasons else None,
            "rejections": dict(rejected.most_common())}


def _bin_label(lo: float, hi: float) -> str:
    if lo == -math.inf:
        return f"< {hi:g}"
    if hi == math.inf:
        return f">= {lo:g}"
    return f"[{lo:g}, {hi:g})"
