"""Several candle files that end at different times share one account: an entry approved when its
symbol has no bar left is cancelled and frees its exposure, and each symbol's trades close at its
own last bar, so a file that ends early never weighs on the others (real XRP and BTC bars)."""
from __future__ import annotations

from datetime import UTC, datetime

from conftest import DEFAULT_POLICY, EXAMPLE_CANDLES, TEST_DATA

from plugins.candle_files import read_candles
from plugins.reference_signals import ensemble_signals
from rulekit.backtest.run import run_backtest
from rulekit.decision.engine import Engine
from rulekit.model import Signal
from rulekit.policy.loader import load_policy
from rulekit.trading.lifecycle import TradeState

XRP = TEST_DATA / "binance_XRP-USDT-PERP_5m.csv"


def test_an_entry_approved_on_a_files_last_bar_is_cancelled_and_frees_its_exposure():
    engine = Engine(load_policy(DEFAULT_POLICY))
    xrp, btc = read_candles(XRP), read_candles(EXAMPLE_CANDLES)
    at = datetime.fromtimestamp(int(xrp.timestamp[-1]) + xrp.timeframe_seconds, UTC)
    last = [Signal.from_record({"signal_id": f"xrp-last-{side}", "symbol": "XRPUSDT",
                                "side": side, "consensus": "UNANIMOUS", "confidence": 0.9,
                                "timestamp": at.isoformat()}) for side in ("LONG", "SHORT")]
    result = run_backtest(engine, [xrp, btc], ensemble_signals(xrp) + last + ensemble_signals(btc),
                          10_000)
    approved = [s.signal_id for s, d, _, _ in result.journal.decisions
                if d.approved and s.signal_id.startswith("xrp-last")]
    assert len(approved) == 1                       # the other side: symbol_position_open
    cancelled = {t.trade_id: t for t in result.cancelled}
    phantom = cancelled[f"T-{approved[0]}"]
    assert phantom.state is TradeState.CANCELLED and phantom.exit_reason == "no_bar_to_fill"
    xrp_end = float(xrp.timestamp[-1])
    assert all(t.closed_at <= xrp_end for t in result.trades if t.symbol == "XRPUSDT")
    # the first BTC decision meets an account with nothing of XRP's left open
    first_btc = next(state for s, _, state, _ in result.journal.decisions if s.symbol == "BTCUSDT")
    assert first_btc.open_trades == 0 and first_btc.open_exposure == 0
    assert len([t for t in result.trades if t.symbol == "BTCUSDT"]) > 300
