"""The ``rulekit`` command: validate policies and evaluate signals against them."""
from __future__ import annotations

import json
import math
import sys
from collections import Counter
from datetime import datetime, timezone

import click
import numpy as np

from rulekit.errors import RulekitError
from rulekit.model import json_value

DEFAULT_AUDIT = "rulekit-audit.duckdb"
MARKET_FIELDS = ("price", "atr", "ema_200", "volume_24h", "spread_bps")


class RulekitGroup(click.Group):
    """Renders user errors as ``file:line:column: message`` and exit code 2, without a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RulekitError as exc:
            for line in str(exc).splitlines():
                click.echo(f"error: {line}", err=True)
            ctx.exit(2)


@click.group(cls=RulekitGroup)
@click.version_option(package_name="rulekit")
@click.option("--plugin", "plugin_modules", multiple=True, metavar="MODULE",
              help="Load a plugin module (importable dotted path) besides the built-in and "
                   "installed ones. Repeatable.")
@click.pass_context
def main(ctx: click.Context, plugin_modules: tuple[str, ...]) -> None:
    """rulekit: risk and trade management between a trading bot's signals and its exchange."""
    ctx.obj = {"plugins": plugin_modules}


def _plugins():
    """The plugin manager for this invocation (built-ins, installed, --plugin)."""
    from rulekit.plugin_manager import plugin_manager

    ctx = click.get_current_context()
    return plugin_manager(ctx.find_root().obj.get("plugins", ()))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per plugin.")
def plugins(as_json: bool) -> None:
    """List the loaded plugins: where each comes from and the hooks it implements."""
    from rulekit.plugin_manager import loaded_plugins

    for row in loaded_plugins(_plugins()):
        if as_json:
            click.echo(json.dumps(row))
        else:
            click.echo(f"{row['name']:28} {row['origin']:24} {', '.join(row['hooks'])}\n"
                       f"{'':28} {row['file'] or ''}")


@main.command()
@click.argument("policies", nargs=-1, required=True, type=click.Path(dir_okay=False))
def validate(policies: tuple[str, ...]) -> None:
    """Check POLICIES (YAML files): schema, names, types, bounds and RM_ overrides."""
    from rulekit.errors import PolicyError
    from rulekit.policy import load_policy

    failed = 0
    for path in policies:
        try:
            policy = load_policy(path)
        except PolicyError as exc:
            failed += 1
            for line in str(exc).splitlines():
                click.echo(line, err=True)
            continue
        checks = sum(1 for step in policy.steps if step.is_check and not step.builtin)
        click.echo(f"{path}: OK  {policy.name} v{policy.version}  {checks} rules, "
                   f"{len(policy.params)} params  sha256:{policy.hash[:12]}")
    if failed:
        sys.exit(1)


@main.command()
@click.option("--policy", "policy_path", required=True, type=click.Path(dir_okay=False),
              help="Policy YAML file.")
@click.option("--equity", type=float,
              help="Starting equity of a new audit database (quote currency). An existing "
                   "database keeps its own: start plus realised PnL.")
@click.option("--state", "state_path", type=click.Path(dir_okay=False),
              help="Risk state JSON to decide against instead of the database's (dry run only).")
@click.option("--bars", "bars_paths", multiple=True, type=click.Path(dir_okay=False),
              help="Candle file(s) (CSV/Parquet): open a trade for each approved signal and drive "
                   "it through the bars after the signal's time. Updates the database's risk state.")
@click.option("--data", "data_sources", multiple=True,
              help="Candles (CSV/Parquet file, or any source a plugin serves) to fill each "
                   "signal's price, ATR, EMA-200 and 24h volume at its timestamp. Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line instead of a table.")
@click.option("--audit", "audit_path", default=DEFAULT_AUDIT, show_default=True,
              help="DuckDB audit database: decisions, trades and the account's risk state.")
@click.argument("signals")
def evaluate(policy_path: str, equity: float | None, state_path: str | None,
             bars_paths: tuple[str, ...], data_sources: tuple[str, ...], as_json: bool,
             audit_path: str, signals: str) -> None:
    """Decide every signal in SIGNALS (JSON Lines or CSV file, or - for stdin).

    Without --bars it is a dry run: each signal is decided on its own against the same risk state
    (the database's, or --state, or a fresh account of --equity) and nothing changes. With --bars
    the signals and bars run in time order through the trade manager, as a live run would.
    Every decision is written to the audit database before it is printed.
    """
    from audit import AuditLog
    from rulekit.engine import Engine, SignalColumns
    from rulekit.policy import load_policy
    from rulekit.signal_files import read_signals
    from rulekit.state_file import load_state

    if equity is not None and not (math.isfinite(equity) and equity > 0):
        raise RulekitError(f"--equity must be a positive number, not {equity}")
    if bars_paths and state_path:
        raise RulekitError("--state is for dry runs; with --bars the database holds the state")
    engine = Engine(load_policy(policy_path))
    records = read_signals(signals)
    if data_sources:
        from rulekit.conditions import with_market_fields

        records = with_market_fields(records, _candles(data_sources), engine.policy)
    with AuditLog(audit_path) as audit:
        if bars_paths:
            _simulate(engine, audit, records, _candles(bars_paths).values(), equity, as_json)
            return
        state = load_state(state_path) if state_path else _stored_state(audit, equity)
        batch = engine.decide_batch(SignalColumns.from_signals(records), state, equity,
                                    now=datetime.now(timezone.utc))
        run_id = audit.start_run(engine, "dry-run", " ".join(sys.argv[1:]))
        audit.write_batch(run_id, "dry-run", batch)
    if as_json:
        _print_json(batch)
    else:
        _print_table(batch, audit_path, run_id)


def _stored_state(audit, equity: float | None):
    """The database's risk state for a dry run, or None (a fresh account of --equity)."""
    from audit.risk_store import RiskStore

    account = RiskStore(audit).load()
    if account is None:
        return None
    _warn_if_equity_differs(account, equity)
    return account.snapshot()


def _warn_if_equity_differs(account, equity: float | None) -> None:
    if equity is not None and not math.isclose(equity, account.cash_equity):
        click.echo(f"warning: --equity {equity:,.2f} ignored: the database's account has "
                   f"{account.cash_equity:,.2f} (start {account.start_equity:,.2f} plus realised "
                   "PnL)", err=True)


def _candles(sources: tuple[str, ...]) -> dict:
    """Every symbol's candles from the market-data sources named, through the plugins."""
    from rulekit.plugin_manager import open_market_data

    manager = _plugins()
    found = {}
    for name in sources:
        source = open_market_data(manager, name)
        for symbol in source.symbols():
            candles = source.candles(symbol)
            for problem in candles.problems:
                click.echo(f"note: {name}: {problem}", err=True)
            found[symbol] = candles
    return found


def _simulate(engine, audit, signals, candles, equity, as_json) -> None:
    """Signals and bars through the trade manager, state persisted in the audit database."""
    from audit.risk_store import AuditJournal, RiskStore
    from rulekit.account import Account
    from rulekit.trade_manager import TradeManager, drive

    store = RiskStore(audit)
    account = store.load()
    run_id = audit.start_run(engine, SIMULATION_MODE, " ".join(sys.argv[1:]))
    if account is None:
        if equity is None:
            raise RulekitError("a new audit database needs --equity (the account's starting equity)")
        account = Account.new(equity)
        store.save(run_id, account)
    else:
        _warn_if_equity_differs(account, equity)
    decided = store.decided_signal_ids((SIMULATION_MODE,))
    fresh = [s for s in signals if not (s.signal_id and s.signal_id in decided)]
    if len(fresh) < len(signals):
        click.echo(f"resuming: {len(signals) - len(fresh)} signal(s) already decided in this "
                   "database are skipped", err=True)
    trades = TradeManager(engine, account, AuditJournal(audit, store, engine, run_id,
                                                        SIMULATION_MODE))
    printer = _JsonSteps() if as_json else _TextSteps()
    drive(trades, fresh, candles, printer)
    if not as_json:
        click.echo(_state_summary(trades.account))
        click.echo(f"audit: {audit.path}  run {run_id}")


SIMULATION_MODE = "simulate"


class _JsonSteps:
    def __call__(self, step) -> None:
        out = []
        if step.decision is not None:
            record = {"event": "DECISION", "timestamp": _iso(step.signal.timestamp),
                      "signal_id": step.signal.signal_id, "symbol": step.signal.symbol,
                      "side": step.signal.side}
            record.update({name: json_value(getattr(step.signal, name)) for name in MARKET_FIELDS})
            record.update(step.decision.as_dict())
            out.append(record)
        for event in step.events:
            record = event.as_dict()
            record["timestamp"] = _iso_seconds(event.timestamp)
            if record["pnl"] is None:
                del record["pnl"], record["r_multiple"]
            out.append(record)
        for risk in step.risk_events:
            if risk.kind == "circuit_breaker":
                out.append({"event": "CIRCUIT_BREAKER", "timestamp": _iso_seconds(risk.at),
                            "equity": risk.equity, "reason": risk.detail})
        for record in out:
            sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


class _TextSteps:
    def __call__(self, step) -> None:
        if step.decision is not None:
            d, s = step.decision, step.signal
            verdict = (f"APPROVED qty {d.quantity:g} stop {d.stop_loss:,.8g} target "
                       f"{d.take_profit:,.8g}" if d.approved else f"REJECTED {d.reason}")
            click.echo(f"{_iso(s.timestamp) or '-':20}  {s.signal_id or '':10} {s.symbol or '?'} "
                       f"{s.side or '?'}  {verdict}")
        for e in step.events:
            if e.event.value == "OPEN":
                continue
            tail = (f"  pnl {e.pnl:,.2f}  R {e.r_multiple:+.2f}" if e.pnl is not None else "")
            click.echo(f"{_iso_seconds(e.timestamp):20}  {e.trade_id:10} {e.event.value:10} "
                       f"@ {e.price:,.8g}  qty {e.quantity:g}  stop {e.stop_loss:,.8g}  "
                       f"{e.reason or ''}{tail}")
        for r in step.risk_events:
            if r.kind == "circuit_breaker":
                click.echo(f"{_iso_seconds(r.at):20}  CIRCUIT BREAKER  {r.detail}")


def _iso(moment) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def _iso_seconds(seconds: float) -> str:
    return _iso(datetime.fromtimestamp(seconds, timezone.utc))


@main.command()
@click.option("--audit", "audit_path", default=DEFAULT_AUDIT, show_default=True,
              help="DuckDB audit database holding the account.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object for scripts.")
def state(audit_path: str, as_json: bool) -> None:
    """The account's global risk state: equity, drawdowns, streak, circuit breaker, open trades."""
    from pathlib import Path

    from audit import AuditLog
    from audit.risk_store import RiskStore

    if not Path(audit_path).exists():
        raise RulekitError(f"no audit database at {audit_path}")
    with AuditLog(audit_path) as audit:
        account = RiskStore(audit).load()
    if account is None:
        raise RulekitError("this audit database holds no account yet (run evaluate --bars)",
                           audit_path)
    if as_json:
        click.echo(json.dumps(_state_record(account)))
    else:
        click.echo(_state_summary(account))


def _state_record(account) -> dict:
    snapshot = account.snapshot()
    pct = lambda ref: max(0.0, (ref - account.equity) / ref * 100)  # noqa: E731
    return {
        "as_of": _iso_seconds(account.as_of) if math.isfinite(account.as_of) else None,
        "start_equity": account.start_equity, "equity": account.equity,
        "realised_pnl": account.realised_pnl, "unrealised_pnl": account.unrealised_pnl,
        "day_start_equity": account.day_start_equity,
        "daily_drawdown_pct": pct(account.day_start_equity),
        "week_start_equity": account.week_start_equity,
        "weekly_drawdown_pct": pct(account.week_start_equity),
        "peak_equity": account.peak_equity, "drawdown_pct": pct(account.peak_equity),
        "breaker_reference_equity": account.breaker_reference_equity,
        "consecutive_losses": account.consecutive_losses,
        "circuit_breaker_until": _iso(snapshot.circuit_breaker_until),
        "circuit_breaker_active": account.paused(account.as_of),
        "circuit_breaker_trips": account.breaker_trips, "closed_trades": account.closed_trades,
        "open_exposure": account.open_exposure,
        "open_trades": [{"trade_id": t.trade_id, "symbol": t.symbol, "side": t.side,
                         "state": t.state.value, "entry_price": t.entry_price,
                         "quantity": t.quantity, "stop_loss": t.stop_loss,
                         "take_profit": t.take_profit, "realised_pnl": t.realised_pnl,
                         "opened_at": _iso_seconds(t.opened_at)}
                        for t in account.trades.values()],
    }


def _state_summary(account) -> str:
    r = _state_record(account)
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
    return "\n".join(lines)


@main.command()
@click.option("--policy", "policy_path", required=True, type=click.Path(dir_okay=False),
              help="Policy YAML file.")
@click.option("--data", "data_sources", multiple=True, required=True,
              help="Candle file(s), one symbol each (CSV/Parquet). Repeatable: several symbols "
                   "share one account.")
@click.option("--signals", "signals_path", type=click.Path(dir_okay=False),
              help="Signals (JSON Lines/CSV with timestamps). Default: the built-in reference "
                   "ensemble computed from the candles.")
@click.option("--equity", type=float, default=10_000.0, show_default=True,
              help="Starting equity (quote currency).")
@click.option("--slippage-bps", type=float, default=0.0, show_default=True,
              help="Entry fills at the next bar's open, this many bps against the trade.")
@click.option("--json", "as_json", is_flag=True, help="The figures as one JSON object.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False),
              help="Write a self-contained HTML report here.")
@click.option("--audit", "audit_path", default=DEFAULT_AUDIT, show_default=True,
              help="DuckDB audit database: every decision, trade and event, under the run's id.")
def backtest(policy_path: str, data_sources: tuple[str, ...], signals_path: str | None,
             equity: float, slippage_bps: float, as_json: bool, report_path: str | None,
             audit_path: str) -> None:
    """Replay candles bar by bar through the policy: decisions, fills, exits, global limits.

    The same trade manager as a live run; a signal stamped at a bar's close fills at the next
    bar's open. Prints the figures; every decision and trade goes to the audit database.
    """
    from audit import AuditLog
    from audit.risk_store import RiskStore
    from rulekit.backtest import run_backtest
    from rulekit.engine import BatchDecisions, Engine
    from rulekit.plugin_manager import open_signal_source
    from rulekit.policy import load_policy
    from rulekit.signal_files import read_signals

    if not (math.isfinite(equity) and equity > 0):
        raise RulekitError(f"--equity must be a positive number, not {equity}")
    engine = Engine(load_policy(policy_path))
    candles = list(_candles(data_sources).values())
    if signals_path:
        signals = read_signals(signals_path)
    else:
        source = open_signal_source(_plugins(), "reference", {"candles": candles})
        signals = list(source.signals())
    with AuditLog(audit_path) as audit:
        run_id = audit.start_run(engine, "backtest", " ".join(sys.argv[1:]))
        with _progress(sum(len(c) for c in candles), quiet=as_json) as progress:
            result = run_backtest(engine, candles, signals, equity, slippage_bps, run_id,
                                  progress)
        decisions = result.journal.decisions
        with audit.transaction():
            for start in range(0, len(decisions), 50_000):
                chunk = decisions[start:start + 50_000]
                audit.write_batch(run_id, "backtest", BatchDecisions.of(
                    engine, *(list(column) for column in zip(*chunk))))
            if result.rejected is not None:
                audit.write_batch(run_id, "backtest", result.rejected)
            RiskStore(audit, f"backtest:{run_id}").save(
                run_id, result.account, result.trades, result.journal.events,
                result.journal.risk_events)
    figures = result.metrics()
    figures["run_id"] = run_id
    if report_path:
        from pathlib import Path

        from rulekit.report import render

        Path(report_path).write_text(render(figures, result.equity_times, result.equity,
                                            result.trades, f"{engine.policy.name} "
                                            f"v{engine.policy.version} backtest {run_id}"))
    if as_json:
        click.echo(json.dumps(figures, default=json_value))
    else:
        click.echo(_backtest_summary(figures, audit_path, report_path))


class _progress:
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


def _backtest_summary(m: dict, audit_path: str, report_path: str | None) -> str:
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
        f"fees {num(m['fees'])}  circuit-breaker trips {m['circuit_breaker_trips']}",
        f"equity {num(m['start_equity'])} -> {num(m['final_equity'])} "
        f"({num(m['return_pct'], '+.2f')}%)",
        f"audit: {audit_path}  run {m['run_id']}" + (f"  report: {report_path}" if report_path
                                                      else ""),
    ]
    return "\n".join(lines)


@main.group()
def audit() -> None:
    """SQL over the audit log: saved queries, any query, the training-set export."""


@audit.command("queries")
def audit_queries() -> None:
    """List the saved queries and what each answers."""
    from audit.queries import saved_queries

    for query in saved_queries().values():
        click.echo(f"{query.name}\n    {query.description}")


@audit.command("sql")
@click.argument("sql")
@click.option("--audit", "audit_path", default=DEFAULT_AUDIT, show_default=True)
@click.option("--param", "params", multiple=True, metavar="K=V",
              help="A DuckDB variable for the query (getvariable('K')). Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row.")
def audit_sql(sql: str, audit_path: str, params: tuple[str, ...], as_json: bool,
              as_csv: bool) -> None:
    """Run SQL (read-only) against the audit database."""
    from audit.queries import run_query

    _print_rows(*run_query(audit_path, sql, _params(params)), as_json, as_csv)


@audit.command("query")
@click.argument("name")
@click.option("--audit", "audit_path", default=DEFAULT_AUDIT, show_default=True)
@click.option("--param", "params", multiple=True, metavar="K=V",
              help="A parameter of the saved query. Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row.")
def audit_query(name: str, audit_path: str, params: tuple[str, ...], as_json: bool,
                as_csv: bool) -> None:
    """Run the saved query NAME (see `rulekit audit queries`)."""
    from audit.queries import run_query, saved_query

    _print_rows(*run_query(audit_path, saved_query(name).sql, _params(params)), as_json, as_csv)


@audit.command("export")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--format", "file_format", type=click.Choice(["parquet", "csv"]), default="parquet",
              show_default=True)
@click.option("--audit", "audit_path", default=DEFAULT_AUDIT, show_default=True)
def audit_export(out: str, file_format: str, audit_path: str) -> None:
    """Write the auto-training table to OUT: one row per approved signal that became a closed
    trade, its features at decision time and its realised outcome (R, MFE/MAE, exit, holding)."""
    from audit.queries import export_training_set

    rows = export_training_set(audit_path, out, file_format)
    click.echo(f"{rows:,} rows -> {out}")


@main.command()
@click.option("--policy", "policy_path", required=True, type=click.Path(dir_okay=False),
              help="The policy to replay the run under.")
@click.option("--run", "run_id", required=True, help="The run to replay (see the runs table).")
@click.option("--audit", "audit_path", default=DEFAULT_AUDIT, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The comparison as one JSON object.")
def replay(policy_path: str, run_id: str, audit_path: str, as_json: bool) -> None:
    """Decide a run's logged inputs again under another policy and report what changes.

    Each logged signal is decided against the account state it met. For a backtest run the
    backtest is also run again under the new policy (same data, same signals), since a changed
    decision changes the path, and its figures are shown beside the old ones. The replay's
    decisions are audited under a new run (mode replay).
    """
    from pathlib import Path

    from audit import AuditLog
    from audit.replay import replay_run
    from rulekit.engine import Engine
    from rulekit.policy import load_policy

    if not Path(audit_path).exists():
        raise RulekitError(f"no audit database at {audit_path}")
    engine = Engine(load_policy(policy_path))
    with AuditLog(audit_path) as audit:
        result = replay_run(audit, run_id, engine)
        new_run = audit.start_run(engine, "replay", " ".join(sys.argv[1:]))
        audit.write_batch(new_run, "replay", result.batch)
        command = audit.db.execute("SELECT command FROM runs WHERE run_id = ?",
                                   [run_id]).fetchone()[0]
        old_figures = _stored_backtest_figures(audit, run_id) if result.mode == "backtest" else None
    out = result.as_dict()
    out["replay_run_id"] = new_run
    if old_figures is not None:
        out["backtest"] = {"old": old_figures, "new": _rerun_backtest(engine, command)}
    if as_json:
        click.echo(json.dumps(out, default=json_value))
        return
    click.echo(f"run {run_id} ({result.mode}): {result.decisions:,} decisions replayed under "
               f"{engine.policy.name} v{engine.policy.version} (sha256 {engine.policy.hash[:12]})")
    click.echo(f"approved {result.old_approved:,} -> {result.new_approved:,}")
    for reason, count in result.became_rejected.most_common():
        click.echo(f"  approved -> rejected by {reason}: {count:,}")
    for reason, count in result.became_approved.most_common():
        click.echo(f"  rejected ({reason}) -> approved: {count:,}")
    click.echo(f"still rejected, another reason: {result.reason_changed:,}; size changed: "
               f"{result.size_changes:,} (notional {result.size_change_total:+,.2f})")
    if "backtest" in out:
        old, new = out["backtest"]["old"], out["backtest"]["new"]
        if isinstance(new, str):
            click.echo(f"backtest not re-run: {new}")
        else:
            for key in ("approval_rate", "trades", "win_rate", "avg_r", "profit_factor",
                        "final_equity"):
                click.echo(f"  {key:15} {_figure(old.get(key)):>14} -> {_figure(new.get(key)):>14}")
    click.echo(f"audit: {audit_path}  replay run {new_run}")


def _stored_backtest_figures(audit, run_id: str) -> dict:
    """A backtest's headline figures from what it logged (its trades and decisions)."""
    trades, wins, avg_r, gains, losses, pnl = audit.db.execute(
        "SELECT count(*), count(*) FILTER (WHERE realised_pnl > 0), avg(r_multiple), "
        "sum(realised_pnl) FILTER (WHERE realised_pnl > 0), "
        "-sum(realised_pnl) FILTER (WHERE realised_pnl < 0), sum(realised_pnl) "
        "FROM trades WHERE account_id = ?", [f"backtest:{run_id}"]).fetchone()
    decided, approved = audit.db.execute(
        "SELECT count(*), count(*) FILTER (WHERE approved) FROM decisions WHERE run_id = ?",
        [run_id]).fetchone()
    start = audit.db.execute("SELECT start_equity FROM account_state WHERE account_id = ?",
                             [f"backtest:{run_id}"]).fetchone()
    return {"approval_rate": approved / decided if decided else None, "trades": trades,
            "win_rate": wins / trades if trades else None, "avg_r": avg_r,
            "profit_factor": gains / losses if losses else None,
            "final_equity": (start[0] + (pnl or 0.0)) if start else None}


def _rerun_backtest(engine, command: str):
    """The logged backtest command run again under ``engine``'s policy; its figures, or why not."""
    import shlex

    from rulekit.backtest import run_backtest
    from rulekit.plugin_manager import open_signal_source
    from rulekit.signal_files import read_signals

    try:
        context = backtest.make_context("backtest", shlex.split(command)[1:])
    except click.ClickException as exc:
        return f"the logged command cannot be read ({exc.format_message()})"
    params = context.params
    try:
        candles = list(_candles(params["data_sources"]).values())
    except RulekitError as exc:
        return f"its data is not here any more ({exc})"
    if params.get("signals_path"):
        signals = read_signals(params["signals_path"])
    else:
        signals = list(open_signal_source(_plugins(), "reference", {"candles": candles}).signals())
    result = run_backtest(engine, candles, signals, params["equity"], params["slippage_bps"])
    return result.metrics()


def _params(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise RulekitError(f"--param {pair!r}: expected K=V")
        out[key.strip()] = value
    return out


def _print_rows(columns: list[str], rows: list[tuple], as_json: bool, as_csv: bool) -> None:
    if as_json:
        for row in rows:
            click.echo(json.dumps(dict(zip(columns, row)), default=str))
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


def _print_json(batch) -> None:
    signals = batch.signals
    out = sys.stdout
    for row in range(len(batch)):
        record = {"signal_id": signals.signal_id[row] or None, "symbol": signals.symbol[row] or None,
                  "side": signals.side[row] or None}
        record.update({name: json_value(getattr(signals, name)[row]) for name in MARKET_FIELDS})
        record.update(batch.decision(row).as_dict())
        out.write(json.dumps(record) + "\n")


def _print_table(batch, audit_path: str, run_id: str) -> None:
    from rich.console import Console
    from rich.table import Table

    policy = batch.engine.policy
    table = Table(title=f"{policy.name} v{policy.version}  (sha256 {policy.hash[:12]})")
    for heading in ("#", "signal", "symbol", "side", "decision", "quantity", "notional", "risk",
                    "stop loss", "take profit", "R:R"):
        table.add_column(heading, no_wrap=True, justify="left" if heading in (
            "signal", "symbol", "side", "decision") else "right")
    signals = batch.signals
    for row in range(len(batch)):
        decision = batch.decision(row)
        verdict = "[green]APPROVED[/]" if decision.approved else f"[red]REJECTED[/] {decision.reason}"
        figures = [_figure(getattr(decision, name)) for name in
                   ("quantity", "notional", "risk_amount", "stop_loss", "take_profit", "reward_risk")]
        table.add_row(str(row + 1), signals.signal_id[row] or "", signals.symbol[row] or "?",
                      signals.side[row] or "?", verdict, *figures)
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    approved = int(np.count_nonzero(batch.approved))
    reasons = Counter(reason for reason in batch.reason.tolist() if reason)
    summary = ", ".join(f"{reason} {count}" for reason, count in reasons.most_common())
    console.print(f"{len(batch)} signals: {approved} approved, {len(batch) - approved} rejected"
                  + (f" ({summary})" if summary else ""))
    console.print(f"audit: {audit_path}  run {run_id}")


def _figure(value) -> str:
    if value is None:
        return ""
    return f"{value:,.8g}"


if __name__ == "__main__":
    main()
