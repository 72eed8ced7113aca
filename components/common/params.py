"""Step parameters, defined once: one frozen dataclass per step whose fields carry the default, a one-line
description, the command-line flag, the pipeline parameter name and the allowed range.

* The CLI builds its options from the dataclass (:func:`add_options`) and the value back
  (:meth:`Params.from_args`); help texts show the defaults.
* KFP components and pipelines take the fields as scalar parameters named ``Spec.pipeline`` (default: the
  field name) and pass them on by keyword; :meth:`Params.from_pipeline` turns those scalars back into
  library values (``"3,2,1"`` -> ``(3, 2, 1)``; the field's ``unset`` value -> ``None``).
  ``tests/common/test_params.py`` checks that every component and pipeline default equals the
  dataclass default, and that each component hands its values on to the library.
* Values are checked when the dataclass is built (ranges, choices, :meth:`Params.check` for rules that
  involve several fields): a bad value is a :class:`CrownsamError` naming the option, wherever it came from.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Self

from crownsam.common.errors import CrownsamError

META = "crownsam"
_NO_UNSET = object()


@dataclasses.dataclass(frozen=True)
class Spec:
    """How one parameter appears outside the library (see the module docstring)."""

    help: str
    flag: str | None = None  # None: --field-name; "": no command-line option; no leading "-": positional
    pipeline: str | None = ""  # "": the field name; None: not a pipeline parameter
    parse: Callable[[str], Any] | None = None  # argparse type; default from the annotation
    metavar: str | None = None
    choices: tuple[Any, ...] | None = None
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    unset: Any = _NO_UNSET  # the pipeline value that stands for None (0, "", ...)
    cli_required: bool = False  # a required command-line option although the field has a default


def param(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    flag: str | None = None,
    pipeline: str | None = "",
    parse: Callable[[str], Any] | None = None,
    metavar: str | None = None,
    choices: Iterable[Any] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    unset: Any = _NO_UNSET,
    cli_required: bool = False,
) -> Any:
    """A dataclass field with its :class:`Spec` (``default`` omitted: a required parameter)."""
    spec = Spec(
        help=help,
        flag=flag,
        pipeline=pipeline,
        parse=parse,
        metavar=metavar,
        choices=tuple(choices) if choices is not None else None,
        ge=ge,
        gt=gt,
        le=le,
        lt=lt,
        unset=unset,
        cli_required=cli_required,
    )
    if isinstance(default, (list, dict, set)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={META: spec})
    return dataclasses.field(default=default, metadata={META: spec})


@dataclasses.dataclass(frozen=True)
class Field:
    """One parameter of a :class:`Params` class: its name, type and :class:`Spec`."""

    name: str
    base: type  # the annotation without "| None"
    optional: bool  # the annotation allows None
    items: type | None  # element type of a tuple annotation
    default: Any  # dataclasses.MISSING when required
    spec: Spec

    @property
    def flag(self) -> str:
        if self.spec.flag is None:
            return "--" + self.name.replace("_", "-")
        return self.spec.flag

    @property
    def pipeline_name(self) -> str | None:
        return self.name if self.spec.pipeline == "" else self.spec.pipeline

    @property
    def label(self) -> str:
        """How messages name the parameter: its flag, else its name."""
        return self.flag or self.name

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    def to_pipeline(self, value: Any) -> Any:
        """The library value as a KFP scalar."""
        if value is None:
            if self.spec.unset is _NO_UNSET:
                raise TypeError(f"{self.name}: None has no pipeline value (give the field an unset value)")
            return self.spec.unset
        if self.base is tuple:
            return ",".join(str(v) for v in value)
        return value

    def from_pipeline(self, value: Any) -> Any:
        """A KFP scalar as the library value."""
        if self.optional and self.spec.unset is not _NO_UNSET and value == self.spec.unset:
            return None
        if self.base is tuple and isinstance(value, str):
            return _parse_tuple(value, self.items or str, self.label)
        return value

    def pipeline_type(self) -> type:
        """The KFP parameter type: str for tuples, the base type otherwise."""
        return str if self.base is tuple else self.base


def _parse_tuple(text: str, item: type, label: str) -> tuple[Any, ...]:
    parts = [t.strip() for t in str(text).split(",") if t.strip()]
    try:
        return tuple(item(p) for p in parts)
    except ValueError as exc:
        raise CrownsamError(
            None, f"{label}: {text!r} must be a comma-separated list of {item.__name__}"
        ) from exc


def _unwrap(annotation: Any) -> tuple[type, bool, type | None]:
    """(base type, optional, tuple item type) of an annotation such as ``int | None``, ``tuple[int, ...]``."""
    optional = False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        optional = len(rest) < len(args)
        annotation = rest[0] if len(rest) == 1 else annotation
        args = typing.get_args(annotation)
    origin = typing.get_origin(annotation) or annotation
    items = None
    if origin is tuple:
        items = args[0] if args else str
    return origin, optional, items


class Params:
    """Base of the step parameter dataclasses (decorate subclasses with ``@dataclass(frozen=True)``)."""

    _fields_cache: ClassVar[dict[type, tuple[Field, ...]]] = {}
    validate_on_init: ClassVar[bool] = True  # False: the owner calls validate() at its entry point

    def __post_init__(self) -> None:
        if self.validate_on_init:
            self.validate()

    def validate(self) -> None:
        """Range and choice checks of every field, then :meth:`check`."""
        for f in self.fields():
            _check_value(f, getattr(self, f.name))
        self.check()

    def check(self) -> None:
        """Rules that involve several fields; override. Raise :class:`CrownsamError` naming the option."""

    # -- introspection -----------------------------------------------------------------------------------

    @classmethod
    def fields(cls) -> tuple[Field, ...]:
        """The parameters of this class with a :class:`Spec`, in definition order."""
        if cls not in Params._fields_cache:
            hints = typing.get_type_hints(cls)
            out = []
            for f in dataclasses.fields(cls):  # type: ignore[arg-type]
                spec = f.metadata.get(META)
                if spec is None:
                    continue
                base, optional, items = _unwrap(hints[f.name])
                default = f.default
                if f.default_factory is not dataclasses.MISSING:
                    default = f.default_factory()
                out.append(Field(f.name, base, optional, items, default, spec))
            Params._fields_cache[cls] = tuple(out)
        return Params._fields_cache[cls]

    @classmethod
    def field(cls, name: str) -> Field:
        for f in cls.fields():
            if f.name == name:
                return f
        raise KeyError(f"{cls.__name__} has no parameter {name!r}")

    @classmethod
    def pipeline_fields(cls) -> tuple[Field, ...]:
        return tuple(f for f in cls.fields() if f.pipeline_name is not None)

    @classmethod
    def pipeline_defaults(cls) -> dict[str, Any]:
        """Pipeline parameter name -> default as a KFP scalar (required parameters left out)."""
        return {f.pipeline_name: f.to_pipeline(f.default) for f in cls.pipeline_fields() if not f.required}  # type: ignore[misc]

    # -- construction ------------------------------------------------------------------------------------

    @classmethod
    def from_args(
        cls,
        args: argparse.Namespace,
        prefix: str = "",
        flags: Mapping[str, str] | None = None,
        **fixed: Any,
    ) -> Self:
        """Build from parsed options added by :func:`add_options` (``prefix`` and ``flags`` as given there,
        so that a bad value is named by the option the user typed); options not given keep the dataclass
        default; ``fixed`` overrides."""
        values = {}
        for f in cls.fields():
            dest = prefix + f.name
            if hasattr(args, dest):
                values[f.name] = getattr(args, dest)
        try:
            return cls(**(values | fixed))
        except CrownsamError as exc:
            problem = exc.problem
            for f in cls.fields():
                if flags and f.name in flags and f.flag:
                    problem = re.sub(rf"(?<![\w-]){re.escape(f.flag)}(?![\w-])", flags[f.name], problem)
            if problem == exc.problem:
                raise
            raise CrownsamError(exc.source, problem) from None

    @classmethod
    def given(cls, args: argparse.Namespace, prefix: str = "") -> dict[str, Any]:
        """The options that were given on the command line (field name -> value)."""
        return {
            f.name: getattr(args, prefix + f.name) for f in cls.fields() if hasattr(args, prefix + f.name)
        }

    @classmethod
    def from_pipeline(cls, **values: Any) -> Self:
        """Build from pipeline scalars keyed by pipeline name (converted to library values); other keys
        must be field names and are taken as they are (paths, tags); missing ones keep the default."""
        by_pipeline = {f.pipeline_name: f for f in cls.pipeline_fields()}
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        out: dict[str, Any] = {}
        for key, value in values.items():
            if key in by_pipeline:
                out[by_pipeline[key].name] = by_pipeline[key].from_pipeline(value)
            elif key in names:
                out[key] = value
            else:
                raise TypeError(f"{cls.__name__} has no pipeline parameter or field {key!r}")
        return cls(**out)

    def to_pipeline(self) -> dict[str, Any]:
        """Pipeline name -> value as a KFP scalar, for every pipeline parameter."""
        return {f.pipeline_name: f.to_pipeline(getattr(self, f.name)) for f in self.pipeline_fields()}  # type: ignore[misc]

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def as_dict(self) -> dict[str, Any]:
        """Plain values (tuples as lists) for summaries and MLflow."""
        return {f.name: _plain(getattr(self, f.name)) for f in self.fields()}


def _plain(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, Params):
        return v.as_dict()
    return v


def _check_value(f: Field, value: Any) -> None:
    """Type, range and choice checks of one value; raises CrownsamError naming the option."""
    if value is None:
        if f.optional:
            return
        raise CrownsamError(None, f"{f.label} needs a value")
    s = f.spec
    if f.base in (int, float) and (s.ge, s.gt, s.le, s.lt) != (None, None, None, None):
        number_ok = isinstance(value, int | float) and not isinstance(value, bool)
        if f.base is int and not isinstance(value, int):
            number_ok = False
        if not number_ok or (isinstance(value, float) and not math.isfinite(value)):
            kind = "an integer" if f.base is int else "a number"
            raise CrownsamError(None, f"{f.label} must be {kind}, got {value!r}")
        lo_ok = (s.ge is None or value >= s.ge) and (s.gt is None or value > s.gt)
        hi_ok = (s.le is None or value <= s.le) and (s.lt is None or value < s.lt)
        if not (lo_ok and hi_ok):
            raise CrownsamError(None, f"{f.label} must be {range_text(s, f.base)}, got {value!r}")
    if s.choices is not None and value not in s.choices:
        raise CrownsamError(None, f"{f.label}: choose one of {', '.join(map(str, s.choices))}, got {value!r}")


def range_text(s: Spec, base: type) -> str:
    """The allowed range in words: ``a positive integer``, ``in [0, 1)``, ``at least 16``."""
    lo = (f"[{s.ge:g}" if s.ge is not None else f"({s.gt:g}") if (s.ge, s.gt) != (None, None) else None
    hi = (f"{s.le:g}]" if s.le is not None else f"{s.lt:g})") if (s.le, s.lt) != (None, None) else None
    if lo and hi:
        return f"in {lo}, {hi}"
    if hi:
        return f"at most {s.le:g}" if s.le is not None else f"less than {s.lt:g}"
    if base is int and (s.ge == 1 or s.gt == 0):
        return "a positive integer"
    if s.gt == 0:
        return "a positive number"
    return f"at least {s.ge:g}" if s.ge is not None else f"greater than {s.gt:g}"


# ------------------------------------------------------------------------------------------------- CLI


def _default_text(f: Field) -> str:
    if f.required or f.default is None or f.base is bool:
        return ""
    shown = f.to_pipeline(f.default) if f.base is tuple else f.default
    return f" (default {shown:g})" if isinstance(shown, float) else f" (default {shown})"


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type[Params],
    *,
    only: Iterable[str] | None = None,
    skip: Iterable[str] = (),
    prefix: str = "",
    flags: Mapping[str, str] | None = None,
) -> None:
    """Add one option per parameter of ``cls`` (those in ``only``, minus ``skip``; ``flags`` renames
    options, e.g. where two classes share a flag in one command). Options that are not given leave no
    attribute: the dataclass default applies in :meth:`Params.from_args`."""
    wanted = set(only) if only is not None else None
    for f in cls.fields():
        if f.spec.flag == "" or f.name in skip or (wanted is not None and f.name not in wanted):
            continue
        if flags and f.name in flags:
            f = dataclasses.replace(f, spec=dataclasses.replace(f.spec, flag=flags[f.name]))
        default = f.default
        kwargs: dict[str, Any] = {"help": f.spec.help + _default_text(f)}
        positional = not f.flag.startswith("-")
        if not positional:
            kwargs["dest"] = prefix + f.name
            kwargs["default"] = argparse.SUPPRESS
        if f.spec.metavar:
            kwargs["metavar"] = f.spec.metavar
        if f.base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction if default else "store_true"
        else:
            kwargs["type"] = f.spec.parse or _parser_for(f)
            if f.spec.choices is not None and f.spec.parse is None:
                kwargs["choices"] = f.spec.choices
            if not positional and (f.required or f.spec.cli_required):
                kwargs["required"] = True
        parser.add_argument(f.flag, **kwargs)


def _parser_for(f: Field) -> Callable[[str], Any]:
    if f.base is tuple:
        item = f.items or str

        def parse(text: str) -> tuple[Any, ...]:
            try:
                return _parse_tuple(text, item, f.label)
            except CrownsamError as exc:
                raise argparse.ArgumentTypeError(exc.problem) from exc

        parse.__name__ = f"{item.__name__} list"
        return parse
    return f.base
