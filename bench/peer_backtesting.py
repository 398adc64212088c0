"""backtesting.py given rulekit's entries: the reference both backtest benchmarks time.

Imports only pandas and backtesting.py (never rulekit), so ``bench_backtest_cli.py`` can run it as a
whole process of its own: ``python bench/peer_backtesting.py CANDLES.csv ENTRIES.npz``.
Each entry is (bar, side) of a rulekit trade; the strategy enters at that bar's open (decided at the
close of the bar before) with a fixed 1.5 ATR stop and 3.75 ATR target, one position at a time.
"""
from __future__ import annotations

import sys

import numpy as np


def run(frame, entries, atr):
    """Backtest ``frame`` (Open, High, Low, Close, Volume) with ``entries``; backtesting.py's stats."""
    from backtesting import Backtest, Strategy

    signal_bar = {int(i) - 1: int(side) for i, side in entries}  # decided at the bar before's close
    atr_list = list(atr)

    class SameEntries(Strategy):
        def init(self):
            pass

        def next(self):
            i = len(self.data) - 1
            side = signal_bar.get(i)
            if side and not self.position:
                price = self.data.Close[-1]
                distance = 1.5 * atr_list[i]
                if side > 0:
                    self.buy(size=0.1, sl=price - distance, tp=price + 2.5 * distance)
                else:
                    self.sell(size=0.1, sl=price + distance, tp=price - 2.5 * distance)

    return Backtest(frame, SameEntries, cash=1e12, commission=0.0, finalize_trades=True).run()


def main() -> None:
    import pandas as pd

    frame = pd.read_csv(sys.argv[1])
    frame.index = pd.to_datetime(frame.pop("timestamp"), unit="s")
    frame.columns = ["Open", "High", "Low", "Close", "Volume"]
    given = np.load(sys.argv[2])
    print(run(frame, given["entries"].tolist(), given["atr"].tolist())["# Trades"])


if __name__ == "__main__":
    main()
