"""The application registry: every package under ``pipelines/apps/`` that defines ``APP``
(an :class:`~pipelines.apps.base.App`) is found by discovery, so there is no central list
to edit (fairseq's ``register_task``, without the decorator: the package is the unit).

A recipe names its application with ``app:``; without it, its
``model.kind/input/decoder`` select the application that declares that shape (every
recipe written before applications had names). ``app:`` may also be an importable module
path (``mypkg.my_app``) whose ``APP`` is then registered under that path: an
application kept outside this package (a plugin; the tests define one this way).

Discovery imports each package's ``app`` module (which defines ``APP``) at first use
(``importlib``), never at import time: this module depends on no application. The
packages' ``__init__.py`` import nothing, so a Ray Data worker that unpickles a data
module's function (``pipelines.apps.<name>.data``) loads neither torch nor the model:
measured, importing torch is ~1.5 s of CPU per worker process.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from typing import Any

from pipelines.apps.base import App
from pipelines.errors import ConfigError, DataError

_APPS: dict[str, App] = {}
_discovered = False


def register(app: App, *, name: str | None = None) -> App:
    """Add ``app`` under ``name`` (default ``app.name``); a second, different application
    under a taken name is refused."""
    key = name or app.name
    if not key:
        raise ConfigError(f"{type(app).__name__}: an application needs a name")
    taken = _APPS.get(key)
    if taken is not None and type(taken) is not type(app):
        raise ConfigError(f"application name {key!r} is taken by {type(taken).__name__}")
    _APPS[key] = app
    return app


def discover() -> dict[str, App]:
    """Every application: the packages of ``pipelines/apps/`` and those registered since."""
    global _discovered
    if not _discovered:
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
            if info.ispkg and importlib.util.find_spec(f"{__name__}.{info.name}.app") is not None:
                app = getattr(importlib.import_module(f"{__name__}.{info.name}.app"), "APP", None)
                if isinstance(app, App):
                    register(app)
        _discovered = True
    return dict(_APPS)


def app_named(name: str) -> App:
    """The application called ``name``, or defined by the module ``name`` (its ``APP``)."""
    known = discover()
    if name in known:
        return known[name]
    if "." in name:
        try:
            module = importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(f"app: cannot import application module {name!r} ({err})") from None
        app = getattr(module, "APP", None)
        if not isinstance(app, App):
            raise ConfigError(f"app: module {name!r} defines no APP (an pipelines.apps.base.App)")
        return register(app, name=name)
    raise ConfigError(f"app: unknown application {name!r}; known: {', '.join(sorted(known))}")


def shape(kind: str, source: str, decoder: str) -> tuple[str, str, str]:
    """The registry key of a model shape: the decoder counts for seq2seq only."""
    return kind, source, decoder if kind == "seq2seq" else ""


def _by_shape() -> dict[tuple[str, str, str], App]:
    table: dict[tuple[str, str, str], App] = {}
    for app in discover().values():
        for variant in (app, *app.variants):
            for key in variant.shapes:
                table.setdefault(key, variant)
    return table


def _known_shapes(table: dict[tuple[str, str, str], Any]) -> str:
    return ", ".join("/".join(filter(None, key)) for key in table)


def app_for(recipe) -> App:
    """The application a recipe trains: its ``app``, else the one answering its model shape."""
    model = recipe.model
    key = shape(model.kind, model.input, model.decoder)
    if recipe.app:
        app = app_named(recipe.app).variant(key)
        if app.shapes and key not in app.shapes:
            wanted = " or ".join("/".join(filter(None, k)) for v in (app, *app.variants) for k in v.shapes)
            raise ConfigError(f"app {recipe.app!r} trains model kind/input/decoder {wanted}; the recipe's model is "
                              f"{'/'.join(filter(None, key))} (set model.kind, model.input, model.decoder)")
        return app
    table = _by_shape()
    if key not in table:
        raise ConfigError(f"model kind/input/decoder {'/'.join(filter(None, key))} is not supported; "
                          f"known: {_known_shapes(table)}")
    return table[key]


def check_recipe(recipe) -> App:
    """The recipe's application, after the checks of the registry (a data format no
    application reads) and of the application itself; ConfigError names the key."""
    app = app_for(recipe)
    known = ("auto", *data_formats())
    for key in ("format", "valid_format"):
        fmt = getattr(recipe.data, key)
        if fmt and fmt not in known:
            raise ConfigError(f"data.{key}: {fmt!r} is not one of {known}")
    app.check_recipe(recipe)
    return app


def app_of_meta(path, meta: dict[str, Any]) -> App:
    """The application a checkpoint's ``meta.json`` names: its ``app``, else its kind,
    input and decoder (checkpoints from before audio have neither: text, attention)."""
    key = shape(meta.get("kind"), meta.get("input", "text"), meta.get("decoder", "attention"))
    if meta.get("app"):
        try:
            return app_named(str(meta["app"])).variant(key)
        except ConfigError as err:
            raise DataError(f"{path}/meta.json: {err}") from None
    table = _by_shape()
    if key not in table:
        raise DataError(f"{path}/meta.json: kind/input/decoder must be one of {_known_shapes(table)}, "
                        f"got {'/'.join(map(str, key))}")
    return table[key]


def generators() -> dict[str, Any]:
    """Every built-in dataset generator by name (``rayseq generate``, ``data.generate``)."""
    found = {}
    for app in discover().values():
        for generator in app.generators:
            found.setdefault(generator.name, generator)
    return found


def data_formats() -> tuple[str, ...]:
    """Every ``data.format`` some application reads, besides ``auto``."""
    return tuple(dict.fromkeys(fmt for app in discover().values() for fmt in app.formats))
