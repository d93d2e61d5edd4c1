"""The subset of ``attrs`` that aiohttp uses, for the static executable (packed as
``aiohttp/_attrs_lite.py``; build/static/build.py points aiohttp's ``import attr`` here).

``import attr`` costs ~18 ms at every start (attrs imports its validators, converters,
setters and builds its own classes with generated code), and each ``@attr.s`` class costs
another ~0.7 ms to build.  aiohttp uses only ``attr.s(auto_attribs=..., frozen=True,
slots=True, repr=...)``, ``attr.ib(type=..., default=...)`` and ``attr.evolve``; this module
gives those the same observable behaviour (keyword or positional construction in field
order, defaults, immutability with ``attr.exceptions.FrozenInstanceError``'s message
("can't set attribute"), field-wise ``==``/``hash``, attrs' repr, ``__slots__``,
``__match_args__``, ``__attrs_attrs__`` names, ``evolve``) without generating code.
"""

from __future__ import annotations

__all__ = ["Attribute", "FrozenInstanceError", "NOTHING", "evolve", "ib", "s"]


class _Nothing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NOTHING"

    def __bool__(self) -> bool:
        return False


NOTHING = _Nothing()


class FrozenInstanceError(AttributeError):
    """A frozen instance was modified (attrs' exception: same name, message and base)."""

    def __init__(self) -> None:
        super().__init__("can't set attribute")


class _CountingIb:
    """``attr.ib()``: a field declared with a default, in declaration order."""

    __slots__ = ("default", "order", "type")
    counter = 0

    def __init__(self, default: object, type: object) -> None:  # noqa: A002 - attrs' name
        self.default = default
        self.type = type
        _CountingIb.counter += 1
        self.order = _CountingIb.counter


def ib(default: object = NOTHING, type: object = None, **unsupported: object) -> object:  # noqa: A002
    if unsupported:
        raise TypeError(f"attrs_lite: attr.ib() does not support {sorted(unsupported)}")
    return _CountingIb(default, type)


class Attribute:
    """What ``__attrs_attrs__`` holds: a field's name and default."""

    __slots__ = ("default", "name")

    def __init__(self, name: str, default: object) -> None:
        self.name = name
        self.default = default

    def __repr__(self) -> str:
        return f"Attribute(name={self.name!r}, default={self.default!r})"


def _frozen_setattr(self: object, name: str, value: object) -> None:
    raise FrozenInstanceError()


def _frozen_delattr(self: object, name: str) -> None:
    raise FrozenInstanceError()


def _build(cls: type, auto_attribs: bool, frozen: bool, slots: bool, repr_: bool) -> type:
    ns = dict(cls.__dict__)
    if auto_attribs:
        names = [n for n in ns.get("__annotations__", {}) if not _is_classvar(ns["__annotations__"][n])]
        defaults = {n: ns[n] for n in names if n in ns}
        for n in names:
            value = defaults.get(n, NOTHING)
            if isinstance(value, _CountingIb):
                defaults[n] = value.default
    else:
        ibs = sorted(((n, v) for n, v in ns.items() if isinstance(v, _CountingIb)), key=lambda nv: nv[1].order)
        names = [n for n, _ in ibs]
        defaults = {n: v.default for n, v in ibs}
    defaults = {n: v for n, v in defaults.items() if v is not NOTHING}
    seen_default = False
    for n in names:
        if n in defaults:
            seen_default = True
        elif seen_default:
            raise ValueError(f"No mandatory attributes allowed after an attribute with a default value or factory.  "
                             f"Attribute in question: {n!r}")
    fields = tuple(names)
    required = frozenset(n for n in names if n not in defaults)
    setter = object.__setattr__

    def __init__(self: object, *args: object, **kwargs: object) -> None:
        if len(args) > len(fields):
            raise TypeError(f"__init__() takes {len(fields) + 1} positional arguments but {len(args) + 1} were given")
        for name, value in zip(fields, args):
            if name in kwargs:
                raise TypeError(f"__init__() got multiple values for argument {name!r}")
            setter(self, name, value)
        for name in fields[len(args):]:
            if name in kwargs:
                setter(self, name, kwargs.pop(name))
            elif name in required:
                raise TypeError(f"__init__() missing 1 required positional argument: {name!r}")
            else:
                setter(self, name, defaults[name])
        if kwargs:
            raise TypeError(f"__init__() got an unexpected keyword argument {next(iter(kwargs))!r}")

    def _values(self: object) -> tuple[object, ...]:
        return tuple(getattr(self, n) for n in fields)

    def __eq__(self: object, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented  # type: ignore[return-value]
        return _values(self) == _values(other)

    def __ne__(self: object, other: object) -> bool:
        result = __eq__(self, other)
        return result if result is NotImplemented else not result

    def __repr__(self: object) -> str:
        inner = ", ".join(f"{n}={getattr(self, n, NOTHING)!r}" for n in fields)
        return f"{self.__class__.__qualname__}({inner})"

    for n in names:
        ns.pop(n, None)
    ns.pop("__dict__", None)
    ns.pop("__weakref__", None)
    ns["__init__"] = __init__
    ns["__eq__"] = __eq__
    ns["__ne__"] = __ne__
    ns["__match_args__"] = fields
    ns["__attrs_attrs__"] = tuple(Attribute(n, defaults.get(n, NOTHING)) for n in names)
    if repr_:
        ns["__repr__"] = __repr__
    if frozen:
        ns["__setattr__"] = _frozen_setattr
        ns["__delattr__"] = _frozen_delattr
        ns["__hash__"] = lambda self: hash((self.__class__, _values(self)))
    else:
        ns["__hash__"] = None  # attrs: eq=True without frozen makes instances unhashable
    if slots:
        inherited = set()
        for base in cls.__mro__[1:]:
            inherited.update(getattr(base, "__slots__", ()))
        ns["__slots__"] = tuple(n for n in names if n not in inherited)
        if "__weakref__" not in inherited and all("__weakref__" not in getattr(b, "__dict__", {}) for b in cls.__mro__[1:]):
            ns["__slots__"] += ("__weakref__",)  # attrs' weakref_slot=True
    new = type(cls)(cls.__name__, cls.__bases__, ns)
    new.__qualname__ = cls.__qualname__
    return new


def _is_classvar(annotation: object) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar", "t.ClassVar"))


def s(maybe_cls: type | None = None, *, auto_attribs: bool = False, frozen: bool = False, slots: bool = False,
      repr: bool = True, **unsupported: object):  # noqa: A002 - attrs' name
    if unsupported:
        raise TypeError(f"attrs_lite: attr.s() does not support {sorted(unsupported)}")

    def wrap(cls: type) -> type:
        return _build(cls, auto_attribs, frozen, slots, repr)

    return wrap if maybe_cls is None else wrap(maybe_cls)


def evolve(inst: object, **changes: object) -> object:
    """A copy of ``inst`` with ``changes`` applied (``attr.evolve``)."""
    cls = inst.__class__
    kwargs = {a.name: getattr(inst, a.name) for a in cls.__attrs_attrs__}  # type: ignore[attr-defined]
    for name in changes:
        if name not in kwargs:
            raise TypeError(f"__init__() got an unexpected keyword argument {name!r}")
    kwargs.update(changes)
    return cls(**kwargs)
