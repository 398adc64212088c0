"""A writer that keeps the audit database open between commits (the paper replay) lets a reader
in as soon as it waits, and the paper exchange's state is written item by item, only what changed."""
from __future__ import annotations

import subprocess
import sys
import time

from conftest import ROOT

from audit import AuditLog
from audit.lock import readers_path
from audit.risk_store import RiskStore
from rulekit.trading.account import Account


def test_a_writer_holding_the_file_lets_a_waiting_reader_in_and_keeps_it_otherwise(tmp_path,
                                                                                     engine):
    db = tmp_path / "held.duckdb"
    audit = AuditLog(db, hold=False, writer="test")
    audit.yield_to_readers()
    run_id = audit.start_run(engine, "paper")
    store = RiskStore(audit)
    store.save(run_id, Account.new(10_000))
    assert audit._db is not None, "no reader waits: the file stays open after the commit"
    assert readers_path(db).exists()
    reader = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "audit", "sql",
                               "SELECT count(*) AS runs FROM runs", "--audit", str(db), "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    while reader.poll() is None and time.monotonic() < started + 60:
        with audit.deferred():  # the writer goes on committing meanwhile, as a run does
            store.save(run_id, Account.new(10_000))
        audit.let_readers_in()
        time.sleep(0.005)
    out, err = reader.communicate(timeout=60)
    audit.close()
    assert reader.returncode == 0, err
    assert out.strip() == '{"runs": 1}'


def test_a_quiet_step_writes_nothing_and_opens_nothing(tmp_path):
    db = tmp_path / "quiet.duckdb"
    audit = AuditLog(db, hold=False, writer="test")
    with audit.deferred() as written:
        pass
    assert not written.begun and audit._db is None
    audit.close()


def test_the_exchange_state_is_written_item_by_item_and_read_back_whole(tmp_path, engine):
    from plugins.paper_exchange import PaperExchange
    from rulekit.trading.orders import OrderRequest, OrderSide, OrderType

    exchange = PaperExchange(equity=10_000)
    exchange.on_bar("BTCUSDT", 0.0, 20_000, 20_100, 19_900, 20_000)
    for n in range(12):
        exchange.place_order(OrderRequest(f"T-{n}:entry:0", "BTCUSDT", OrderSide.BUY,
                                          OrderType.MARKET, 0.001, None))
    with AuditLog(tmp_path / "parts.duckdb") as audit:
        run_id = audit.start_run(engine, "paper")
        store = RiskStore(audit)
        store.save(run_id, Account.new(10_000), extra={"exchange": exchange.as_record()})
        rows = audit.db.execute("SELECT count(*) FROM run_state").fetchone()[0]
        assert rows == 1 + 12 + 12  # the head, each order, each reduce-only flag
        before = dict(audit.db.execute("SELECT key, updated_at FROM run_state").fetchall())
        exchange.on_bar("BTCUSDT", 300.0, 20_010, 20_100, 19_900, 20_050)  # the entries fill
        exchange.place_order(OrderRequest("T-0:stop:0", "BTCUSDT", OrderSide.SELL,
                                          OrderType.STOP, 0.001, 19_000, reduce_only=True))
        store.save(run_id, Account.new(10_000), extra={"exchange": exchange.as_record()})
        after = dict(audit.db.execute("SELECT key, updated_at FROM run_state").fetchall())
        assert store.load_extra("exchange") == exchange.as_record()
        assert PaperExchange.from_record(store.load_extra("exchange")).as_record() \
            == exchange.as_record()
        exchange.on_bar("BTCUSDT", 600.0, 20_050, 20_060, 20_040, 20_050)  # nothing fills
        store.save(run_id, Account.new(10_000), extra={"exchange": exchange.as_record()})
        last = dict(audit.db.execute("SELECT key, updated_at FROM run_state").fetchall())
    rewritten = sorted(key for key in after if after[key] != before.get(key))
    assert rewritten == ["exchange", *[f"exchange/orders/{n:09d}" for n in range(13)],
                         "exchange/reduce_only/T-0:stop:0"]
    assert [key for key in last if last[key] != after[key]] == ["exchange"]  # marks, clock


def test_every_commit_holds_every_open_trade_with_its_best_price(engine):
    """A quiet bar moves an open trade's best price (its MFE, what a trail is measured from); a
    commit for anything else (here: the end of the run) writes that trade too, since a restart
    resumes after the commit's bars and would never see that bar again."""
    from conftest import golden

    from plugins.paper_exchange import PaperExchange
    from rulekit.model import Signal
    from rulekit.trading.executor import Executor
    from rulekit.trading.trade_manager import MemoryJournal, TradeManager

    class Saved(MemoryJournal):
        trades: list = []

        def record_state(self, account, trades, events, risk_events, extra=None):
            self.trades = [(t.trade_id, t.mfe_r) for t in trades]

    journal = Saved()
    manager = TradeManager(engine, Account.new(10_000), journal, fills_from_exchange=True)
    exchange = PaperExchange(equity=10_000, fee_pct=engine.policy.constants()["fee_pct"])
    exchange.on_bar("BTCUSDT", 0.0, 50_000, 50_000, 50_000, 50_000)
    executor = Executor(manager, exchange)
    decision = executor.on_signal(Signal.from_record(golden(signal_id="s1",
                                                            timestamp="1970-01-01T00:01:00Z")),
                                  now=60.0)
    assert decision.approved, decision.reason
    executor.on_bar("BTCUSDT", 300.0, 50_000, 50_300, 49_900, 50_200)  # the entry fills
    opened = journal.trades
    executor.on_bar("BTCUSDT", 600.0, 50_200, 51_000, 50_100, 50_900)  # quiet: a new best
    assert journal.trades == opened  # nothing committed for it
    executor.checkpoint()
    [(trade_id, mfe_r)] = journal.trades
    assert trade_id == "T-s1" and mfe_r > opened[0][1]
