"""Indicators against TA-Lib on every real candle file, and against numbers worked by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import SHARED_DATA
from plugins.candle_files import read_candles
from rulekit.indicators import (atr, ema, market_conditions, rolling_quote_volume, spread_bps,
                                true_range)
from rulekit.market_data import Candles

talib = pytest.importorskip("talib")
SHARED_FILES = sorted(SHARED_DATA.glob("*.csv")) if SHARED_DATA.is_dir() else []


def same_as_talib(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert np.array_equal(np.isnan(ours), np.isnan(theirs))
    known = ~np.isnan(theirs)
    np.testing.assert_allclose(ours[known], theirs[known], rtol=1e-9, atol=0)


@pytest.mark.skipif(not SHARED_FILES, reason="../shared/data not present")
@pytest.mark.parametrize("path", SHARED_FILES, ids=lambda p: p.name)
def test_wilder_atr_and_talib_ema_equal_talib_on_every_shared_file(path):
    c = read_candles(path)
    same_as_talib(atr(c.high, c.low, c.close, 14), talib.ATR(c.high, c.low, c.close, 14))
    same_as_talib(ema(c.close, 200), talib.EMA(c.close, 200))


@pytest.mark.skipif(not SHARED_FILES, reason="../shared/data not present")
def test_sma_atr_is_the_plain_mean_of_talib_true_ranges():
    c = read_candles(SHARED_DATA / "crypto_BTC-USDT-PERP_5m.csv")
    theirs = talib.SMA(talib.TRANGE(c.high, c.low, c.close), 14)
    same_as_talib(atr(c.high, c.low, c.close, 14, method="sma"), theirs)


def test_true_range_uses_the_previous_close_across_a_gap():
    # bar 1 gaps up: high - low = 1, |high - prev close| = 12 - 9 = 3
    tr = true_range([10, 12, 11], [8, 11, 10], [9, 11.5, 10.5])
    assert tr.tolist() == [2, 3, 1.5]


def test_sma_atr_by_hand():
    high, low, close = [10, 12, 11, 13], [8, 11, 10, 10.5], [9, 11.5, 10.5, 12]
    # TR: 2 (first bar), max(1, 3, 2)=3, max(1, 0.5, 1.5)=1.5, max(2.5, 2.5, 0)=2.5
    assert true_range(high, low, close).tolist() == [2, 3, 1.5, 2.5]
    # period 2: first value at index 2 = mean(3, 1.5) = 2.25; then mean(1.5, 2.5) = 2
    assert np.isnan(atr(high, low, close, 2, "sma")[:2]).all()
    assert atr(high, low, close, 2, "sma")[2:].tolist() == [2.25, 2.0]
    # Wilder: 2.25, then (2.25 * 1 + 2.5) / 2 = 2.375
    assert atr(high, low, close, 2, "wilder")[2:].tolist() == [2.25, 2.375]


def test_first_value_seeding_by_hand():
    # period 3, k = 0.5: y0 = 2, y1 = (4-2)*.5+2 = 3, y2 = (6-3)*.5+3 = 4.5, y3 = (8-4.5)*.5+4.5 = 6.25
    out = ema(np.array([2.0, 4, 6, 8]), 3, "first")
    assert np.isnan(out[:2]).all() and out[2:].tolist() == [4.5, 6.25]
    # TA-Lib seeding: mean(2, 4, 6) = 4 at index 2, then (8-4)*.5+4 = 6
    assert ema(np.array([2.0, 4, 6, 8]), 3, "talib")[2:].tolist() == [4.0, 6.0]


def test_too_few_bars_give_nan_not_a_guess():
    assert np.isnan(ema(np.arange(1.0, 200.0), 200)).all()
    assert np.isnan(atr(np.ones(14) * 2, np.ones(14), np.ones(14) * 1.5, 14)).all()
    with pytest.raises(ValueError):
        atr([1.0], [1.0], [1.0], 14, method="ema")


def test_rolling_quote_volume_measures_the_window_in_time_across_gaps():
    hour = 3600
    times = np.array([0, 1, 2, 4, 5]) * hour          # the 03:00 bar is missing
    close = np.array([10.0, 10, 20, 20, 10])
    volume = np.array([1.0, 2, 1, 1, 3])               # quote: 10, 20, 20, 20, 30
    out = rolling_quote_volume(times, close, volume, hour, window_seconds=3 * hour)
    # a full 3h window first ends at the 02:00 bar's close (03:00): 10 + 20 + 20 = 50;
    # at 05:00 (04:00 bar's close) the window 02:00-05:00 holds 20 + 20 = 40; at 06:00: 20 + 30 = 50
    assert np.isnan(out[:2]).all() and out[2:].tolist() == [50, 40, 50]


def test_spread_in_basis_points_of_the_mid():
    assert spread_bps([49_995.0], [50_005.0])[0] == pytest.approx(2.0)
    assert math.isnan(spread_bps([50_005.0], [49_995.0])[0])   # crossed book
    assert math.isnan(spread_bps([0.0], [1.0])[0])


def candles(n: int) -> Candles:
    times = np.arange(n, dtype=np.int64) * 300
    close = np.linspace(100, 200, n)
    return Candles("BTCUSDT", 300, times, close, close + 1, close - 1, close, np.full(n, 5.0))


def test_a_signal_at_a_bar_open_sees_the_previous_bar_only():
    c = candles(400)
    at = np.array([300 * 250, 300 * 250 + 299, 300 * 251, 100.0, np.nan])
    found = market_conditions(c, at)
    # 75,000 is bar 250's open = bar 249's close: bar 249 is the last closed bar
    assert found.price[0] == c.close[249] and found.market_timestamp[0] == 300 * 250
    assert found.price[1] == c.close[249]
    assert found.price[2] == c.close[250] and found.bars[2] == 251
    assert np.isnan(found.price[3]) and found.bars[3] == 0        # before any bar closed
    assert np.isnan(found.price[4]) and found.bars[4] == 0        # no time at all


def test_too_few_bars_for_the_ema_leaves_it_nan_while_the_price_is_known():
    found = market_conditions(candles(400), np.array([300 * 150.0]))
    assert found.price[0] > 0 and found.atr[0] > 0 and np.isnan(found.ema_200[0])
    assert found.bars[0] == 150
