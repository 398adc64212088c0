"""Every hook rulekit calls, in one place. Built-in adapters are plugins through these same hooks.

A plugin is a module (or object) with functions marked ``@hookimpl`` named like the specs below. Each
hook is a factory: rulekit asks "who can open this source?" and the first plugin that answers (not
None) serves it, so a plugin declines what it does not recognise by returning None.

Plugins are found in three places: the built-in ``DEFAULT_PLUGINS``, the ``rulekit`` entry-point group
of installed packages (skipped when ``RULEKIT_DISABLE_PLUGIN_AUTOLOAD`` is set), and ``--plugin
module.path`` on the command line. ``rulekit plugins`` lists what is loaded and from where.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import pluggy

from rulekit.market.candles import Candles, Ticker
from rulekit.model import MarketRules, Signal
from rulekit.trading.orders import Order, OrderRequest

PROJECT = "rulekit"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@runtime_checkable
class MarketData(Protocol):
    """A source of prices for the engine's market conditions."""

    def candles(self, symbol: str, start: datetime | None = None,
                end: datetime | None = None) -> Candles:
        """Bars of ``symbol`` whose open time lies in [start, end), oldest first; all when open-ended.
        Raises ``DataError`` when the symbol or the source cannot be read."""

    def symbols(self) -> list[str]:
        """The symbols this source holds."""

    def ticker(self, symbol: str) -> Ticker | None:
        """The latest best bid/ask, or None when the source has no order book (candle files)."""


@runtime_checkable
class Exchange(Protocol):
    """Where approved trades become orders. Exchange refusals are REJECTED orders, not exceptions."""

    def market_rules(self, symbol: str) -> MarketRules | None:
        """Amount step, price tick, minimum amount and notional of ``symbol``; None if not traded."""

    def equity(self) -> float:
        """Account equity in the quote currency: cash plus open positions marked to market."""

    def balances(self) -> Mapping[str, float]:
        """Free balance per currency."""

    def positions_held(self, symbols: Sequence[str]) -> Mapping[str, float]:
        """The signed base quantity the account holds in each of ``symbols`` (positive long,
        negative short, 0.0 flat): what the books' open trades are compared with on start-up and
        while a live run polls (``rulekit.trading.reconcile``). A derivatives account answers
        with its positions (contracts times the contract size); a spot account, which holds coins
        rather than positions, with the base currency's total balance (free and locked in orders),
        so coins held before the run count as held: the run refuses new entries until they are
        gone or accepted. Raises ``ExchangeUnavailable`` when it does not answer."""

    def place_order(self, request: OrderRequest) -> Order:
        """Place ``request``, idempotently: a client order id already placed returns that order."""

    def cancel_order(self, client_order_id: str, symbol: str) -> Order | None:
        """Cancel an open order; a filled one comes back as it is, an unknown one as None (no
        error either way)."""

    def fetch_order(self, client_order_id: str, symbol: str) -> Order | None:
        """The order with this client order id as the exchange now sees it, or None if never placed."""

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Orders still open, for reconciling after a restart."""

    #: True when fills come from the bars handed to ``on_bar`` (a paper exchange): the executor
    #: then hands it a bar once more after an entry filled in it, so the protection placed in
    #: that bar acts in that bar, as the lifecycle reads a bar. False for a real exchange.
    replays_bars: bool

    def on_bar(self, symbol: str, at: float, bar_open: float, high: float, low: float,
               close: float) -> list[Order]:
        """A bar of ``symbol`` opening at ``at`` (live: the last price as a one-price bar) has
        been reached: the orders of ``symbol`` that filled more since the last call, each with
        its cumulative ``filled`` and average price: filled in full (reported once), still OPEN
        with a part filled (reported again as it fills more), or ended on the exchange's side
        (CANCELLED, expired) with or without a part fill, reported once. The executor books only
        what is new, and puts back what an ended order protected (an entry's trade is
        cancelled); orders it cancelled itself need not be reported."""

    def last_price(self, symbol: str) -> float | None:
        """The last traded (or marked) price of ``symbol``; None when none is known yet."""

    @property
    def clock(self) -> float | None:
        """Open time of the last bar this exchange has seen (a replay resumes after it); None
        for a live exchange, whose clock is the wall clock."""

    def as_record(self) -> dict[str, Any] | None:
        """The exchange's own state as plain values, committed with the books after every
        change (a paper exchange: its cash, positions and orders); None for a real exchange,
        which keeps its own."""

    def restore(self, record: Mapping[str, Any]) -> None:
        """Take back the state ``as_record`` gave (after a restart, before anything else)."""


@runtime_checkable
class SignalSource(Protocol):
    """Where signals come from when they are not in a file: a model ensemble, a queue, a bot."""

    def signals(self, start: datetime | None = None, end: datetime | None = None) -> Iterable[Signal]:
        """Signals stamped in [start, end), oldest first."""


@hookspec(firstresult=True)
def rulekit_market_data(source: str, options: Mapping[str, Any]) -> MarketData | None:
    """Open the market-data source named ``source`` (a file path, ``ccxt:binance``, ...).

    Called once per ``--data`` value. ``options`` carries command-line settings (e.g. ``symbol`` for a
    single-symbol file). Return a ``MarketData`` if this plugin serves ``source``, else None.
    """


@hookspec(firstresult=True)
def rulekit_exchange(name: str, options: Mapping[str, Any]) -> Exchange | None:
    """Open the exchange named ``name`` (``paper``, ``ccxt:binance``, ...).

    ``options`` carries settings such as ``sandbox``, ``fee_pct``, ``slippage_bps``, ``equity``.
    Return an ``Exchange`` if this plugin serves ``name``, else None.
    """


@hookspec(firstresult=True)
def rulekit_signal_source(name: str, options: Mapping[str, Any]) -> SignalSource | None:
    """Open the signal source named ``name`` (``reference`` for the built-in indicator ensemble).

    ``options`` may carry ``market_data`` (an open ``MarketData``) for sources computed from prices.
    Return a ``SignalSource`` if this plugin serves ``name``, else None.
    """
