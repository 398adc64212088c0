"""The ``rulekit`` command: one click group, one function per command; rendering is in
``rulekit/app/console.py``, the work in the library.

Start-up is part of the job (a bot may call ``rulekit validate`` before every deploy): this module
imports only click at the top, and each command imports what it uses, so ``--help`` and
``validate`` never load duckdb, pyarrow, rich or ccxt (tests/test_startup_imports.py).
"""
from __future__ import annotations

import json
import math
import shlex
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import click

from rulekit.errors import RulekitError

DEFAULT_AUDIT = "rulekit-audit.duckdb"


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
    from rulekit.app.plugin_manager import plugin_manager

    ctx = click.get_current_context()
    return plugin_manager(ctx.find_root().obj.get("plugins", ()))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per plugin.")
def plugins(as_json: bool) -> None:
    """List the loaded plugins: where each comes from and the hooks it implements."""
    from rulekit.app.plugin_manager import loaded_plugins

    for row in loaded_plugins(_plugins()):
        if as_json:
            click.echo(_json(row))
        else:
            click.echo(f"{row['name']:28} {row['origin']:24} {', '.join(row['hooks'])}\n"
                       f"{'':28} {row['file'] or ''}")


@main.command()
@click.argument("policies", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--effective", is_flag=True,
              help="Also print every param in force: its value and where it came from (the "
                   "file's line, the schema's default, or an RM_ override).")
def validate(policies: tuple[str, ...], effective: bool) -> None:
    """Check POLICIES (YAML files): schema, names, types, bounds and RM_ overrides.

    Everything the engine would refuse at run time is refused here. The RM_ overrides in force
    are listed after each policy's OK.
    """
    from rulekit.errors import PolicyError
    from rulekit.policy.loader import Param, load_policy

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
        for param in policy.params.values():
            if param.overridden:
                click.echo(f"  override {param.source}: {param.name} = {Param.show(param.value)} "
                           f"(instead of {Param.show(param.default)})")
        if effective:
            width = max(len(name) for name in policy.params)
            for param in sorted(policy.params.values(), key=lambda p: p.name):
                click.echo(f"  {param.name:{width}}  {Param.show(param.value):24}  {param.source}")
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
@click.option("--bars", "bars_paths", multiple=True, metavar="[SYMBOL=]FILE",
              help="Candle file(s) (CSV/Parquet): open a trade for each approved signal and drive "
                   "it through the bars after the signal's time. Updates the database's risk "
                   "state. The symbol comes from the file name unless given as SYMBOL=FILE.")
@click.option("--data", "data_sources", multiple=True, metavar="[SYMBOL=]SOURCE",
              help="Candles (CSV/Parquet file, or any source a plugin serves) to fill each "
                   "signal's price, ATR, EMA-200 and 24h volume at its timestamp. Repeatable; "
                   "SYMBOL=FILE names a file's symbol.")
@click.option("--json", "as_json", is_flag=True,
              help="One compact JSON object per decision instead of a table: the signal, the "
                   "verdict, size and levels, and what the failing rule compared.")
@click.option("--explain", is_flag=True,
              help="With --json: the outcome of every rule and formula (the full trace) too; in "
                   "the table: what each rejection's rule compared.")
@click.option("--audit", "audit_path", default=DEFAULT_AUDIT, show_default=True,
              help="DuckDB audit database: decisions, trades and the account's risk state.")
@click.argument("signals")
def evaluate(policy_path: str, equity: float | None, state_path: str | None,
             bars_paths: tuple[str, ...], data_sources: tuple[str, ...], as_json: bool,
             explain: bool, audit_path: str, signals: str) -> None:
    """Decide every signal in SIGNALS (JSON Lines or CSV file, or - for stdin).

    Without --bars it is a dry run: each signal is decided on its own against the same risk state
    (the database's, or --state, or a fresh account of --equity) and nothing changes. With --bars
    the signals and bars run in time order through the trade manager, as a live run would.
    Every decision is written to the audit database before it is printed.
    """
    from audit import AuditLog
    from rulekit.app import console
    from rulekit.decision.engine import Engine, SignalColumns
    from rulekit.inputs.state_file import load_state
    from rulekit.policy.loader import load_policy

    if equity is not None and not (math.isfinite(equity) and equity > 0):
        raise RulekitError(f"--equity must be a positive number, not {equity}")
    if bars_paths and state_path:
        raise RulekitError("--state is for dry runs; with --bars the database holds the state")
    engine = Engine(load_policy(policy_path))
    if bars_paths or data_sources:  # both work on Signal objects, one at a time
        from rulekit.inputs.signal_files import read_signal_file

        read = read_signal_file(signals)
        records, problems = read.signals, read.problems
        if data_sources:
            from rulekit.market.conditions import with_market_fields

            market = _load_candles(data_sources)
            _check_candles(market, engine.policy, records, bars_drive_trades=False)
            records = with_market_fields(records, {m.candles.symbol: m.candles for m in market},
                                         engine.policy)
        if bars_paths:
            bars = _load_candles(bars_paths)
            _check_candles(bars, engine.policy, records, bars_drive_trades=True)
        table = None
    else:  # a dry run reads the file straight into columns
        from rulekit.inputs.signal_columns import read_signal_columns

        table = read_signal_columns(signals)
        problems = table.problems
    with AuditLog(audit_path, writer="rulekit evaluate --bars" if bars_paths else None) as audit:
        _say_signal_problems(problems, "<stdin>" if signals == "-" else signals)
        if bars_paths:
            _simulate(engine, audit, records, [b.candles for b in bars], equity, as_json)
            return
        stored = None if state_path else _stored_account(audit, equity)
        columns = table.columns if table is not None else SignalColumns.from_signals(records)
        if stored is not None:  # each signal against the account as of its own time
            from rulekit.inputs.rolled_state import decide_against_account

            batch = decide_against_account(engine, columns, stored, datetime.now(UTC))
        else:
            state = load_state(state_path) if state_path else None
            batch = engine.decide_batch(columns, state, equity, now=datetime.now(UTC))
        if table is not None:
            table.keep_input_records(batch)
        run_id = audit.start_run(engine, "dry-run", shlex.join(sys.argv[1:]))
        audit.write_batch(run_id, "dry-run", batch)
    if as_json:
        console.print_decisions_json(batch, explain)
    else:
        console.print_decisions_table(batch, audit_path, run_id, explain)


def _say(line: str) -> None:
    click.echo(line, err=True)


def _stored_account(audit, equity: float | None):
    from rulekit.app.sessions import stored_account

    return stored_account(audit, equity, _say)


def _load_candles(sources: tuple[str, ...]) -> list:
    from rulekit.app.sessions import load_candles

    return load_candles(_plugins(), sources, _say)


def _check_candles(loaded: list, policy, signals, bars_drive_trades: bool) -> None:
    from rulekit.app.sessions import check_candles

    check_candles(loaded, policy, signals, bars_drive_trades, _say)


def _say_signal_problems(problems: list, source: str) -> None:
    """A line for each kind of line rejected as malformed (the first few, and how many more)."""
    from rulekit.inputs.signal_files import summarise

    for line in summarise(problems, source):
        click.echo(f"warning: {line}", err=True)


def _simulate(engine, audit, signals, candles, equity, as_json) -> None:
    from rulekit.app import console
    from rulekit.app.sessions import simulate

    printer = console.JsonSteps() if as_json else console.TextSteps()
    account, run_id = simulate(engine, audit, signals, candles, equity,
                               shlex.join(sys.argv[1:]), printer, _say)
    if not as_json:
        click.echo(console.state_summary(account))
        click.echo(f"audit: {audit.path}  run {run_id}")




@main.command()
@click.option("--audit", "audit_path", default=DEFAULT_AUDIT, show_default=True,
              help="DuckDB audit database holding the account.")
@click.option("--run", "run_id", metavar="ID|last",
              help="A backtest run's own account instead of the database's (last: the latest "
                   "backtest).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object for scripts.")
def state(audit_path: str, run_id: str | None, as_json: bool) -> None:
    """The account's global risk state: equity, drawdowns, streak, circuit breaker, open trades.

    Read-only: the database is left as it was, and it answers while a run trades."""
    from audit.queries import account_of
    from rulekit.app import console

    account = account_of(audit_path, run_id)
    if as_json:
        click.echo(_json(console.state_record(account)))
    else:
        click.echo(console.state_summary(account))


@main.command()
@click.option("--policy", "policy_path", required=True, type=click.Path(dir_okay=False),
              help="Policy YAML file.")
@click.option("--data", "data_sources", multiple=True, required=True, metavar="[SYMBOL=]FILE",
              help="Candle file(s), one symbol each (CSV/Parquet). Repeatable: several symbols "
                   "share one account. The symbol comes from the file name unless given as "
                   "SYMBOL=FILE.")
@click.option("--signals", "signals_path", type=click.Path(dir_okay=False),
              help="Signals (JSON Lines/CSV with timestamps). Default: the built-in reference "
                   "ensemble computed from the candles.")
@click.option("--equity", type=float, default=10_000.0, show_default=True,
              help="Starting equity (quote currency).")
@click.option("--slippage-bps", type=float, default=0.0, show_default=True,
              help="Every market fill (entries at the next bar's open, stops, time exits, end "
                   "of data) this many bps against the trade; limits get none.")
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
    from audit.backtests import BacktestInputs, run_and_record
    from rulekit.app import console
    from rulekit.decision.engine import Engine
    from rulekit.inputs.candle_sources import CandleSource
    from rulekit.inputs.signal_files import read_signal_file
    from rulekit.policy.loader import load_policy

    if not (math.isfinite(equity) and equity > 0):
        raise RulekitError(f"--equity must be a positive number, not {equity}")
    if report_path and not Path(report_path).resolve().parent.is_dir():
        raise RulekitError(f"--report {report_path}: no such directory")
    engine = Engine(load_policy(policy_path))
    loaded = _load_candles(data_sources)
    candles = [item.candles for item in loaded]
    _check_candles(loaded, engine.policy, None, bars_drive_trades=True)  # before any signal
    if signals_path:
        read = read_signal_file(signals_path)
        signals = read.signals
        _check_candles(loaded, engine.policy, signals, bars_drive_trades=True)
    else:
        signals, read = _reference_signals(candles), None
    inputs = BacktestInputs.of([CandleSource.parse(d).absolute() for d in data_sources],
                               signals_path, equity, slippage_bps)
    with AuditLog(audit_path, hold=False, writer="rulekit backtest") as audit:
        if read is not None and signals_path is not None:
            _say_signal_problems(read.problems, signals_path)
        with console.Progress(sum(len(c) for c in candles), quiet=as_json) as progress:
            run_id, result = run_and_record(audit, engine, candles, signals, inputs,
                                            shlex.join(sys.argv[1:]), progress)
    figures = result.metrics()
    figures["run_id"] = run_id
    if report_path:
        from rulekit.backtest.report import render

        try:
            Path(report_path).write_text(render(figures, result.equity_times, result.equity,
                                                result.trades, f"{engine.policy.name} "
                                                f"v{engine.policy.version} backtest {run_id}"))
        except OSError as exc:
            raise RulekitError(f"cannot write the report (the run {run_id} is in the audit "
                               f"database): {exc.strerror}", report_path) from None
    warning = console.cost_warning(figures)
    if warning:
        click.echo(warning, err=True)
    if as_json:
        click.echo(_json(figures))
    else:
        click.echo(console.backtest_summary(figures, audit_path, report_path))


def _reference_signals(candles: list) -> list:
    from rulekit.app.sessions import reference_signals

    return reference_signals(_plugins(), candles)


@main.command()
@click.option("--policy", "policy_path", required=True, type=click.Path(dir_okay=False),
              help="Policy YAML file, watched: a valid new version is swapped in between "
                   "decisions, an invalid one refused.")
@click.option("--exchange", "exchange_name", default="paper", show_default=True,
              help="paper (over --replay candles) or ccxt:<id>, e.g. ccxt:binance (keys from "
                   "RULEKIT_API_KEY / RULEKIT_API_SECRET, adapter options as JSON in "
                   "RULEKIT_EXCHANGE_OPTIONS).")
@click.option("--replay", "replay_paths", multiple=True, metavar="[SYMBOL=]FILE",
              help="Candle file(s) the paper exchange replays as its market (SYMBOL=FILE names "
                   "a file's symbol).")
@click.option("--speed", type=float, default=0.0, show_default=True,
              help="Paper: bars per second (0: as fast as possible).")
@click.option("--sandbox", is_flag=True, help="ccxt: the exchange's testnet.")
@click.option("--poll-seconds", type=float, default=5.0, show_default=True,
              help="ccxt: how often signals are read and prices and fills polled.")
@click.option("--max-polls", type=int, help="ccxt: stop after this many polls.")
@click.option("--signals-from", "signals_from", required=True,
              help="A JSON Lines signals file (followed as it grows), - for standard input, or "
                   "plugin:NAME for a signal-source plugin (plugin:reference).")
@click.option("--status-every", type=int, default=0, show_default=True,
              help="A status line on stderr every N bars (0: none).")
@click.option("--equity", type=float, help="Starting equity of a new audit database.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--audit", "audit_path", default=DEFAULT_AUDIT, show_default=True)
@click.option("--accept-exchange-positions", "accept_positions", is_flag=True,
              help="Where the exchange's positions differ from the books' (a position closed, "
                   "changed or opened by hand), take the exchange's view: a trade it no longer "
                   "holds is closed in the books (closed_on_exchange), a different quantity "
                   "becomes the trade's (its stop placed again), a position never opened here is "
                   "recorded as not ours and its symbol takes no new trade. Without it, new "
                   "entries are refused until they agree.")
def run(policy_path: str, exchange_name: str, replay_paths: tuple[str, ...], speed: float,
        sandbox: bool, poll_seconds: float, max_polls: int | None, signals_from: str,
        status_every: int, equity: float | None, as_json: bool, audit_path: str,
        accept_positions: bool) -> None:
    """Trade signals as they come: decide, send orders, manage the trades, until stopped.

    SIGINT/SIGTERM stop it after the bar in hand: no new entries, everything committed, open
    trades keep their protective orders. A restart (even after SIGKILL) resumes where the last
    commit left it. `rulekit state` works from another terminal meanwhile.
    """
    import signal as signals

    from rulekit.app import console
    from rulekit.app.runs import Printer, StopFlag, run_live, run_paper

    if exchange_name == "paper" and not replay_paths:
        raise RulekitError("--exchange paper needs --replay CANDLES (its market)")
    if exchange_name != "paper" and not exchange_name.startswith("ccxt:"):
        raise RulekitError(f"--exchange {exchange_name}: paper or ccxt:<id>")
    flag = StopFlag()

    def stop(number, frame) -> None:
        flag.stop, flag.reason = True, signals.Signals(number).name

    signals.signal(signals.SIGINT, stop)
    signals.signal(signals.SIGTERM, stop)
    steps = console.JsonSteps() if as_json else console.TextSteps()
    printer = Printer(
        decision=lambda signal, decision: steps(_Step(decision=decision, signal=signal)),
        events=lambda events: steps(_Step(events=tuple(e for e in events
                                                       if e.event.value != "OPEN" or as_json))),
        note=lambda text: click.echo(f"note: {text}", err=True),
        status=lambda text: click.echo(f"status: {text}", err=True),
        refusal=lambda order, at: console.print_refusal(order, at, as_json))
    if exchange_name == "paper":
        from rulekit.policy.loader import load_policy

        market = _load_candles(replay_paths)
        _check_candles(market, load_policy(policy_path), None, bars_drive_trades=True)
        account = run_paper(policy_path, audit_path, [item.candles for item in market],
                            signals_from, equity, speed, printer, flag, status_every,
                            accept_positions)
    else:
        account = run_live(policy_path, audit_path, exchange_name,
                           _exchange_options(sandbox), signals_from, equity, poll_seconds,
                           printer, flag, status_every, max_polls, accept_positions)
    if not as_json:
        click.echo(console.state_summary(account))


def _exchange_options(sandbox: bool) -> dict:
    """Adapter options: keys from the environment (never the command line), extras as JSON."""
    import os

    try:
        options = json.loads(os.environ.get("RULEKIT_EXCHANGE_OPTIONS") or "{}")
    except json.JSONDecodeError as exc:
        raise RulekitError(f"RULEKIT_EXCHANGE_OPTIONS is not JSON: {exc.msg}") from None
    for key, variable in (("apiKey", "RULEKIT_API_KEY"), ("secret", "RULEKIT_API_SECRET")):
        if os.environ.get(variable):
            options[key] = os.environ[variable]
    if sandbox:
        options["sandbox"] = True
    return options


def _Step(**fields):
    from rulekit.trading.trade_manager import Step

    return Step(**fields)


@main.command("test")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per case.")
def test_policies(directory: str, as_json: bool) -> None:
    """Run the policy unit tests (*.tests.yaml) under DIRECTORY; exit 1 if any fails."""
    from rulekit.app.policy_tests import run_policy_tests

    results = run_policy_tests(directory)
    for result in results:
        if as_json:
            click.echo(_json({"file": result.file, "line": result.line, "name": result.name,
                                   "passed": result.passed, "failures": list(result.failures)}))
        elif not result.passed:
            click.echo(f"FAIL {result.file}:{result.line}: {result.name}")
            for failure in result.failures:
                click.echo(f"     {failure}")
    failed = sum(not r.passed for r in results)
    if not as_json:
        click.echo(f"{len(results) - failed} passed, {failed} failed")
    if failed:
        sys.exit(1)


@main.command()
@click.argument("old", type=click.Path(dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="The changes as one JSON object.")
def diff(old: str, new: str, as_json: bool) -> None:
    """What changed from policy OLD to policy NEW: params, rules, formulas, markets, versions."""
    from rulekit.policy.diff import diff_policies, render
    from rulekit.policy.loader import load_policy

    changes = diff_policies(load_policy(old), load_policy(new))
    click.echo(_json(changes) if as_json else render(changes))


@main.group()
def audit() -> None:
    """SQL over the audit log: saved queries, any query, the training-set export."""


@audit.command("queries")
def audit_queries() -> None:
    """List the saved queries and what each answers."""
    from audit.queries import saved_queries

    for query in saved_queries().values():
        click.echo(f"{query.name}\n    {query.description}")


def _run_options(command):
    """--run and --mode: which runs a query reads (one database holds many)."""
    for option in reversed((
            click.option("--run", "run_id", metavar="ID|last",
                         help="Only this run (last: the latest started, of --mode if given). "
                              "`rulekit audit runs` lists them."),
            click.option("--mode", help="Only runs of this mode (backtest, dry-run, simulate, "
                                        "paper, live, replay)."))):
        command = option(command)
    return command


def _runs(run_id: str | None, mode: str | None, audit_path: str | None = None):
    """The run filter; over every run of a database holding several, a line that says so."""
    from audit.queries import RunFilter, mixed_runs_note

    runs = RunFilter(run_id, mode)
    note = mixed_runs_note(audit_path, runs) if audit_path else None
    if note:
        click.echo(f"note: {note}", err=True)
    return runs


def _query_options(command):
    """The options every SQL command shares: database, runs, parameters, output format."""
    command = _run_options(command)
    for option in reversed((
            click.option("--audit", "audit_path", default=DEFAULT_AUDIT, show_default=True),
            click.option("--param", "params", multiple=True, metavar="K=V",
                         help="A DuckDB variable for the query (getvariable('K')). Repeatable."),
            click.option("--json", "as_json", is_flag=True, help="One JSON object per row."),
            click.option("--csv", "as_csv", is_flag=True, help="CSV with a header row."))):
        command = option(command)
    return command


@audit.command("sql")
@click.argument("sql")
@_query_options
def audit_sql(sql: str, audit_path: str, params: tuple[str, ...], as_json: bool,
              as_csv: bool, run_id: str | None, mode: str | None) -> None:
    """Run SQL (read-only) against the audit database (with --run/--mode, its run tables hold
    only those runs' rows)."""
    from audit.queries import run_query

    _print_rows(*run_query(audit_path, sql, _params(params), _runs(run_id, mode)), as_json,
                as_csv)


@audit.command("query")
@click.argument("name")
@_query_options
def audit_query(name: str, audit_path: str, params: tuple[str, ...], as_json: bool,
                as_csv: bool, run_id: str | None, mode: str | None) -> None:
    """Run the saved query NAME (see `rulekit audit queries`) over every run, or those of
    --run/--mode."""
    from audit.queries import run_query, saved_query

    query = saved_query(name)
    runs = _runs(run_id, mode, audit_path if name != "runs" else None)
    _print_rows(*run_query(audit_path, query.sql, _params(params), runs), as_json, as_csv)


@audit.command("runs")
@_query_options
def audit_runs(audit_path: str, params: tuple[str, ...], as_json: bool, as_csv: bool,
               run_id: str | None, mode: str | None) -> None:
    """List the runs: id, mode, policy (name, version, hash), when, the time range of their
    decisions, and their figures (decisions, approved, trades, PnL of closed trades)."""
    from audit.queries import run_query, saved_query

    _print_rows(*run_query(audit_path, saved_query("runs").sql, _params(params),
                           _runs(run_id, mode)), as_json, as_csv)


@audit.command("export")
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--format", "file_format", type=click.Choice(["parquet", "csv"]), default="parquet",
              show_default=True)
@click.option("--audit", "audit_path", default=DEFAULT_AUDIT, show_default=True)
@_run_options
def audit_export(out: str, file_format: str, audit_path: str, run_id: str | None,
                 mode: str | None) -> None:
    """Write the auto-training table to OUT: one row per approved signal that became a closed
    trade, its features at decision time and its realised outcome (R, MFE/MAE, exit, holding).
    Every run's, or those of --run/--mode."""
    from audit.queries import export_training_set

    rows = export_training_set(audit_path, out, file_format, _runs(run_id, mode, audit_path))
    click.echo(f"{rows:,} rows -> {out}")


@main.command()
@click.option("--policy", "policy_path", required=True, type=click.Path(dir_okay=False),
              help="The policy to replay the run under.")
@click.option("--run", "run_id", required=True, metavar="ID|last",
              help="The run to replay (`rulekit audit runs` lists them; last: the latest run "
                   "that is not itself a replay).")
@click.option("--audit", "audit_path", default=DEFAULT_AUDIT, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The comparison as one JSON object.")
def replay(policy_path: str, run_id: str, audit_path: str, as_json: bool) -> None:
    """Decide a run's logged inputs again under another policy and report what changes.

    Each logged signal is decided against the account state it met. For a backtest run the
    backtest is also run again under the new policy (same data, same signals), since a changed
    decision changes the path, and its figures are shown beside the old ones. The replay's
    decisions are audited under a new run (mode replay).
    """
    from audit.backtests import MarketData
    from audit.replay import replay_logged_run
    from rulekit.app import console
    from rulekit.decision.engine import Engine
    from rulekit.policy.loader import load_policy

    engine = Engine(load_policy(policy_path))
    market = MarketData(candles=lambda sources: [m.candles for m in _load_candles(sources)],
                        reference_signals=_reference_signals)
    out = replay_logged_run(audit_path, run_id, engine, shlex.join(sys.argv[1:]), market)
    if as_json:
        click.echo(_json(out))
        return
    click.echo(f"run {out['run_id']} ({out['mode']}): {out['decisions']:,} decisions replayed under "
               f"{engine.policy.name} v{engine.policy.version} (sha256 {engine.policy.hash[:12]})")
    click.echo(f"approved {out['old_approved']:,} -> {out['new_approved']:,}")
    for reason, count in Counter(out["became_rejected"]).most_common():
        click.echo(f"  approved -> rejected by {reason}: {count:,}")
    for reason, count in Counter(out["became_approved"]).most_common():
        click.echo(f"  rejected ({reason}) -> approved: {count:,}")
    click.echo(f"still rejected, another reason: {out['reason_changed']:,}; size changed: "
               f"{out['size_changes']:,} (notional {out['notional_change']:+,.2f})")
    if "backtest" in out:
        old, new = out["backtest"]["old"], out["backtest"]["new"]
        if isinstance(new, str):
            click.echo(f"backtest not re-run: {new}")
        else:
            for key in ("approval_rate", "trades", "win_rate", "avg_r", "profit_factor",
                        "final_equity"):
                click.echo(f"  {key:15} {console.figure(old.get(key)):>14} -> "
                           f"{console.figure(new.get(key)):>14}")
    click.echo(f"audit: {audit_path}  replay run {out['replay_run_id']}")


def _print_rows(columns: list[str], rows: list[tuple], as_json: bool, as_csv: bool) -> None:
    from rulekit.app import console

    if as_json:
        for row in rows:
            click.echo(_json(dict(zip(columns, row, strict=False))))
    else:
        console.print_rows(columns, rows, as_json, as_csv)


def _json(value) -> str:
    """Strict JSON: no value (NaN, infinities) is null; values JSON has no type for (times,
    decimals, what a query returns) are their text."""
    from rulekit.model import json_value

    return json.dumps(_finite(value), allow_nan=False,
                      default=lambda v: json_value(v) if hasattr(v, "dtype") else str(v))


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _params(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise RulekitError(f"--param {pair!r}: expected K=V")
        out[key.strip()] = value
    return out


if __name__ == "__main__":
    main()
