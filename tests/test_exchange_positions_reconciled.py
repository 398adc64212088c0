"""A restarted run compares the exchange's positions with the books' and refuses new entries
until they agree, or takes the exchange's view with --accept-exchange-positions.

Paper: a run is stopped with trades open, the paper exchange's saved state is edited in the audit
database as if a position had been closed, changed or opened by hand, and the run is restarted
over more bars. Live: the Binance double's balances are changed by hand under a running
``rulekit run --exchange ccxt:binance``.

Every market here is a flat 50,000 (the scenario's bars from 2024-01-05, one file per symbol),
every signal the golden one (1% risk: 100 / 2,250, rounded down to the market's step: BTCUSDT
0.0444, ETHUSDT 0.044, SOLUSDT 0.04), worked before fees.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import duckdb
import pytest
import scenario
from conftest import DEFAULT_POLICY, ROOT, golden
from scenario import fee_free  # noqa: F401  (autouse: figures before fees)

DAY = datetime(2024, 1, 5, tzinfo=UTC)
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def at(hours: float) -> str:
    return (DAY + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def signal(sid: str, symbol: str, hours: float) -> dict:
    return golden(signal_id=sid, symbol=symbol, timestamp=at(hours))


def paper_run(where, signals: list[dict], hours: float, *extra: str):
    """``rulekit run --exchange paper`` over the bars from DAY to DAY + hours."""
    for symbol in SYMBOLS:
        scenario.write_bars(where / f"{symbol}.csv", DAY, DAY + timedelta(hours=hours))
    (where / "signals.jsonl").write_text("".join(json.dumps(s) + "\n" for s in signals))
    done = subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), "run", "--policy", str(DEFAULT_POLICY),
         *[arg for symbol in SYMBOLS for arg in ("--replay", str(where / f"{symbol}.csv"))],
         "--signals-from", str(where / "signals.jsonl"), "--equity", "10000",
         "--audit", str(where / "run.duckdb"), "--json", *extra],
        capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return done


def edit_exchange(where, change) -> None:
    """Edit the paper exchange's saved state as a hand on the exchange would have."""
    with duckdb.connect(str(where / "run.duckdb")) as con:
        (text,) = con.execute("SELECT value FROM run_state WHERE key = 'exchange'").fetchone()
        state = json.loads(text)
        change(state)
        con.execute("UPDATE run_state SET value = ? WHERE key = 'exchange'", [json.dumps(state)])


def sell_by_hand(symbol: str, quantity: float, price: float = 50_000):
    def change(state):
        left = state["positions"].get(symbol, 0.0) - quantity
        state["positions"][symbol] = left
        if abs(left) < 1e-12:
            del state["positions"][symbol]
        state["cash"] += quantity * price
        state["marks"][symbol] = price
    return change


def query(where, sql: str) -> list[tuple]:
    with duckdb.connect(str(where / "run.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


def orders(where) -> dict[str, tuple[str, float]]:
    """The paper exchange's orders as saved (one run_state row each, read back by the store)."""
    from audit import AuditLog
    from audit.risk_store import RiskStore

    with AuditLog(str(where / "run.duckdb"), read_only=True) as audit:
        saved = RiskStore(audit).load_extra("exchange")
    return {o["client_order_id"]: (o["status"], o["amount"]) for o in saved["orders"]}


def protection_of(where, trade_id: str) -> dict[str, tuple[str, float]]:
    return {cid: status for cid, status in orders(where).items()
            if cid.startswith(f"{trade_id}:") and ":entry:" not in cid}


FIRST = [signal("B1", "BTCUSDT", 1), signal("E1", "ETHUSDT", 1)]
LINE = "new entries refused until they agree or you restart with --accept-exchange-positions"


def test_a_position_closed_by_hand_refuses_entries_until_accepted_then_the_trade_is_closed(
        tmp_path):
    paper_run(tmp_path, FIRST, 6)
    eth_orders = protection_of(tmp_path, "T-E1")
    assert {status for status, _ in eth_orders.values()} == {"OPEN"}
    edit_exchange(tmp_path, sell_by_hand("BTCUSDT", 0.0444))

    second = FIRST + [signal("S1", "SOLUSDT", 8)]
    done = paper_run(tmp_path, second, 12)
    assert f"BTCUSDT: books long 0.0444, exchange flat: {LINE}" in done.stderr
    assert done.stderr.count("BTCUSDT: books") == 1     # one line, not one per bar
    # S1 was approved by the policy and refused before its entry left
    assert query(tmp_path, "SELECT state, exit_reason FROM trades WHERE trade_id = 'T-S1'") == [
        ("CANCELLED", "entry_exchange_positions_differ")]
    assert not [cid for cid in orders(tmp_path) if cid.startswith("T-S1:")]
    refused = [json.loads(line) for line in done.stdout.splitlines()
               if json.loads(line)["event"] == "REFUSED"]
    assert [(r["trade_id"], r["reason"]) for r in refused] == [
        ("T-S1", "exchange_positions_differ")]
    kinds = query(tmp_path, "SELECT kind, detail FROM risk_events WHERE kind LIKE 'positions%'")
    assert kinds == [("positions_mismatch", f"BTCUSDT: books long 0.0444, exchange flat: {LINE}")]
    # the ETH trade agrees: still managed, its protective orders untouched
    assert protection_of(tmp_path, "T-E1") == eth_orders

    third = second + [signal("S2", "SOLUSDT", 14)]
    done = paper_run(tmp_path, third, 18, "--accept-exchange-positions")
    assert "accepted BTCUSDT: exchange flat adopted (books had long 0.0444)" in done.stderr
    assert query(tmp_path, "SELECT state, exit_reason, exit_price, realised_pnl FROM trades "
                           "WHERE trade_id = 'T-B1'") == [
        ("CLOSED", "closed_on_exchange", 50_000.0, 0.0)]
    assert {status for status, _ in protection_of(tmp_path, "T-B1").values()} == {"CANCELLED"}
    assert query(tmp_path, "SELECT state FROM trades WHERE trade_id = 'T-S2'") == [("OPEN",)]
    assert orders(tmp_path)["T-S2:entry:0"] == ("FILLED", 0.04)
    assert protection_of(tmp_path, "T-E1") == eth_orders
    # found at each start-up, then adopted
    assert [k for (k,) in query(tmp_path, "SELECT kind FROM risk_events WHERE kind LIKE "
                                          "'positions%' ORDER BY kind")] == [
        "positions_adopted", "positions_mismatch", "positions_mismatch"]


def test_a_position_changed_by_hand_becomes_the_trades_quantity_with_its_stop_placed_again(
        tmp_path):
    paper_run(tmp_path, FIRST, 6)
    edit_exchange(tmp_path, sell_by_hand("BTCUSDT", 0.0244))

    second = FIRST + [signal("S1", "SOLUSDT", 8)]
    done = paper_run(tmp_path, second, 12)
    assert f"BTCUSDT: books long 0.0444, exchange long 0.0200: {LINE}" in done.stderr
    assert query(tmp_path, "SELECT exit_reason FROM trades WHERE trade_id = 'T-S1'") == [
        ("entry_exchange_positions_differ",)]

    done = paper_run(tmp_path, second + [signal("S2", "SOLUSDT", 14)], 18,
                     "--accept-exchange-positions")
    assert ("accepted BTCUSDT: exchange long 0.0200 adopted (books had long 0.0444): T-B1 "
            "quantity 0.0200, stop 47,750 placed again for it") in done.stderr
    assert query(tmp_path, "SELECT state, quantity FROM trades WHERE trade_id = 'T-B1'") == [
        ("OPEN", 0.02)]
    btc = protection_of(tmp_path, "T-B1")
    # the old orders cancelled; a stop for the 0.02 held, and the target for all of it (the
    # partial, 0.0222, is more than is left)
    assert {cid: s for cid, s in btc.items() if s[0] == "OPEN"} == {
        "T-B1:stop:1": ("OPEN", 0.02), "T-B1:target:1": ("OPEN", 0.02)}
    assert query(tmp_path, "SELECT state FROM trades WHERE trade_id = 'T-S2'") == [("OPEN",)]


def test_a_position_opened_by_hand_is_recorded_as_not_ours_and_its_symbol_takes_no_trade(
        tmp_path):
    paper_run(tmp_path, [signal("E1", "ETHUSDT", 1)], 6)
    edit_exchange(tmp_path, sell_by_hand("SOLUSDT", -0.05))    # bought 0.05 SOL by hand

    second = [signal("E1", "ETHUSDT", 1), signal("B1", "BTCUSDT", 8)]
    done = paper_run(tmp_path, second, 12)
    assert f"SOLUSDT: books flat, exchange long 0.05: {LINE}" in done.stderr
    assert query(tmp_path, "SELECT exit_reason FROM trades WHERE trade_id = 'T-B1'") == [
        ("entry_exchange_positions_differ",)]

    third = second + [signal("B2", "BTCUSDT", 14), signal("S2", "SOLUSDT", 14)]
    done = paper_run(tmp_path, third, 18, "--accept-exchange-positions")
    assert ("accepted SOLUSDT: exchange long 0.05 adopted (books had flat): long 0.05 recorded "
            "as not ours") in done.stderr
    assert query(tmp_path, "SELECT signal_id, approved, reason FROM decisions WHERE signal_id "
                           "IN ('B2', 'S2') ORDER BY signal_id") == [
        ("B2", True, None), ("S2", False, "symbol_position_open")]
    assert query(tmp_path, "SELECT state FROM trades WHERE trade_id = 'T-B2'") == [("OPEN",)]
    assert not [cid for cid in orders(tmp_path) if cid.startswith("T-S2:")]


def test_positions_that_agree_print_nothing_and_trade_on(tmp_path):
    paper_run(tmp_path, FIRST, 6)
    done = paper_run(tmp_path, FIRST + [signal("S1", "SOLUSDT", 8)], 12)
    assert "books" not in done.stderr and "balance" not in done.stderr
    assert query(tmp_path, "SELECT state FROM trades WHERE trade_id = 'T-S1'") == [("OPEN",)]
    assert query(tmp_path, "SELECT count(*) FROM risk_events WHERE kind LIKE 'positions%'") == [
        (0,)]


def test_an_exchange_equity_below_the_books_is_said_in_one_line_and_trading_goes_on(tmp_path):
    paper_run(tmp_path, FIRST, 6)
    edit_exchange(tmp_path, lambda state: state.update(cash=state["cash"] - 1_000))
    done = paper_run(tmp_path, FIRST + [signal("S1", "SOLUSDT", 8)], 12)
    assert ("the exchange's equity 9,000.00 is 1,000.00 below the books' 10,000.00"
            in done.stderr)
    assert query(tmp_path, "SELECT kind FROM risk_events WHERE kind = 'balance_differs'") == [
        ("balance_differs",)]
    assert query(tmp_path, "SELECT state FROM trades WHERE trade_id = 'T-S1'") == [("OPEN",)]


@pytest.mark.parametrize("held", [0.0, 0.02])
def test_a_paper_exchange_reports_its_signed_positions(held):
    from plugins.paper_exchange import PaperExchange

    exchange = PaperExchange()
    if held:
        exchange.positions["BTCUSDT"] = -held
    assert exchange.positions_held(["BTCUSDT", "ETHUSDT"]) == {"BTCUSDT": -held, "ETHUSDT": 0.0}


# --- live, against the Binance double (spot: a position is the base coin's balance) -------------

def read_stderr_until(process, text: str, seen: list) -> str:
    while True:
        line = process.stderr.readline()
        assert line, "".join(seen)
        seen.append(line)
        if text in line:
            return line


def live_run(tmp_path, double, *extra: str):
    from test_exchange_faults import live_command, live_env

    process = subprocess.Popen(live_command(tmp_path, "--json", *extra), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=live_env(double))
    watchdog = threading.Timer(90, process.kill)  # a line that never comes fails, not hangs
    watchdog.daemon = True
    watchdog.start()
    return process


def stop(process) -> str:
    import signal as signals

    process.send_signal(signals.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return err


def test_a_live_position_opened_by_hand_refuses_entries_until_it_is_gone(tmp_path):
    from binance_double import BinanceDouble
    from test_exchange_faults import read_until, write_signal

    double = BinanceDouble()
    try:
        (tmp_path / "signals.jsonl").write_text("")
        process = live_run(tmp_path, double)
        errors: list = []
        double.set_balance("BTC", 0.02)             # bought by hand
        read_stderr_until(process, f"BTCUSDT: books flat, exchange long 0.02000: {LINE}", errors)
        write_signal(tmp_path, "L1", mode="a")
        seen: list = []
        refusal = read_until(process, lambda r: r["event"] == "REFUSED", seen)
        assert (refusal["trade_id"], refusal["reason"]) == ("T-L1", "exchange_positions_differ")
        assert "T-L1:entry:0" not in double.orders
        double.set_balance("BTC", 0.0)              # sold again by hand
        read_stderr_until(process, "BTCUSDT: books and exchange agree again; new entries allowed",
                          errors)
        write_signal(tmp_path, "L2", mode="a")
        read_until(process, lambda r: r["event"] == "OPEN" and r["trade_id"] == "T-L2", seen)
        stop(process)
        assert double.orders["T-L2:stop:0"]["status"] == "NEW"
        with duckdb.connect(str(tmp_path / "live.duckdb"), read_only=True) as con:
            assert con.execute("SELECT trade_id, state, exit_reason FROM trades ORDER BY 1"
                               ).fetchall() == [
                ("T-L1", "CANCELLED", "entry_exchange_positions_differ"), ("T-L2", "OPEN", None)]
            assert [k for (k,) in con.execute(
                "SELECT kind FROM risk_events WHERE kind LIKE 'positions%' ORDER BY occurred_at"
            ).fetchall()] == ["positions_mismatch", "positions_agree"]
    finally:
        double.close()


def test_a_live_trade_closed_by_hand_is_refused_then_closed_in_the_books_when_accepted(tmp_path):
    from binance_double import BinanceDouble
    from test_exchange_faults import read_until, write_signal

    double = BinanceDouble()
    try:
        write_signal(tmp_path, "L1")
        process = live_run(tmp_path, double)
        seen: list = []
        read_until(process, lambda r: r["event"] == "OPEN", seen)
        # by hand: the stop cancelled, the coins sold at 51,000
        double.handle("DELETE", "/api/v3/order", {"symbol": "BTCUSDT",
                                                  "origClientOrderId": "T-L1:stop:0"})
        double.set_price("BTCUSDT", 51_000)
        double.handle("POST", "/api/v3/order", {
            "symbol": "BTCUSDT", "side": "SELL", "type": "MARKET", "quantity": "0.04444",
            "newClientOrderId": "by-hand"})
        errors: list = []
        read_stderr_until(process, f"BTCUSDT: books long 0.04444, exchange flat: {LINE}", errors)
        stop(process)

        posts = double.order_posts()
        process = live_run(tmp_path, double, "--accept-exchange-positions", "--max-polls", "3")
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert "accepted BTCUSDT: exchange flat adopted (books had long 0.04444): T-L1 closed " \
               "in the books at 51,000 (closed_on_exchange)" in err
        assert double.order_posts() == posts       # nothing sent on its behalf
        with duckdb.connect(str(tmp_path / "live.duckdb"), read_only=True) as con:
            assert con.execute("SELECT state, exit_reason, exit_price, round(realised_pnl, 6) "
                               "FROM trades").fetchall() == [
                ("CLOSED", "closed_on_exchange", 51_000.0, 44.44)]
            assert [k for (k,) in con.execute(
                "SELECT kind FROM risk_events WHERE kind LIKE 'positions%' ORDER BY kind"
            ).fetchall()] == ["positions_adopted", "positions_mismatch", "positions_mismatch"]
    finally:
        double.close()


def test_rulekit_state_lists_a_position_accepted_as_not_ours(tmp_path):
    paper_run(tmp_path, [signal("E1", "ETHUSDT", 1)], 6)
    edit_exchange(tmp_path, sell_by_hand("SOLUSDT", -0.05))
    paper_run(tmp_path, [signal("E1", "ETHUSDT", 1)], 8, "--accept-exchange-positions")
    state = subprocess.run([sys.executable, str(ROOT / "cli.py"), "state", "--audit",
                            str(tmp_path / "run.duckdb")], capture_output=True, text=True,
                           timeout=60)
    assert state.returncode == 0, state.stderr
    assert "not ours (accepted from the exchange, never managed; their symbols take no trade): " \
           "SOLUSDT +0.05" in state.stdout
