"""Filters by name: the built-ins, entry points (group ``datacurate.filters``), ``module:function`` paths.

A user adds a filter without touching this project in one of two ways:

* an entry point in their package's metadata::

      [project.entry-points."datacurate.filters"]
      my_filter = "my_pkg.filters:MyFilter"

* a path in the recipe: ``{filter: "my_pkg.filters:MyFilter", ...}``.

The target is a ``Filter`` subclass, or a plain function ``fn(batch, **params) ->
mask|score`` (wrapped by ``function_filter``; declare what it reads with the
``filter_function`` decorator, else it gets every metadata column).
"""
from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import Callable

from .api import Batch, Filter, Needs, Param, RecipeError

ENTRY_POINT_GROUP = "datacurate.filters"
_REGISTRY: dict[str, type[Filter]] = {}
_LOADED = False
_LOADING = False
_LOAD_LOCK = threading.RLock()


def register(cls: type[Filter]) -> type[Filter]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__}: a filter needs a name")
    if cls.output not in ("mask", "score"):
        raise ValueError(f"{cls.__name__}: output must be 'mask' or 'score'")
    _REGISTRY[cls.name] = cls
    return cls


def filter_function(name: str | None = None, columns: list[str] | None = None,
                    embeddings: list[str] | None = None, pixels: bool = False, output: str = "mask",
                    params: tuple[Param, ...] = ()) -> Callable:
    """Decorator turning ``fn(batch, **params)`` into a Filter class (not registered by itself)."""

    def wrap(fn: Callable) -> type[Filter]:
        return function_filter(fn, name=name or fn.__name__, columns=columns, embeddings=embeddings,
                               pixels=pixels, output=output, params=params)

    return wrap


def function_filter(fn: Callable, name: str, columns: list[str] | None = None,
                    embeddings: list[str] | None = None, pixels: bool = False, output: str = "mask",
                    params: tuple[Param, ...] | None = None) -> type[Filter]:
    """A Filter class calling ``fn(batch, **params)``; with ``params=None`` any field is passed through."""
    declared = params

    class FunctionFilter(Filter):
        __doc__ = (fn.__doc__ or f"user filter {name}").strip()

        def __init__(self, **kwargs):
            if declared is None:
                where = kwargs.pop("_where", f"filter {name!r}")
                self.kwargs = kwargs
                self.where = where
            else:
                super().__init__(**kwargs)
                self.kwargs = self.param_values()

        def needs(self) -> Needs:
            return Needs(list(columns) if columns is not None else ["*"], list(embeddings or []), pixels)

        def __call__(self, batch: Batch):
            return fn(batch, **self.kwargs)

        def param_values(self) -> dict:
            if declared is None:
                return dict(getattr(self, "kwargs", {}))
            return Filter.param_values(self)

    FunctionFilter.name = name
    FunctionFilter.output = output
    FunctionFilter.params = tuple(declared or ())
    FunctionFilter.__name__ = FunctionFilter.__qualname__ = f"{name}_filter"
    FunctionFilter.source = f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__name__', '?')}"
    return FunctionFilter


def _load_builtins() -> None:
    """Register the built-in filters and the entry points, once. Under a lock, and marked done only
    when done: `datacurate run` loads two recipes at once in two threads, and the second must not
    find a half-filled registry ("unknown filter 'no_filter'")."""
    global _LOADED, _LOADING
    if _LOADED:
        return
    with _LOAD_LOCK:                 # re-entrant: a built-in module that looks a filter up while it loads
        if _LOADED or _LOADING:      # (same thread) gets what is registered so far, as before
            return
        _LOADING = True
        try:
            _register_builtins()
            _LOADED = True
        finally:
            _LOADING = False


def _register_builtins() -> None:
    from . import builtin  # noqa: F401  (modules register themselves)

    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            target = ep.load()
        except Exception as e:  # a broken plug-in must not hide the built-ins
            import sys

            print(f"datacurate: warning: entry point {ep.name} = {ep.value} failed to load: {e}", file=sys.stderr)
            continue
        _REGISTRY.setdefault(ep.name, _as_filter_class(target, ep.name, f"entry point {ep.value}"))


def _as_filter_class(target, name: str, where: str) -> type[Filter]:
    if isinstance(target, type) and issubclass(target, Filter):
        if not target.name:
            target.name = name
        return target
    if callable(target):
        return function_filter(target, name=name)
    raise RecipeError(f"{where}: {target!r} is neither a Filter subclass nor a function")


def _import_user_module(mod_name: str, search: list):
    """Import ``mod_name`` from the import path, else from ``search`` (the current directory and
    the recipe's folder, where a user keeps ``myfilters.py``); the folder it is found in stays on
    ``sys.path`` so the filter can be unpickled again later in this process."""
    import sys

    try:
        return importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        top = mod_name.split(".")[0]
        if e.name != top:
            raise
        for d in search:
            d = str(Path(d).resolve())
            if (Path(d) / f"{top}.py").is_file() or (Path(d) / top / "__init__.py").is_file():
                if d not in sys.path:
                    sys.path.insert(0, d)
                return importlib.import_module(mod_name)
        raise


def load_path(path: str, where: str = "", search: list | None = None) -> type[Filter]:
    """``package.module:attr`` -> a Filter class; the module may sit in a ``search`` folder."""
    mod_name, _, attr = path.partition(":")
    prefix = f"{where}: " if where else ""
    if not mod_name or not attr:
        raise RecipeError(f"{prefix}filter path {path!r} must look like 'package.module:function'")
    dirs = [Path.cwd(), *(search or [])]
    try:
        mod = _import_user_module(mod_name, dirs)
    except ImportError as e:
        looked = ", ".join(dict.fromkeys(str(Path(d).resolve()) for d in dirs))
        raise RecipeError(f"{prefix}cannot import module {mod_name!r} for filter {path!r} ({e}); looked on the "
                          f"import path and in {looked}") from None
    except Exception as e:  # the user's module itself fails: a syntax error, a raise at import time
        import traceback

        tb = traceback.extract_tb(e.__traceback__)
        at = next((f"{f.filename}:{f.lineno}" for f in reversed(tb) if mod_name.split(".")[0] in f.filename), "")
        if isinstance(e, SyntaxError) and e.filename:
            at = f"{e.filename}:{e.lineno}"
        raise RecipeError(f"{prefix}module {mod_name!r} for filter {path!r} fails to import"
                          f"{' at ' + at if at else ''}: {type(e).__name__}: {e}; fix the module") from None
    try:
        target = getattr(mod, attr)
    except AttributeError:
        raise RecipeError(f"{prefix}module {mod_name!r} has no attribute {attr!r}") from None
    return _as_filter_class(target, attr, f"{prefix}{path}")


def get_filter(name: str, where: str = "", search: list | None = None) -> type[Filter]:
    """The filter class registered as ``name`` or found at a ``module:function`` path."""
    _load_builtins()
    if ":" in name:
        return load_path(name, where, search)
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        prefix = f"{where}: " if where else ""
        raise RecipeError(f"{prefix}unknown filter {name!r}{hint} (`datacurate filter --list` shows them all)")
    return _REGISTRY[name]


def list_filters() -> dict[str, type[Filter]]:
    _load_builtins()
    return dict(sorted(_REGISTRY.items()))


def make_filter(name: str, where: str = "", **params) -> Filter:
    return get_filter(name, where)(_where=where or f"filter {name!r}", **params)
