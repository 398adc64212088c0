"""Plugins: built-ins through the same hooks as third-party ones, found by entry point or --plugin."""
from __future__ import annotations

import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT

from rulekit import hookspecs
from rulekit.app.plugin_manager import DEFAULT_PLUGINS, PluginError, loaded_plugins, plugin_manager

THIRD_PARTY = '''
from rulekit.hookspecs import hookimpl

@hookimpl
def rulekit_signal_source(name, options):
    return None
'''


def rulekit(*args, cwd: Path, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=60, env=env)


def test_every_hook_and_adapter_method_has_a_docstring():
    hooks = [f for name, f in vars(hookspecs).items() if name.startswith("rulekit_")]
    assert len(hooks) == 3
    for protocol in (hookspecs.MarketData, hookspecs.Exchange, hookspecs.SignalSource):
        hooks += [m for name, m in vars(protocol).items()
                  if inspect.isfunction(m) and not name.startswith("_")]
    assert all(inspect.getdoc(f) for f in hooks), [f.__name__ for f in hooks if not f.__doc__]


def test_built_in_plugins_are_listed_as_built_in():
    rows = {row["name"]: row for row in loaded_plugins(plugin_manager())}
    for name in DEFAULT_PLUGINS:
        assert rows[name]["origin"] == "built-in" and rows[name]["hooks"]


def test_a_plugin_named_on_the_command_line_is_loaded_and_listed(tmp_path):
    (tmp_path / "my_signals.py").write_text(THIRD_PARTY)
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = rulekit("--plugin", "my_signals", "plugins", "--json", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert rows["my_signals"]["origin"] == "--plugin"
    assert rows["my_signals"]["hooks"] == ["rulekit_signal_source"]


def test_an_installed_plugin_is_found_through_the_entry_point_group(tmp_path, monkeypatch):
    (tmp_path / "acme_rulekit.py").write_text(THIRD_PARTY)
    info = tmp_path / "acme_rulekit-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-rulekit\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text("[rulekit]\nacme = acme_rulekit\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rows = {row["name"]: row for row in loaded_plugins(plugin_manager())}
    assert rows["acme"]["origin"] == "entry point (acme-rulekit 1.2)"
    monkeypatch.setenv("RULEKIT_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert "acme" not in {row["name"] for row in loaded_plugins(plugin_manager())}


def test_a_misspelt_hook_fails_loudly_without_a_traceback(tmp_path):
    (tmp_path / "typo_plugin.py").write_text(textwrap.dedent('''
        from rulekit.hookspecs import hookimpl

        @hookimpl
        def rulekit_market_dat(source, options):
            return None
    '''))
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = rulekit("--plugin", "typo_plugin", "plugins", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "rulekit_market_dat" in result.stderr and "Traceback" not in result.stderr


def test_a_plugin_that_cannot_be_imported_is_a_user_error():
    with pytest.raises(PluginError, match="no_such_plugin"):
        plugin_manager(["no_such_plugin"])
