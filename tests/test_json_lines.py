"""``evaluate --json``'s compact lines, assembled column by column with Arrow's string kernels, are
exactly what ``json.dumps`` writes for each decision's record, number for number."""
from __future__ import annotations

import io
import json
import math
import sys

import numpy as np
from conftest import EXAMPLE_CANDLES, ROOT
from test_compiled_paths_agree import random_records

from rulekit.decision.engine import SignalColumns
from rulekit.decision.explain import decision_lines, failed_json, json_numbers, write_decision_lines
from rulekit.model import LEVEL_FIELDS, Signal
from rulekit.policy.vocabulary import size_cap_name

sys.path.insert(0, str(ROOT / "bench"))
import bench_evaluate  # noqa: E402  (the benchmark's own generator)

MARKET_FIELDS = ("price", "atr", "ema_200", "volume_24h", "spread_bps")


def test_numbers_are_written_as_repr_writes_them():
    rng = np.random.default_rng(4)
    values = np.concatenate([
        rng.integers(0, 2**64 - 1, 200_000, dtype=np.uint64).view(np.float64),  # any bits
        rng.uniform(-1e12, 1e12, 50_000), np.round(rng.uniform(0, 1e6, 50_000), 2),
        np.round(rng.uniform(-1e17, 1e17, 20_000)), np.exp(rng.uniform(-30, 40, 50_000)),
        [0.0, -0.0, 1.0, -1.0, 1e-4, 9.999999999999999e-05, 1e16, 9999999999999998.0, 1e15,
         5e-324, 1.7976931348623157e308, 1e10, 9999999999.999998, 0.1, 0.3, 2.5, 100.0,
         math.nan, math.inf, -math.inf]])
    expected = [repr(v) if math.isfinite(v) else "null" for v in values.tolist()]
    assert json_numbers(values).to_pylist() == expected


def bench_batch(engine):
    bench_evaluate.CANDLES = EXAMPLE_CANDLES
    records, _ = bench_evaluate.make_signals(4_000, seed=9)
    records += random_records(500, seed=2)
    records[3]["signal_id"] = 'quote " and \\ and \u00e9 and \u2028'
    signals = [Signal.from_record(r) for r in records] + [Signal.malformed({"line": 9})]
    return engine.decide_batch(SignalColumns.from_signals(signals), equity=10_000)


def reference_line(batch, row: int) -> str:
    signals, policy = batch.signals, batch.engine.policy

    def number(value):
        value = float(value)
        return value if math.isfinite(value) else None

    record = {"signal_id": signals.signal_id[row] or None, "symbol": signals.symbol[row] or None,
              "side": signals.side[row] or None}
    record.update({name: number(getattr(signals, name)[row]) for name in MARKET_FIELDS})
    record["approved"] = bool(batch.approved[row])
    record["reason"] = batch.reason[row]
    record.update({name: number(batch.output(name)[row]) for name in LEVEL_FIELDS})
    record.update(policy_name=policy.name, policy_version=policy.version,
                  policy_hash=policy.hash)
    if not batch.approved[row]:
        record["failed"] = json.loads(failed_json(batch)[row])
    else:
        record["size_capped_by"] = size_cap_name(batch.output("size_capped_by")[row])
    return json.dumps(record) + "\n"


def test_compact_lines_are_json_dumps_of_each_decision(engine):
    batch = bench_batch(engine)
    lines = decision_lines(batch)
    assert len(lines) == len(batch)
    assert {bool(a) for a in batch.approved} == {True, False}
    for row, line in enumerate(lines):
        assert line == reference_line(batch, row), row


def test_lines_written_to_bytes_or_text_are_the_same(engine, monkeypatch):
    batch = bench_batch(engine)
    monkeypatch.setattr("rulekit.decision.explain.CHUNK_ROWS", 1_000)  # several chunks
    expected = "".join(decision_lines(batch))
    text = io.StringIO()
    write_decision_lines(batch, text)
    raw = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    write_decision_lines(batch, raw)
    assert text.getvalue() == expected
    assert raw.buffer.getvalue().decode("utf-8") == expected
