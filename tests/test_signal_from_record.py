"""``Signal.from_record`` reads a record exactly as the field-by-field reading it replaced: each
field through ``as_text``/``as_number``/``normalise_symbol``/``parse_timestamp``, and not well
formed when ``record_problems`` finds anything (an unknown field, an unreadable time)."""
from __future__ import annotations

import dataclasses
import math

from conftest import golden
from test_compiled_paths_agree import random_records

from rulekit.model import NAN, Signal, as_number, as_text, normalise_symbol, parse_timestamp, record_problems


def field_by_field(record) -> Signal:
    side, consensus, signal_id = (as_text(record.get("side")), as_text(record.get("consensus")),
                                  record.get("signal_id"))
    return Signal(
        symbol=normalise_symbol(record.get("symbol")), side=side.upper() if side else None,
        consensus=consensus.upper() if consensus else None,
        confidence=as_number(record.get("confidence")), price=as_number(record.get("price")),
        atr=as_number(record.get("atr")), ema_200=as_number(record.get("ema_200")),
        volume_24h=as_number(record.get("volume_24h")),
        spread_bps=as_number(record.get("spread_bps")),
        signal_id=None if signal_id in (None, "") else str(signal_id),
        timestamp=parse_timestamp(record.get("timestamp")),
        market_timestamp=parse_timestamp(record.get("market_timestamp")),
        strength=as_number(record.get("strength")), model_votes=record.get("model_votes"),
        equity=as_number(record.get("equity")), well_formed=not record_problems(record),
        raw=record)


class Text(str):
    """A str subclass: read as text, like a plain str."""


ODD = [
    {}, {"symbol": None}, {"symbol": " btc/usdt:USDT "}, {"symbol": Text("eth-usdt")},
    {"symbol": 5}, {"symbol": ["BTCUSDT"]}, {"side": " short "}, {"side": Text("long")},
    {"side": ""}, {"side": "   "}, {"consensus": "strong"}, {"consensus": 3},
    {"confidence": "0.8"}, {"confidence": " 0.8 "}, {"confidence": True}, {"confidence": 1},
    {"price": float("nan")}, {"price": "abc"}, {"price": None}, {"price": [1]},
    {"timestamp": ""}, {"timestamp": "  "}, {"timestamp": "soon"}, {"timestamp": 1_795_526_400},
    {"timestamp": 1_795_526_400_500}, {"timestamp": "1795526400"}, {"timestamp": " 1795526400.5 "},
    {"timestamp": "2026-11-24T12:00:00"}, {"timestamp": " 2026-11-24T12:00:00Z "},
    {"timestamp": "2026-11-24T12:00:00.123456+05:30"}, {"timestamp": "2026-02-30T12:00:00Z"},
    {"timestamp": True}, {"timestamp": 1e300}, {"timestamp": Text("2026-11-24")},
    {"market_timestamp": "later"}, {"market_timestamp": ""}, {"signal_id": 7},
    {"signal_id": ""}, {"pirce": 1}, {1: 2}, {"model_votes": {"xgb": "LONG"}},
    {"equity": "lots"}, {"equity": 40},
]


def same(a: Signal, b: Signal) -> bool:
    for field in dataclasses.fields(Signal):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        if x != y or type(x) is not type(y):
            return False
    return True


def test_from_record_reads_every_field_as_the_field_by_field_reading():
    records = [{**golden(), **odd} for odd in ODD] + ODD + random_records(500, seed=3)
    for record in records + records:  # twice: the words are looked up the second time
        assert same(Signal.from_record(record), field_by_field(record)), record


def test_a_signal_built_by_keyword_or_replaced_keeps_every_field():
    signal = Signal("BTCUSDT", "LONG", "STRONG", 0.9, price=50_000.0)
    assert (signal.price, signal.atr, signal.raw, signal.well_formed) == (50_000.0, signal.atr,
                                                                         None, True)
    assert math.isnan(signal.atr) and math.isnan(NAN)
    moved = dataclasses.replace(signal, price=1.0, side="SHORT")
    assert (moved.price, moved.side, moved.symbol, moved.confidence) == (1.0, "SHORT", "BTCUSDT",
                                                                         0.9)
    try:
        signal.price = 2.0  # type: ignore[misc]
    except dataclasses.FrozenInstanceError:
        pass
    else:
        raise AssertionError("a Signal must stay frozen")
