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
def main() -> None:
    """rulekit: risk and trade management between a trading bot's signals and its exchange."""


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
@click.option("--equity", type=float, help="Account equity (quote currency) when a signal has none.")
@click.option("--state", "state_path", type=click.Path(dir_okay=False),
              help="Risk state JSON (equity, day/week start equity, peak, streak, open trades...).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per signal instead of a table.")
@click.option("--audit", "audit_path", default=DEFAULT_AUDIT, show_default=True,
              help="DuckDB audit database every decision is appended to.")
@click.argument("signals")
def evaluate(policy_path: str, equity: float | None, state_path: str | None, as_json: bool,
             audit_path: str, signals: str) -> None:
    """Decide every signal in SIGNALS (JSON Lines or CSV file, or - for stdin).

    Each signal is decided on its own against the same risk state; every decision is written to
    the audit database before it is printed.
    """
    from audit import AuditLog
    from rulekit.engine import Engine, SignalColumns
    from rulekit.policy import load_policy
    from rulekit.signal_files import read_signals
    from rulekit.state_file import load_state

    if equity is not None and not (math.isfinite(equity) and equity > 0):
        raise RulekitError(f"--equity must be a positive number, not {equity}")
    engine = Engine(load_policy(policy_path))
    state = load_state(state_path) if state_path else None
    batch = engine.decide_batch(SignalColumns.from_signals(read_signals(signals)), state, equity,
                                now=datetime.now(timezone.utc))
    with AuditLog(audit_path) as audit:
        run_id = audit.start_run(engine, "dry-run", " ".join(sys.argv[1:]))
        audit.write_batch(run_id, "dry-run", batch)
    if as_json:
        _print_json(batch)
    else:
        _print_table(batch, audit_path, run_id)


def _print_json(batch) -> None:
    signals = batch.signals
    out = sys.stdout
    for row in range(len(batch)):
        record = {"signal_id": signals.signal_id[row] or None, "symbol": signals.symbol[row] or None,
                  "side": signals.side[row] or None}
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
