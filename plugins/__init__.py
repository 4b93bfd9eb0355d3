"""Diagnostic plugins: the hook specifications, the built-in probes, the plugin manager.

Plugins are pluggy plugins of the project ``helloword``. :func:`get_plugin_manager` builds
the one manager the agent uses, in this order (like pytest's)::

    1. the hook specifications of :mod:`plugins.hookspecs`
    2. the built-ins in DEFAULT_PLUGINS
    3. the modules named in $HW_PLUGINS (comma-separated importable module names,
       like ``pytest -p``)
    4. installed distributions' entry points in the group ENTRY_POINT_GROUP,
       unless $HW_DISABLE_PLUGIN_AUTOLOAD is set non-empty or ``autoload=False``

A plugin module writes ``from plugins import hookimpl`` and implements hooks of
:mod:`plugins.hookspecs`; :mod:`plugins.api` has what a probe builds on.
"""

from __future__ import annotations

import importlib
import os

import pluggy

from plugins.api import NotAvailable, PluginError, Probe, ProbeContext

__all__ = [
    "DEFAULT_PLUGINS",
    "DISABLE_AUTOLOAD_ENV",
    "ENTRY_POINT_GROUP",
    "PLUGINS_ENV",
    "PROJECT_NAME",
    "NotAvailable",
    "PluginError",
    "Probe",
    "ProbeContext",
    "get_plugin_manager",
    "hookimpl",
    "hookspec",
]

PROJECT_NAME = "helloword"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
"""Marks a hook specification (only :mod:`plugins.hookspecs` uses it)."""
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Marks a hook implementation in a plugin."""

#: Built-in plugins, registered first and in this order.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "plugins.system",
    "plugins.cpu",
    "plugins.memory",
    "plugins.disk",
    "plugins.network",
    "plugins.power",
    "plugins.thermal",
    "plugins.processes",
    "plugins.services",
    "plugins.smart",
    "plugins.fixers.disk_cleanup",
    "plugins.fixers.process_terminate",
    "plugins.fixers.service_restart",
    "plugins.fixers.dns_flush",
)
#: Entry-point group that installed distributions use to contribute plugins.
ENTRY_POINT_GROUP = "helloword.plugins"
#: Comma-separated importable module names to register after the built-ins.
PLUGINS_ENV = "HW_PLUGINS"
#: Set non-empty to skip loading entry-point plugins.
DISABLE_AUTOLOAD_ENV = "HW_DISABLE_PLUGIN_AUTOLOAD"


def get_plugin_manager(*, autoload: bool | None = None) -> pluggy.PluginManager:
    """Build the plugin manager: hookspecs, built-ins, ``$HW_PLUGINS``, then entry points.

    Args:
        autoload: ``False`` never loads entry-point plugins; ``None`` or ``True`` loads them
            unless ``$HW_DISABLE_PLUGIN_AUTOLOAD`` is set non-empty (the environment flag
            is a kill switch the code cannot override).

    Raises:
        PluginError: a ``$HW_PLUGINS`` module cannot be imported, an entry-point plugin
            fails to load, or a plugin implements a ``hw_*`` hook that has no spec or
            has the wrong arguments. The message says what to fix.
    """
    from plugins import hookspecs  # here, not at the top: hookspecs imports our markers

    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        _register(pm, importlib.import_module(name), name)
    for name in _env_plugin_names():
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise PluginError(
                f"${PLUGINS_ENV} names module {name!r}, which cannot be imported "
                f"({type(exc).__name__}: {exc}); fix the name or make the module importable "
                "(install it, or add its folder to PYTHONPATH)"
            ) from exc
        _register(pm, module, name)
    if autoload is not False and not os.environ.get(DISABLE_AUTOLOAD_ENV):
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except pluggy.PluginValidationError as exc:
            raise _invalid(exc) from exc
        except Exception as exc:
            raise PluginError(
                f"a plugin installed under the entry-point group {ENTRY_POINT_GROUP!r} "
                f"failed to load ({type(exc).__name__}: {exc}); uninstall or fix it, or set "
                f"{DISABLE_AUTOLOAD_ENV}=1 to skip installed plugins"
            ) from exc
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise _invalid(exc) from exc
    return pm


def _env_plugin_names() -> list[str]:
    raw = os.environ.get(PLUGINS_ENV, "")
    return [name.strip() for name in raw.split(",") if name.strip()]


def _register(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    if pm.is_registered(plugin) or pm.has_plugin(name):
        return
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise _invalid(exc) from exc


def _invalid(exc: pluggy.PluginValidationError) -> PluginError:
    return PluginError(
        f"plugin {exc.plugin!r} does not match the hook specifications ({exc}); "
        "see plugins/hookspecs.py for the hooks and their arguments"
    )
