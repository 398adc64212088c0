"""Orders between rulekit and an exchange adapter.

Every order carries a ``client_order_id`` derived from the decision or trade event it serves, so a
retry after a network error or a restart finds the order it already placed instead of placing another.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class OrderRole(StrEnum):
    """What an order does for its trade; the middle of its client order id."""

    ENTRY = "entry"
    STOP = "stop"
    PARTIAL = "partial"
    TARGET = "target"
    EXIT = "exit"


def client_order_id(trade_id: str, role: OrderRole, generation: int) -> str:
    """``<trade id>:<role>:<n>``: the same order always gets the same id, so placing it again
    (a retry, a restart) finds it instead of placing another; ``n`` counts replacements."""
    return f"{trade_id}:{role.value}:{generation}"


def parse_client_order_id(text: str) -> tuple[str, OrderRole, int] | None:
    """The trade id, role and generation of one of our client order ids; None for any other."""
    head, _, generation = text.rpartition(":")
    trade_id, _, role = head.rpartition(":")
    if not trade_id or role not in OrderRole.__members__.values() or not generation.isdigit():
        return None
    return trade_id, OrderRole(role), int(generation)


class OrderSide(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    """MARKET fills now; STOP is a protective stop-market order triggered at ``price``; LIMIT rests."""

    MARKET = "MARKET"
    STOP = "STOP"
    LIMIT = "LIMIT"


class OrderStatus(StrEnum):
    OPEN = "OPEN"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What to place. ``reduce_only`` marks a close: it may never open or grow a position, and a
    minimum-notional rule must never block it (reducing risk is always allowed)."""

    client_order_id: str
    symbol: str
    side: OrderSide
    type: OrderType
    amount: float
    price: float | None = None
    reduce_only: bool = False


@dataclass(frozen=True, slots=True)
class Order:
    """An order as the exchange reports it. A refused order is ``REJECTED`` with a ``reason``
    (insufficient_funds, invalid_order, below_min_notional, ...), never an exception."""

    client_order_id: str
    symbol: str
    side: OrderSide
    type: OrderType
    amount: float
    status: OrderStatus
    filled: float = 0.0
    average_price: float | None = None
    fee: float = 0.0
    price: float | None = None
    exchange_order_id: str | None = None
    reason: str | None = None
    timestamp: float | None = None
    message: str | None = None   # the exchange's own words on a refusal, for a person
