"""Where an order fills inside a bar: the one set of conventions the lifecycle, the paper exchange and
backtests share, so a simulated fill can never disagree with a lifecycle event.

- A stop fills at its price, or at the bar's open when the bar opens beyond it (a gap: the market
  never traded at the stop).
- A target (take profit, partial, any resting limit) fills at its price, or at the bar's open when
  the bar opens beyond it: a resting limit order is filled by the first trade at or better than its
  price, and on a gap that is the open (as on any exchange, and as backtesting.py fills it).
- When one bar reaches both a trade's stop and its target, the stop is assumed to have come first,
  even if it opened beyond the target (a bar that wide is read as the worse case, as
  backtesting.py reads it too).
- Slippage (``slippage_bps``, against the order) applies to every order that takes liquidity:
  market entries, stops (a triggered stop is a market order), time exits and closes at the end of
  the data. Limits get none: they fill at their price or better, never worse.
"""
from __future__ import annotations

import math


def stop_fill(is_long: bool, stop: float, bar_open: float, bar_high: float,
              bar_low: float) -> float | None:
    """The fill price of a protective stop in this bar before slippage, or None if the bar did
    not reach it. A LONG's stop sells when the price falls to it; a SHORT's buys when it rises."""
    if not math.isfinite(stop):
        return None
    if is_long:
        if bar_low <= stop:
            return min(bar_open, stop)
        return None
    if bar_high >= stop:
        return max(bar_open, stop)
    return None


def target_fill(is_long: bool, target: float, bar_open: float, bar_high: float,
                bar_low: float) -> float | None:
    """The fill price of a take-profit limit of a LONG (a sell) or a SHORT (a buy) in this bar, or
    None if the bar did not reach it: its price, or the open when the bar opens beyond it."""
    if not math.isfinite(target):
        return None
    if is_long:
        return max(bar_open, target) if bar_high >= target else None
    return min(bar_open, target) if bar_low <= target else None


def adverse(price: float, is_buy: bool, slippage_bps: float) -> float:
    """``price`` moved against the order by ``slippage_bps``: a buy pays more, a sell gets less."""
    move = price * slippage_bps / 10_000  # not price * (1 + bps / 10,000): 1.001 is inexact
    return price + move if is_buy else price - move
