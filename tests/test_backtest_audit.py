"""A backtest's audit written as Arrow columns (``audit.backtests.record_backtest``) holds the rows
the general writers (``AuditLog.write_batch`` per batch, ``RiskStore.save``) write for the same
run: decisions, trades, trade events, risk events and the account, column for column."""
from __future__ import annotations

import math

import pytest
from conftest import EXAMPLE_CANDLES
from test_fast_backtest import TIGHT_LIMITS, make_engine

from audit import AuditLog
from audit.backtests import MODE, record_backtest
from audit.risk_store import RiskStore, backtest_account
from plugins.reference_signals import ensemble_signals
from rulekit.backtest.run import run_backtest
from rulekit.decision.engine import BatchDecisions
from rulekit.model import Signal


def general_writers(audit: AuditLog, engine, run_id: str, result) -> None:
    """What a backtest's audit is: every decision by ``write_batch``, the rest by ``save``."""
    decisions = result.journal.decisions
    with audit.transaction():
        if decisions:
            audit.write_batch(run_id, MODE, BatchDecisions.of(
                engine, *(list(column) for column in zip(*decisions, strict=True))))
        if result.rejected is not None:
            audit.write_batch(run_id, MODE, result.rejected)
        RiskStore(audit, backtest_account(run_id)).save(
            run_id, result.account, result.trades + result.cancelled, result.journal.events,
            result.journal.risk_events)


def rows(audit: AuditLog, table: str, order: str) -> list[tuple]:
    # the run's own id, the wall clock, and the engine's time per decision (the deferred signals
    # are decided when written, so each writer times its own batches)
    skip = {"run_id", "account_id", "updated_at", "decide_us"}
    names = [r[0] for r in audit.db.execute(f"DESCRIBE {table}").fetchall() if r[0] not in skip]
    found = audit.db.execute(f"SELECT {', '.join(names)} FROM {table} ORDER BY {order}").fetchall()
    return [tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in row)
            for row in found]


@pytest.mark.parametrize("limits,batch_rows", [("default", None), ("tight", None),
                                               ("default", 97)])
def test_the_columnar_backtest_audit_writes_the_general_writers_rows(limits, batch_rows, tmp_path,
                                                                     monkeypatch):
    if batch_rows:  # many Arrow batches within the one transaction: the same rows
        monkeypatch.setattr("audit.backtests.BATCH_ROWS", batch_rows)
    engine = make_engine(tmp_path, monkeypatch, **(TIGHT_LIMITS if limits == "tight" else {}))
    from plugins.candle_files import read_candles

    c = read_candles(EXAMPLE_CANDLES)
    signals = list(ensemble_signals(c)) + [
        Signal.malformed({"line": 7, "text": "not json"}),
        Signal.from_record({"signal_id": "bad-price", "symbol": "BTCUSDT", "side": "LONG",
                            "consensus": "STRONG", "confidence": 0.8, "price": -1,
                            "timestamp": float(c.timestamp[500])}),
        Signal.from_record({"signal_id": "late", "symbol": "BTCUSDT", "side": "LONG",
                            "consensus": "UNANIMOUS", "confidence": 0.9,
                            "timestamp": float(c.timestamp[-1]) + 600,
                            "market_timestamp": float(c.timestamp[-1]) + 600,
                            "price": float(c.close[-1]), "atr": float(c.close[-1]) * 0.004,
                            "ema_200": float(c.close[-1]) * 0.99, "volume_24h": 1e9,
                            "spread_bps": 1.0})]
    result = run_backtest(engine, [c], signals, 10_000.0)
    assert result.journal.risk_events and (result.cancelled or limits == "tight")  # "late"
    written = {}
    for name, write in (("general", general_writers), ("columns", record_backtest)):
        with AuditLog(tmp_path / f"{name}.duckdb") as audit:
            run_id = audit.start_run(engine, MODE, "test", {})
            write(audit, engine, run_id, result)
            written[name] = {
                "decisions": rows(audit, "decisions", "seq"),
                "trades": rows(audit, "trades", "trade_id"),
                "trade_events": rows(audit, "trade_events", "trade_id, occurred_at, event"),
                "risk_events": rows(audit, "risk_events", "occurred_at, kind"),
                "account_state": rows(audit, "account_state", "as_of")}
            kept_raw = audit.db.execute(
                "SELECT count(*) FROM decisions WHERE raw_input IS NOT NULL").fetchone()[0]
            assert kept_raw >= 2  # the malformed line and the bad price, rejected on input
    assert len(written["general"]["decisions"]) == len(signals)
    assert written["general"]["trades"] and written["general"]["trade_events"]
    for table, found in written["general"].items():
        assert written["columns"][table] == found, table


def test_a_backtest_audit_is_written_whole_or_not_at_all_and_leaves_the_settings(
        tmp_path, monkeypatch):
    """The write runs under a smaller DuckDB memory limit and one thread, in batches, in one transaction: a
    failure part way leaves no decision of the run, and the settings are the database's own again."""
    engine = make_engine(tmp_path, monkeypatch)
    from plugins.candle_files import read_candles

    c = read_candles(EXAMPLE_CANDLES)
    result = run_backtest(engine, [c], ensemble_signals(c), 10_000.0)
    monkeypatch.setattr("audit.backtests.BATCH_ROWS", 50)
    with AuditLog(tmp_path / "whole.duckdb") as audit:
        settings = "SELECT current_setting('memory_limit'), current_setting('threads')"
        before = audit.db.execute(settings).fetchone()
        run_id = audit.start_run(engine, MODE, "test", {})

        def fail(*args, **kwargs):
            raise RuntimeError("killed while writing the trades")

        with monkeypatch.context() as patch:
            patch.setattr("audit.backtests.insert_trades", fail)
            with pytest.raises(RuntimeError):
                record_backtest(audit, engine, run_id, result)
        assert audit.db.execute("SELECT count(*) FROM decisions WHERE run_id = ?",
                                [run_id]).fetchone()[0] == 0
        assert audit.db.execute(settings).fetchone() == before
        record_backtest(audit, engine, run_id, result)
        assert audit.db.execute("SELECT count(*) FROM decisions WHERE run_id = ?",
                                [run_id]).fetchone()[0] > 50
        assert audit.db.execute(settings).fetchone() == before
