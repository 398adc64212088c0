"""Indicators against TA-Lib on real candles (the committed slices of every shared file, and the
whole files where present), and against numbers worked by hand."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLE_CANDLES, SHARED_DATA, SHARED_FILES, TEST_DATA, needs_shared

from rulekit.market.candles import Candles
from rulekit.market.conditions import MarketConditions, market_conditions
from rulekit.market.indicators import atr, ema, quote_volume, rolling_quote_volume, spread_bps, true_range

talib = pytest.importorskip("talib")
# one file of every shared series: the slices in tests/data, and the whole BTC/USDT 5m example
REAL_FILES = [*sorted(TEST_DATA.glob("*.csv")), EXAMPLE_CANDLES]
HOUR = 3600


def read_csv(path: Path) -> Candles:
    """A candle file as Candles, read here with csv + numpy (no project reader involved)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["timestamp", "open", "high", "low", "close", "volume"]
    times = np.array([r[0].rstrip("Z") for r in rows[1:]], dtype="datetime64[s]").astype(np.int64)
    o, h, l, c, v = np.array([r[1:] for r in rows[1:]], dtype=float).T
    timeframe = int(np.min(np.diff(times)))
    return Candles(path.stem, timeframe, times, o, h, l, c, v, source=str(path))


def same_as_talib(ours: np.ndarray, theirs: np.ndarray) -> None:
    """Same NaN positions, and equal to 1e-9 relative wherever TA-Lib has a value (an exact 0 on
    both sides passes with atol=0)."""
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    known = ~np.isnan(theirs)
    np.testing.assert_allclose(ours[known], theirs[known], rtol=1e-9, atol=0)


every_real_file = pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name)


def test_every_shared_series_has_a_committed_file():
    assert sorted(p.name for p in REAL_FILES) == sorted(SHARED_FILES)
    assert all(len(read_csv(p)) > 400 for p in REAL_FILES)  # past the EMA-200's warm-up


@every_real_file
def test_wilder_atr_equals_talib_on_every_real_file(path):
    c = read_csv(path)
    same_as_talib(atr(c.high, c.low, c.close, 14), talib.ATR(c.high, c.low, c.close, 14))


@every_real_file
def test_talib_seeded_ema_equals_talib_on_every_real_file(path):
    c = read_csv(path)
    same_as_talib(ema(c.close, 200), talib.EMA(c.close, 200))
    same_as_talib(ema(c.close, 12), talib.EMA(c.close, 12))


@needs_shared(*SHARED_FILES)
def test_atr_and_ema_equal_talib_on_the_whole_shared_files():
    for name in SHARED_FILES:
        c = read_csv(SHARED_DATA / name)
        same_as_talib(atr(c.high, c.low, c.close, 14), talib.ATR(c.high, c.low, c.close, 14))
        same_as_talib(ema(c.close, 200), talib.EMA(c.close, 200))
        same_as_talib(ema(c.close, 12), talib.EMA(c.close, 12))


def test_true_range_counts_a_gap_from_the_previous_close():
    # bar 1 gaps up: high - low = 1 but |high - previous close| = 12 - 9 = 3; bar 0 has no
    # previous close, so it is high - low (TA-Lib: NaN)
    assert true_range([10, 12, 11], [8, 11, 10], [9, 11.5, 10.5]).tolist() == [2, 3, 1.5]
    assert np.isnan(talib.TRANGE(np.array([10.0]), np.array([8.0]), np.array([9.0])))[0]


HIGH, LOW, CLOSE = [10, 12, 11, 13, 12], [8, 11, 10, 10.5, 11], [9, 11.5, 10.5, 12, 11.5]
# TR: 2 (first bar, h - l); max(1, |12-9|=3, |11-9|=2) = 3; max(1, 0.5, 1.5) = 1.5;
#     max(2.5, |13-10.5|=2.5, 0) = 2.5; max(1, |12-12|=0, |11-12|=1) = 1


def test_sma_atr_is_the_plain_mean_of_the_last_true_ranges_by_hand():
    assert true_range(HIGH, LOW, CLOSE).tolist() == [2, 3, 1.5, 2.5, 1]
    out = atr(HIGH, LOW, CLOSE, 3, "sma")
    # period 3: index 3 = (3 + 1.5 + 2.5) / 3 = 7/3; index 4 = (1.5 + 2.5 + 1) / 3 = 5/3
    assert np.isnan(out[:3]).all()
    assert out[3:].tolist() == pytest.approx([7 / 3, 5 / 3], rel=1e-15)


def test_wilder_atr_by_hand():
    out = atr(HIGH, LOW, CLOSE, 3, "wilder")
    # seed at index 3 = mean(TR 1..3) = 7/3; then (7/3 * 2 + 1) / 3 = 17/9
    assert np.isnan(out[:3]).all()
    assert out[3:].tolist() == pytest.approx([7 / 3, 17 / 9], rel=1e-15)


def test_sma_atr_equals_talib_sma_of_trange_on_a_real_file():
    c = read_csv(EXAMPLE_CANDLES)
    theirs = talib.SMA(talib.TRANGE(c.high, c.low, c.close), 14)  # TRANGE[0] is NaN: from 14
    same_as_talib(atr(c.high, c.low, c.close, 14, "sma"), theirs)


def test_sma_atr_is_exactly_zero_over_filled_outage_hours():
    # Coinbase's filled outage of 2018-08-10 (open = high = low = close = 6,556.25, the previous
    # close, from 01:00 to 15:00): 15 true ranges of 0, so the mean of the last 14 is exactly 0
    # at 14:00 and at 15:00 and nowhere else; equal to TA-Lib everywhere else.
    c = read_csv(TEST_DATA / "coinbase_BTC-USD_1h.csv")
    ours = atr(c.high, c.low, c.close, 14, "sma")
    theirs = talib.SMA(talib.TRANGE(c.high, c.low, c.close), 14)
    zero = ours == 0
    assert c.timestamp[zero].tolist() == [int(np.datetime64(f"2018-08-10T{h}:00", "s").astype(
        np.int64)) for h in (14, 15)]
    assert (np.abs(theirs[zero]) < 1e-9).all()
    same_as_talib(np.where(zero, np.nan, ours), np.where(zero, np.nan, theirs))


@needs_shared("coinbase_BTC-USD_1h.csv")
def test_sma_atr_is_zero_where_talibs_running_sum_leaves_a_residue_on_the_whole_file():
    # TA-Lib's running sum over the whole file's 9,710 hours before the outage leaves ~2.6e-13
    # there; ours is exactly 0 (an ATR of 1e-13 would size a position as if the stop sat on the
    # entry). On the slice TA-Lib's sum starts fresh and happens to give 0 too.
    c = read_csv(SHARED_DATA / "coinbase_BTC-USD_1h.csv")
    ours = atr(c.high, c.low, c.close, 14, "sma")
    theirs = talib.SMA(talib.TRANGE(c.high, c.low, c.close), 14)
    zero = ours == 0
    assert zero.sum() == 2 and not (theirs == 0).any()
    assert (np.abs(theirs[zero]) < 1e-9).all()
    same_as_talib(np.where(zero, np.nan, ours), np.where(zero, np.nan, theirs))


def test_first_value_seeding_by_hand():
    # period 3, k = 2 / (3 + 1) = 0.5; y0 = 2 (the first value),
    # y1 = 2 + 0.5 * (4 - 2) = 3, y2 = 3 + 0.5 * (6 - 3) = 4.5, y3 = 4.5 + 0.5 * (8 - 4.5) = 6.25;
    # reported from index period - 1 = 2 only
    out = ema(np.array([2.0, 4, 6, 8]), 3, "first")
    assert np.isnan(out[:2]).all() and out[2:].tolist() == [4.5, 6.25]


def test_talib_seeding_by_hand():
    # seed at index 2 = mean(2, 4, 6) = 4, then 4 + 0.5 * (8 - 4) = 6
    out = ema(np.array([2.0, 4, 6, 8]), 3, "talib")
    assert np.isnan(out[:2]).all() and out[2:].tolist() == [4.0, 6.0]


def test_first_value_seeding_equals_a_plain_loop_on_a_real_file():
    c = read_csv(TEST_DATA / "coinbase_BTC-USD_1h.csv")
    k, y, expected = 2 / 201, c.close[0], [c.close[0]]
    for x in c.close[1:].tolist():  # pandas ewm(span=200, adjust=False).mean(), by definition
        y = (x - y) * k + y
        expected.append(y)
    out = ema(c.close, 200, "first")
    assert np.isnan(out[:199]).all()
    np.testing.assert_allclose(out[199:], expected[199:], rtol=1e-9, atol=0)


def test_too_few_bars_give_nan_not_a_guess():
    assert np.isnan(ema(np.arange(1.0, 200.0), 200)).all()                  # 199 values
    assert np.isnan(ema(np.arange(1.0, 200.0), 200, "first")).all()
    assert not np.isnan(ema(np.arange(1.0, 201.0), 200)[-1])                # 200 values
    assert np.isnan(atr(np.full(14, 2.0), np.ones(14), np.full(14, 1.5), 14)).all()
    assert np.isnan(atr(np.full(14, 2.0), np.ones(14), np.full(14, 1.5), 14, "sma")).all()
    assert atr(np.full(15, 2.0), np.ones(15), np.full(15, 1.5), 14)[-1] == 1.0  # 15 bars


def test_unknown_method_seeding_or_period_is_refused():
    with pytest.raises(ValueError, match="ATR method"):
        atr([1.0], [1.0], [1.0], 14, method="ema")
    with pytest.raises(ValueError, match="EMA seeding"):
        ema([1.0], 3, seeding="pandas")
    with pytest.raises(ValueError, match="period"):
        ema([1.0], 0)


def test_quote_volume_is_volume_times_close():
    assert quote_volume([50_000.0, 20.0], [2.0, 0.5]).tolist() == [100_000.0, 10.0]


def test_rolling_quote_volume_measures_the_window_in_time_across_a_gap():
    times = np.array([0, 1, 2, 4, 5]) * HOUR          # the 03:00 bar is missing
    close = np.array([10.0, 10, 20, 20, 10])
    volume = np.array([1.0, 2, 1, 1, 3])               # quote: 10, 20, 20, 20, 30
    out = rolling_quote_volume(times, close, volume, HOUR, window_seconds=3 * HOUR)
    # close times 01:00, 02:00, 03:00, 05:00, 06:00; window = bars opened in [close - 3h, close):
    # 01:00 and 02:00: the data start at 00:00, less than 3h before -> NaN
    # 03:00: bars 00, 01, 02 -> 10 + 20 + 20 = 50
    # 05:00: bars 02, 04 -> 20 + 20 = 40 (the last three BARS would wrongly give 60)
    # 06:00: bars 04, 05 -> 20 + 30 = 50
    assert np.isnan(out[:2]).all() and out[2:].tolist() == [50, 40, 50]


def test_rolling_quote_volume_is_exactly_zero_over_a_silent_window():
    times = np.arange(6) * HOUR
    out = rolling_quote_volume(times, np.array([3.3, 1.7, 2.9, 2.9, 2.9, 2.9]),
                               np.array([0.7, 0.3, 0, 0, 0, 0]), HOUR, window_seconds=2 * HOUR)
    assert np.isnan(out[0]) and out[1] == pytest.approx(3.3 * 0.7 + 1.7 * 0.3)
    assert out[3:].tolist() == [0.0, 0.0, 0.0]


def test_spread_in_basis_points_of_the_mid():
    # (50005 - 49995) / 50000 * 1e4 = 2
    assert spread_bps([49_995.0], [50_005.0])[0] == pytest.approx(2.0, rel=1e-12)
    assert spread_bps([100.0], [100.0])[0] == 0.0


def test_crossed_empty_or_missing_book_has_no_spread():
    out = spread_bps([50_005.0, 0.0, -1.0, np.nan], [49_995.0, 1.0, 1.0, 1.0])
    assert np.isnan(out).all()


def steady_candles(n: int, timeframe: int = 300) -> Candles:
    times = np.arange(n, dtype=np.int64) * timeframe
    close = np.linspace(100, 200, n)
    return Candles("BTCUSDT", timeframe, times, close, close + 1, close - 1, close,
                   np.full(n, 5.0))


def test_a_signal_at_a_bar_open_uses_the_previous_bar():
    c = steady_candles(400)
    # 75,000 s is bar 250's open; that bar is still forming, bar 249 (closed at 75,000) is known
    found = market_conditions(c, np.array([300 * 250, 300 * 250 + 299]))
    assert isinstance(found, MarketConditions)
    assert found.price.tolist() == [c.close[249], c.close[249]]
    assert found.market_timestamp.tolist() == [300 * 250, 300 * 250]
    assert found.bars.tolist() == [250, 250]


def test_a_signal_exactly_at_a_bar_close_uses_that_bar():
    c = steady_candles(400)
    found = market_conditions(c, np.array([300 * 251]))    # bar 250's close
    assert found.price[0] == c.close[250] and found.bars[0] == 251
    assert found.market_timestamp[0] == 300 * 251
    assert found.atr[0] == atr(c.high, c.low, c.close)[250]
    assert found.ema_200[0] == ema(c.close)[250]


def test_before_any_bar_closed_everything_is_nan_and_no_bars_are_known():
    c = steady_candles(400)
    found = market_conditions(c, np.array([-5.0, 0.0, 299.0, np.nan]))
    for field in (found.price, found.atr, found.ema_200, found.volume_24h,
                  found.market_timestamp):
        assert np.isnan(field).all()
    assert found.bars.tolist() == [0, 0, 0, 0]


def test_too_few_bars_for_the_ema_leave_it_nan_while_the_price_is_known():
    c = steady_candles(400)
    # 14 bars: no ATR-14 yet; 15: ATR; 199: no EMA-200; 200: EMA-200
    found = market_conditions(c, np.array([14, 15, 199, 200]) * 300)
    assert (found.price > 0).all() and found.bars.tolist() == [14, 15, 199, 200]
    assert np.isnan(found.atr[0]) and not np.isnan(found.atr[1:]).any()
    assert np.isnan(found.ema_200[:3]).all() and not np.isnan(found.ema_200[3])
    # 5-minute bars: a full 24h of volume needs 288 bars
    assert np.isnan(found.volume_24h).all()
    assert market_conditions(c, np.array([288 * 300])).volume_24h[0] == pytest.approx(
        float(np.sum(c.close[:288] * 5.0)))


def test_no_candles_leave_every_field_nan():
    c = steady_candles(0)
    found = market_conditions(c, np.array([1e9]))
    assert np.isnan(found.price[0]) and np.isnan(found.atr[0]) and found.bars[0] == 0


def test_market_conditions_match_talib_at_the_last_closed_bar_of_a_real_file():
    c = read_csv(TEST_DATA / "fx_EUR-USD_1h.csv")          # six weekend gaps
    rng = np.random.default_rng(7)
    at = np.sort(rng.uniform(c.timestamp[0], c.timestamp[-1] + 2 * HOUR, 500))
    found = market_conditions(c, at, atr_period=14, ema_period=200)
    row = np.array([np.flatnonzero(c.timestamp + c.timeframe_seconds <= t)[-1]
                    if (c.timestamp + c.timeframe_seconds <= t).any() else -1 for t in at])
    assert found.bars.tolist() == (row + 1).tolist()
    ok = row >= 0
    same_as_talib(found.atr[ok], talib.ATR(c.high, c.low, c.close, 14)[row[ok]])
    same_as_talib(found.ema_200[ok], talib.EMA(c.close, 200)[row[ok]])
    assert (found.market_timestamp[ok] <= at[ok]).all()
    assert not math.isnan(found.price[-1])
