"""What a person and a script see: decision tables, JSON lines, summaries of state and backtests.

Rendering only; the CLI (``cli.py``) decides what to show.
"""
from __future__ import annotations

import json
import math
import sys
from collections import Counter

import click

from rulekit.model import format_timestamp, json_value
from rulekit.policy.vocabulary import size_cap_name
from rulekit.trading.account import RiskEventKind

MARKET_FIELDS = ("price", "atr", "ema_200", "volume_24h", "spread_bps")


class JsonSteps:
    """``evaluate --bars --json``: one object per decision, trade event and breaker trip."""

    def __call__(self, step) -> None:
        out = []
        if step.decision is not None:
            record = {"event": "DECISION", "timestamp": format_timestamp(step.signal.timestamp),
                      "signal_id": step.signal.signal_id, "symbol": step.signal.symbol,
                      "side": step.signal.side}
            record.update({name: json_value(getattr(step.signal, name)) for name in MARKET_FIELDS})
            record.update(step.decision.as_dict())
            if step.decision.approved:
                record["size_capped_by"] = size_capped_by(step.decision)
            out.append(record)
        for event in step.events:
            record = event.as_dict()
            record["timestamp"] = format_timestamp(event.timestamp)
            if record["pnl"] is None:
                del record["pnl"], record["r_multiple"]
            out.append(record)
        for risk in step.risk_events:
            if risk.kind is RiskEventKind.CIRCUIT_BREAKER:
                out.append({"event": "CIRCUIT_BREAKER", "timestamp": format_timestamp(risk.at),
                            "equity": risk.equity, "reason": risk.detail})
        for record in out:
            sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


class TextSteps:
    """``evaluate --bars``: one line per decision and per trade event, for a person."""

    def __call__(self, step) -> None:
        if step.decision is not None:
            d, s = step.decision, step.signal
            verdict = (f"APPROVED qty {d.quantity:g} stop {d.stop_loss:,.8g} target "
                       f"{d.take_profit:,.8g}" if d.approved else f"REJECTED {d.reason}")
            click.echo(f"{format_timestamp(s.timestamp) or '-':20}  {s.signal_id or '':10} {s.symbol or '?'} "
                       f"{s.side or '?'}  {verdict}")
        for e in step.events:
            if e.event.value == "OPEN":
                continue
            tail = (f"  pnl {e.pnl:,.2f}  R {e.r_multiple:+.2f}" if e.pnl is not None else "")
            click.echo(f"{format_timestamp(e.timestamp):20}  {e.trade_id:10} {e.event.value:10} "
                       f"@ {e.price:,.8g}  qty {e.quantity:g}  stop {e.stop_loss:,.8g}  "
                       f"{e.reason or ''}{tail}")
        for r in step.risk_events:
            if r.kind is RiskEventKind.CIRCUIT_BREAKER:
                click.echo(f"{format_timestamp(r.at):20}  CIRCUIT BREAKER  {r.detail}")


def refusal_record(order, at: float) -> dict:
    """An order the exchange refused (``run --json``): what, why, and the exchange's own words."""
    from rulekit.trading.orders import parse_client_order_id

    parsed = parse_client_order_id(order.client_order_id)
    return {"event": "REFUSED", "timestamp": format_timestamp(at),
            "trade_id": parsed[0] if parsed else None, "role": parsed[1].value if parsed else None,
            "client_order_id": order.client_order_id, "symbol": order.symbol,
            "side": order.side.value, "type": order.type.value, "amount": order.amount,
            "price": order.price, "reason": order.reason, "message": order.message}


def print_refusal(order, at: float, as_json: bool) -> None:
    """One line per refusal; an entry refused means its trade was cancelled."""
    r = refusal_record(order, at)
    if as_json:
        sys.stdout.write(json.dumps(r) + "\n")
        sys.stdout.flush()
        return
    consequence = "  trade cancelled" if r["role"] == "entry" else ""
    click.echo(f"{r['timestamp']:20}  {r['trade_id'] or '':10} REFUSED    {r['role'] or ''} "
               f"{r['side']} {r['amount']:g} {r['symbol']}: {r['reason']}"
               + (f" ({r['message']})" if r["message"] else "") + consequence)


def state_record(account) -> dict:
    pct = lambda ref: max(0.0, (ref - account.equity) / ref * 100)  # noqa: E731
    return {
        "as_of": format_timestamp(account.as_of) if math.isfinite(account.as_of) else None,
        "start_equity": account.start_equity, "equity": account.equity,
        "realised_pnl": account.realised_pnl, "unrealised_pnl": account.unrealised_pnl,
        "day_start_equity": account.day_start_equity,
        "daily_drawdown_pct": pct(account.day_start_equity),
        "week_start_equity": account.week_start_equity,
        "weekly_drawdown_pct": pct(account.week_start_equity),
        "peak_equity": account.peak_equity, "drawdown_pct": pct(account.peak_equity),
        "breaker_reference_equity": account.breaker_reference_equity,
        "consecutive_losses": account.consecutive_losses,
        "circuit_breaker_until": format_timestamp(account.circuit_breaker_until),
        "circuit_breaker_active": account.paused(account.as_of),
        "circuit_breaker_trips": account.breaker_trips, "closed_trades": account.closed_trades,
        "open_exposure": account.open_exposure,
        "open_trades": [{"trade_id": t.trade_id, "symbol": t.symbol, "side": t.side,
                         "state": t.state.value, "entry_price": t.entry_price,
                         "quantity": t.quantity, "stop_loss": t.stop_loss,
                         "take_profit": t.take_profit, "realised_pnl": t.realised_pnl,
                         "opened_at": format_timestamp(t.opened_at)}
                        for t in account.trades.values()],
        # positions accepted from the exchange as not ours (signed quantity by symbol)
        "unmanaged_positions": dict(account.unmanaged),
    }


def state_summary(account) -> str:
    r = state_record(account)
    lines = [f"equity {r['equity']:,.2f}  (start {r['start_equity']:,.2f}, realised "
             f"{r['realised_pnl']:+,.2f}, unrealised {r['unrealised_pnl']:+,.2f})  as of "
             f"{r['as_of'] or '-'}",
             f"daily drawdown {r['daily_drawdown_pct']:.2f}% (day start "
             f"{r['day_start_equity']:,.2f})  weekly {r['weekly_drawdown_pct']:.2f}%  from peak "
             f"{r['drawdown_pct']:.2f}% (peak {r['peak_equity']:,.2f})",
             f"losing streak {r['consecutive_losses']}  circuit breaker "
             f"{'PAUSED until ' if r['circuit_breaker_active'] else 'clear'}"
             f"{r['circuit_breaker_until'] if r['circuit_breaker_active'] else ''}"
             f" ({r['circuit_breaker_trips']} trips)  closed trades {r['closed_trades']}",
             f"open trades {len(r['open_trades'])}  exposure {r['open_exposure']:,.2f}"]
    for t in r["open_trades"]:
        lines.append(f"  {t['trade_id']} {t['symbol']} {t['side']} {t['state']} qty "
                     f"{t['quantity']:g} entry {t['entry_price']:,.8g} stop {t['stop_loss']:,.8g}"
                     f" target {t['take_profit']:,.8g}")
    if r["unmanaged_positions"]:
        lines.append("not ours (accepted from the exchange, never managed; their symbols take "
                     "no trade): " + ", ".join(f"{symbol} {quantity:+g}" for symbol, quantity
                                               in r["unmanaged_positions"].items()))
    return "\n".join(lines)


def backtest_summary(m: dict, audit_path: str, report_path: str | None) -> str:
    def num(value, spec=",.2f"):
        return "-" if value is None else format(value, spec)

    rejections = ", ".join(f"{reason} {count}" for reason, count in m["rejections"].items())
    lines = [
        f"{m['bars']:,} bars of {', '.join(m['symbols'])}",
        f"signals {m['signals']:,}: approved {m['approved']:,} ({num(m['approval_rate'], '.1%')})"
        + (f"; rejected: {rejections}" if rejections else ""),
        f"trades {m['trades']:,}  win rate {num(m['win_rate'], '.1%')}  average R "
        f"{num(m['avg_r'], '+.3f')}  profit factor {num(m['profit_factor'])}  average size "
        f"{num(m['avg_position_notional'])}",
        "exits: " + ", ".join(f"{k} {v}" for k, v in m["exit_reasons"].items()),
        f"max drawdown {num(m['max_drawdown_pct'])}%  worst day {num(m['worst_day_pct'])}%  "
        f"worst week {num(m['worst_week_pct'])}%  Sharpe {num(m['sharpe'])}  Sortino "
        f"{num(m['sortino'])} (daily, x sqrt 365)",
        f"costs: fee {m['fee_pct']:g}% per fill, slippage {m['slippage_bps']:g} bps per market "
        f"fill (entries, stops, time exits, end of data; limits none)  fees paid {num(m['fees'])}",
        f"sizes: {m['capped_trades']:,} of {m['trades']:,} trades cut below the risk budget by a "
        "cap (" + ", ".join(f"{cap} {n}" for cap, n in m["size_capped_by"].items()) + "); risk "
        f"at the stop {num(m['avg_risk_at_stop_of_budget'], '.0%')} of the budget on average",
        f"circuit-breaker trips {m['circuit_breaker_trips']}",
        f"equity {num(m['start_equity'])} -> {num(m['final_equity'])} "
        f"({num(m['return_pct'], '+.2f')}%)",
        f"audit: {audit_path}  run {m['run_id']}" + (f"  report: {report_path}" if report_path
                                                      else ""),
    ]
    return "\n".join(lines)


def cost_warning(m: dict) -> str | None:
    """One line for stderr when a backtest assumes trading is free of fees or of slippage."""
    free = [what for what, value in (("zero fees (fee_pct 0)", m["fee_pct"]),
                                     ("zero slippage (--slippage-bps 0)", m["slippage_bps"]))
            if not value]
    if not free:
        return None
    return (f"warning: this backtest assumes {' and '.join(free)}: real fills cost more, so its "
            "figures are optimistic")


def print_rows(columns: list[str], rows: list[tuple], as_json: bool, as_csv: bool) -> None:
    if as_json:
        for row in rows:
            click.echo(json.dumps(dict(zip(columns, row, strict=False)), default=str))
        return
    if as_csv:
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in columns:
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*("" if v is None else f"{v:,.6g}" if isinstance(v, float) else str(v)
                        for v in row))
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    click.echo(f"{len(rows):,} row(s)")


def print_decisions_json(batch, explain: bool = False) -> None:
    """One JSON object per decision: compact (``decision_lines``), or with ``explain`` the full
    trace of every rule."""
    out = sys.stdout
    if not explain:
        from rulekit.decision.explain import write_decision_lines

        write_decision_lines(batch, out)  # an approval names its cap
        return
    caps = [size_cap_name(code) for code in batch.output("size_capped_by").tolist()]
    signals = batch.signals
    for row in range(len(batch)):
        record = {"signal_id": signals.signal_id[row] or None, "symbol": signals.symbol[row] or None,
                  "side": signals.side[row] or None}
        record.update({name: json_value(getattr(signals, name)[row]) for name in MARKET_FIELDS})
        record.update(batch.decision(row).as_dict())
        if caps[row] is not None:
            record["size_capped_by"] = caps[row]
        out.write(json.dumps(record) + "\n")


TABLE_ROWS = 50  # a table is for a person: past this, the first rows and the summary


def print_decisions_table(batch, audit_path: str, run_id: str, explain: bool = False) -> None:
    """The decisions as a table; with ``explain`` a rejection shows what its rule compared."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from rulekit.decision.explain import failed_json

    policy = batch.engine.policy
    table = Table(title=f"{policy.name} v{policy.version}  (sha256 {policy.hash[:12]})")
    for heading in ("#", "signal", "symbol", "side", "decision", "quantity", "notional", "risk",
                    "risk at stop", "capped by", "stop loss", "take profit", "R:R"):
        table.add_column(heading, no_wrap=True, justify="left" if heading in (
            "signal", "symbol", "side", "decision", "capped by") else "right")

    signals = batch.signals
    for row in range(min(len(batch), TABLE_ROWS)):
        decision = batch.decision(row)
        verdict = "[green]APPROVED[/]" if decision.approved else f"[red]REJECTED[/] {decision.reason}"
        figures = [figure(getattr(decision, name)) for name in
                   ("quantity", "notional", "risk_amount", "risk_at_stop")]
        figures.append((size_capped_by(decision) or "") if decision.approved else "")
        figures += [figure(getattr(decision, name)) for name in
                    ("stop_loss", "take_profit", "reward_risk")]
        table.add_row(str(row + 1), signals.signal_id[row] or "", signals.symbol[row] or "?",
                      signals.side[row] or "?", verdict, *figures)
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    if explain:  # what each rejection's rule compared, a line each under the table
        compared = failed_json(batch)
        for row in range(min(len(batch), TABLE_ROWS)):
            if compared[row]:
                console.print(f"#{row + 1} {batch.reason[row]}: {_compared(compared[row])}",
                              markup=False, highlight=False)
    if len(batch) > TABLE_ROWS:
        console.print(f"... {len(batch) - TABLE_ROWS:,} more; use --json")
    approved = int(np.count_nonzero(batch.approved))
    reasons = Counter(reason for reason in batch.reason.tolist() if reason)
    summary = ", ".join(f"{reason} {count}" for reason, count in reasons.most_common())
    console.print(f"{len(batch)} signals: {approved} approved, {len(batch) - approved} rejected"
                  + (f" ({summary})" if summary else ""))
    console.print(f"audit: {audit_path}  run {run_id}")


def _compared(text: str | None) -> str:
    """``{"confidence": 0.68, "min_confidence": 0.7}`` as ``confidence 0.68, min_confidence 0.7``."""
    if not text:
        return ""
    return ", ".join(f"{name} {json.dumps(value)}" for name, value in json.loads(text).items())


def size_capped_by(decision) -> str | None:
    """What bound an approved decision's size: none, max_notional or exposure_headroom."""
    return size_cap_name(decision.value("size_capped_by"))


def figure(value) -> str:
    if value is None:
        return ""
    return f"{value:,.8g}"


class Progress:
    """A progress bar on stderr for long runs in a terminal; nothing otherwise."""

    def __init__(self, total: int, quiet: bool):
        self.total = total
        self.show = not quiet and total >= 200_000 and sys.stderr.isatty()

    def __enter__(self):
        if not self.show:
            return None
        from rich.progress import Progress

        self.bar = Progress(transient=True)
        self.bar.start()
        self.task = self.bar.add_task("bars", total=self.total)
        return lambda done, total: self.bar.update(self.task, completed=done)

    def __exit__(self, *exc) -> None:
        if self.show:
            self.bar.stop()
