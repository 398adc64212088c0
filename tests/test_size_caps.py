"""Every decision names the cap that bound its size (``size_capped_by``), in the trace, the JSON
output and the audit; worked on the golden example (LONG BTCUSDT 50,000, ATR 1,500, equity 10,000):
the risk-based size is 100 / 2,250 = 0.0444 (2,220 notional), under every cap."""
from __future__ import annotations

import json
import subprocess
import sys

import duckdb
import pytest
from conftest import DEFAULT_POLICY, ROOT, golden

from audit import AuditLog
from audit.log import SCHEMA_VERSION
from rulekit.decision.engine import Engine, SignalColumns
from rulekit.model import RiskState, Signal
from rulekit.policy.loader import load_policy


def capped_by(decision) -> str:
    from rulekit.policy.vocabulary import size_cap_name
    return size_cap_name(decision.value("size_capped_by"))


def test_the_golden_example_is_sized_by_its_risk_and_no_cap(engine):
    decision = engine.decide(Signal.from_record(golden()), equity=10_000)
    assert (decision.quantity, decision.stop_loss) == (0.0444, 47_750)
    assert capped_by(decision) == "none" and decision.risk_at_stop == pytest.approx(99.9)
    trace = {line.rule: line.value for line in decision.trace if line.passed is None}
    assert trace["size_capped_by"] == 0


def test_a_tight_stop_is_cut_to_the_exposure_headroom_and_says_so(engine):
    # ATR 150: stop 225 away, risk size 100 / 225 = 0.4444 (22,222 notional) is more than the
    # 80% exposure cap (8,000; the 3x leverage cap is 30,000): 8,000 / 50,000 = 0.16, which
    # risks 0.16 x 225 = 36 at the stop, 36% of the 100 budget
    decision = engine.decide(Signal.from_record(golden(atr=150)), equity=10_000)
    assert decision.quantity == 0.16 and decision.risk_at_stop == pytest.approx(36)
    assert capped_by(decision) == "exposure_headroom"
    # with 7,000 open, the room is 1,000: 0.02 (the policy test's case)
    state = RiskState(equity=10_000, day_start_equity=10_000, week_start_equity=10_000,
                      peak_equity=10_000, breaker_reference_equity=10_000, open_trades=2,
                      open_exposure=7_000)
    shrunk = engine.decide(Signal.from_record(golden(consensus="UNANIMOUS", confidence=0.9)),
                           state=state)
    assert shrunk.quantity == 0.02 and capped_by(shrunk) == "exposure_headroom"


def test_a_leverage_cap_below_the_exposure_cap_is_named_max_notional(monkeypatch):
    monkeypatch.setenv("RM_MAX_LEVERAGE", "0.1")       # 1,000 notional: 0.02 BTC
    engine = Engine(load_policy(DEFAULT_POLICY))
    decision = engine.decide(Signal.from_record(golden()), equity=10_000)
    assert decision.quantity == 0.02 and capped_by(decision) == "max_notional"
    assert decision.risk_at_stop == pytest.approx(45)  # 0.02 x 2,250


def test_the_batch_and_the_scalar_decision_name_the_same_cap(engine):
    records = [golden(), golden(atr=150), golden(atr=40, ema_200=49_000), golden(price=float("nan"))]
    signals = [Signal.from_record(r) for r in records]
    batch = engine.decide_batch(SignalColumns.from_signals(signals), equity=10_000)
    for row, signal in enumerate(signals):
        one = engine.decide(signal, equity=10_000)
        assert batch.values["size_capped_by"][row] == pytest.approx(
            one.value("size_capped_by"), nan_ok=True)
    assert batch.output("size_capped_by").tolist()[:2] == [0, 2]


def cli(*args, cwd):
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def test_evaluate_shows_the_cap_in_json_the_table_and_the_audit(tmp_path):
    (tmp_path / "s.jsonl").write_text(
        json.dumps(golden(signal_id="full")) + "\n" + json.dumps(golden(signal_id="cut", atr=150))
        + "\n" + json.dumps(golden(signal_id="no", confidence=0.5)) + "\n")
    out = cli("evaluate", "--policy", DEFAULT_POLICY, "--equity", 10_000, "--json", "--audit",
              tmp_path / "a.duckdb", tmp_path / "s.jsonl", cwd=tmp_path).stdout
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line.get("size_capped_by") for line in lines] == ["none", "exposure_headroom", None]
    explained = cli("evaluate", "--policy", DEFAULT_POLICY, "--equity", 10_000, "--json",
                    "--explain", "--audit", tmp_path / "b.duckdb", tmp_path / "s.jsonl",
                    cwd=tmp_path).stdout
    assert [json.loads(line).get("size_capped_by") for line in explained.splitlines()] == [
        "none", "exposure_headroom", None]
    with duckdb.connect(str(tmp_path / "a.duckdb"), read_only=True) as con:
        assert con.execute("SELECT signal_id, size_capped_by, round(risk_at_stop, 6) FROM "
                           "decisions ORDER BY seq").fetchall() == [
            ("full", "none", 99.9), ("cut", "exposure_headroom", 36.0), ("no", None, None)]
    table = cli("evaluate", "--policy", DEFAULT_POLICY, "--equity", 10_000, "--audit",
                tmp_path / "c.duckdb", tmp_path / "s.jsonl", cwd=tmp_path).stdout
    assert "risk at stop" in table and "capped by" in table
    assert "99.9" in table and "exposure_headroom" in table


def test_a_version_3_database_gets_the_size_cap_column_and_keeps_its_rows(tmp_path):
    db = tmp_path / "v3.duckdb"
    AuditLog(db).close()
    with duckdb.connect(str(db)) as con:  # as version 3 left it
        con.execute("ALTER TABLE decisions DROP COLUMN size_capped_by")
        con.execute("UPDATE schema_info SET version = 3")
        con.execute("INSERT INTO runs VALUES ('r1', 'dry-run', '', 'h', now(), NULL)")
    engine = Engine(load_policy(DEFAULT_POLICY))
    batch = engine.decide_batch(SignalColumns.from_signals([Signal.from_record(golden())]),
                                equity=10_000)
    with AuditLog(db) as audit:
        assert audit.version == SCHEMA_VERSION
        run_id = audit.start_run(engine, "dry-run")
        audit.write_batch(run_id, "dry-run", batch)
        assert audit.db.execute("SELECT count(*) FROM runs").fetchone()[0] == 2
        assert audit.db.execute("SELECT size_capped_by FROM decisions").fetchall() == [("none",)]
