"""A backtest as one self-contained HTML file: inline SVG charts and tables, no scripts, no network.

Equity curve with drawdown underneath, the R distribution, rejection reasons, the headline figures
and every trade: what a risk manager looks at before reading any JSON.
"""
from __future__ import annotations

import html
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

WIDTH, HEIGHT = 900, 220


def render(metrics: dict[str, Any], times: np.ndarray, equity: np.ndarray, trades: Sequence,
           title: str) -> str:
    start = metrics["start_equity"]
    curve = np.concatenate([[start], equity]) if len(equity) else np.array([start])
    moments = np.concatenate([[times[0] if len(times) else 0], times]) if len(times) else np.zeros(1)
    peaks = np.maximum.accumulate(curve)
    drawdown = (curve - peaks) / peaks * 100
    parts = [
        f"<h1>{_e(title)}</h1>",
        _headline(metrics),
        "<h2>Equity</h2>", _line_chart(moments, curve, "#1f6feb", f"{start:,.0f} start"),
        "<h2>Drawdown from peak (%)</h2>", _line_chart(moments, drawdown, "#cf222e", "0%"),
        "<h2>R per trade</h2>", _bars(metrics.get("r_distribution", {}), "#8250df"),
        "<h2>Rejections by reason</h2>", _bars(metrics.get("rejections", {}), "#9a6700"),
        "<h2>Trades</h2>", _trade_table(trades),
    ]
    return ("<!doctype html><html><head><meta charset='utf-8'><title>" + _e(title) +
            "</title><style>body{font:14px system-ui,sans-serif;margin:2em;color:#24292f}"
            "table{border-collapse:collapse}td,th{padding:2px 8px;border-bottom:1px solid #ddd;"
            "text-align:right}th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}"
            ".figures td{text-align:left}</style></head><body>" + "\n".join(parts) +
            "</body></html>\n")


def _headline(m: dict[str, Any]) -> str:
    rows = [("bars", m["bars"]), ("signals", m["signals"]), ("approval rate", m["approval_rate"]),
            ("trades", m["trades"]), ("win rate", m["win_rate"]), ("average R", m["avg_r"]),
            ("profit factor", m["profit_factor"]), ("max drawdown %", m["max_drawdown_pct"]),
            ("worst day %", m["worst_day_pct"]), ("worst week %", m["worst_week_pct"]),
            ("Sharpe (daily, x sqrt 365)", m["sharpe"]), ("Sortino", m["sortino"]),
            ("fee per fill %", m["fee_pct"]), ("slippage per market fill (bps)", m["slippage_bps"]),
            ("fees paid", m["fees"]),
            ("trades cut below the risk budget by a cap", m["capped_trades"]),
            *((f"  capped by {cap}", n) for cap, n in m["size_capped_by"].items()),
            ("risk at the stop / risk budget (average)", m["avg_risk_at_stop_of_budget"]),
            ("final equity", m["final_equity"]),
            ("circuit-breaker trips", m["circuit_breaker_trips"])]
    cells = "".join(f"<tr><th>{_e(name)}</th><td>{_e(_fmt(value))}</td></tr>"
                    for name, value in rows)
    return f"<table class='figures'>{cells}</table>"


def _line_chart(x: np.ndarray, y: np.ndarray, colour: str, label: str) -> str:
    if len(y) < 2 or x[-1] == x[0]:
        return "<p>(not enough points)</p>"
    lo, hi = float(np.min(y)), float(np.max(y))
    span = hi - lo or 1.0
    px = (x - x[0]) / (x[-1] - x[0]) * (WIDTH - 60) + 50
    py = HEIGHT - 20 - (y - lo) / span * (HEIGHT - 40)
    points = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(px, py, strict=False))
    first, last = (datetime.fromtimestamp(float(t), UTC).strftime("%Y-%m-%d")
                   for t in (x[0], x[-1]))
    return (f"<svg width='{WIDTH}' height='{HEIGHT}' role='img' aria-label='{_e(label)}'>"
            f"<polyline fill='none' stroke='{colour}' stroke-width='1.2' points='{points}'/>"
            f"<text x='0' y='14'>{hi:,.2f}</text><text x='0' y='{HEIGHT - 24}'>{lo:,.2f}</text>"
            f"<text x='50' y='{HEIGHT - 4}'>{first}</text>"
            f"<text x='{WIDTH - 90}' y='{HEIGHT - 4}'>{last}</text></svg>")


def _bars(counts: dict[str, int], colour: str) -> str:
    if not counts:
        return "<p>(none)</p>"
    top = max(counts.values()) or 1
    rows = []
    for i, (name, count) in enumerate(counts.items()):
        width = count / top * (WIDTH - 260)
        rows.append(f"<text x='0' y='{i * 22 + 15}'>{_e(name)}</text>"
                    f"<rect x='200' y='{i * 22 + 3}' width='{width:.1f}' height='16' "
                    f"fill='{colour}'/><text x='{205 + width:.1f}' y='{i * 22 + 15}'>{count}</text>")
    return f"<svg width='{WIDTH}' height='{len(counts) * 22 + 6}'>{''.join(rows)}</svg>"


def _trade_table(trades: Sequence) -> str:
    head = ("trade", "symbol", "side", "opened", "closed", "entry", "exit", "quantity", "PnL",
            "R", "MFE R", "MAE R", "exit reason")
    rows = []
    for t in trades:
        cells = (t.trade_id, t.symbol, t.side, _time(t.opened_at), _time(t.closed_at),
                 _fmt(t.entry_price), _fmt(t.exit_price), _fmt(t.initial_quantity),
                 _fmt(t.realised_pnl), _fmt(t.r_multiple), _fmt(t.mfe_r), _fmt(t.mae_r),
                 t.exit_reason)
        rows.append("<tr>" + "".join(f"<td>{_e(str(c))}</td>" for c in cells) + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) +
            "</table>")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4f}" if math.isfinite(value) and abs(value) < 100 else f"{value:,.2f}"
    return str(value)


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M")


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)
