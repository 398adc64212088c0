"""Load plugins: the built-in adapters, installed ones (entry-point group ``rulekit``) and --plugin."""
from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Mapping
from typing import Any

import pluggy

from rulekit import hookspecs
from rulekit.errors import RulekitError

DEFAULT_PLUGINS = ("plugins.candle_files", "plugins.paper_exchange", "plugins.ccxt_exchange",
                   "plugins.reference_signals")
AUTOLOAD_SWITCH = "RULEKIT_DISABLE_PLUGIN_AUTOLOAD"


class PluginError(RulekitError):
    """A plugin that cannot be loaded, or a source no plugin serves."""


def plugin_manager(extra: Iterable[str] = ()) -> pluggy.PluginManager:
    """A manager with the built-ins, installed plugins (unless switched off) and ``extra`` modules."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    for name in (*DEFAULT_PLUGINS, *extra):
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise PluginError(f"cannot import plugin {name!r}: {exc}") from None
        if manager.is_registered(module):
            continue
        manager.register(module, name=name)
    if not os.environ.get(AUTOLOAD_SWITCH):
        manager.load_setuptools_entrypoints(hookspecs.PROJECT)
    try:
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(str(exc)) from None
    return manager


def loaded_plugins(manager: pluggy.PluginManager) -> list[dict[str, Any]]:
    """Name, origin (built-in, entry point or --plugin), file and hooks of every loaded plugin."""
    distributions = {id(plugin): dist for plugin, dist in manager.list_plugin_distinfo()}
    rows = []
    for name, plugin in manager.list_name_plugin():
        if plugin is None:
            continue
        dist = distributions.get(id(plugin))
        origin = ("built-in" if name in DEFAULT_PLUGINS else
                  f"entry point ({dist.project_name} {dist.version})" if dist else "--plugin")
        hooks = sorted(caller.name for caller in manager.get_hookcallers(plugin) or ())
        rows.append({"name": name, "origin": origin, "hooks": hooks,
                     "file": getattr(plugin, "__file__", None)})
    return rows


def _open(manager: pluggy.PluginManager, hook: str, what: str, name: str,
          options: Mapping[str, Any] | None) -> Any:
    """Ask the plugins behind ``hook`` for ``name``; the first answer serves, none is an error."""
    key = "source" if hook == "rulekit_market_data" else "name"
    found = getattr(manager.hook, hook)(**{key: name, "options": dict(options or {})})
    if found is None:
        raise PluginError(f"no plugin serves {what} {name!r} (see `rulekit plugins`)")
    return found


def open_market_data(manager: pluggy.PluginManager, source: str,
                     options: Mapping[str, Any] | None = None):
    return _open(manager, "rulekit_market_data", "market data", source, options)


def open_exchange(manager: pluggy.PluginManager, name: str,
                  options: Mapping[str, Any] | None = None):
    return _open(manager, "rulekit_exchange", "exchange", name, options)


def open_signal_source(manager: pluggy.PluginManager, name: str,
                       options: Mapping[str, Any] | None = None):
    return _open(manager, "rulekit_signal_source", "signal source", name, options)
