# ruff: noqa  -- a probe written in the style of the aiohttp code it imitates (Optional, attr.ib)
"""Exercises attr.s / attr.ib / attr.evolve as aiohttp uses them and prints what it saw: run with the real
attrs (no argument) and with build/static/attrs_lite.py (its path as argument), the output must match."""
import sys, importlib.util
spec = importlib.util.spec_from_file_location("attr", sys.argv[1]) if len(sys.argv) > 1 else None
if spec:
    attr = importlib.util.module_from_spec(spec); spec.loader.exec_module(attr)
else:
    import attr
from typing import Optional
import abc
@attr.s(auto_attribs=True, frozen=True, slots=True)
class T:
    total: Optional[float] = None
    connect: Optional[float] = None
@attr.s(frozen=True, slots=True)
class W:
    ws_receive = attr.ib(type=Optional[float], default=None)
    ws_close = attr.ib(type=Optional[float], default=None)
class Base(abc.ABC):
    @abc.abstractmethod
    def f(self): ...
@attr.s(auto_attribs=True, frozen=True, repr=False, slots=True)
class R(Base):
    method: str
    path: str
    kwargs: dict = None
    def f(self): return 1
    def __repr__(self): return "<R>"
out = []
t = T(5, connect=2); out.append(repr(t)); out.append(t == T(5, 2)); out.append(hash(t) == hash(T(5, 2))); out.append(t != T())
try: t.total = 3
except AttributeError as e: out.append((type(e).__name__, str(e)))
out.append(repr(attr.evolve(t, total=1)))
try: attr.evolve(t, nope=1)
except TypeError as e: out.append("evolve-typeerror")
w = W(ws_close=3); out.append(repr(w)); out.append(W.__slots__ if hasattr(W,'__slots__') else None)
r = R("GET", "/"); out.append(repr(r)); out.append(r.kwargs); out.append(r.f())
try: R()
except TypeError: out.append("missing-typeerror")
try: T(1, 2, 3)
except TypeError: out.append("toomany-typeerror")
try: T(1, total=2)
except TypeError: out.append("dup-typeerror")
out.append(T.__match_args__); out.append([a.name for a in T.__attrs_attrs__])
import weakref; weakref.ref(t); out.append("weakref-ok")
print(out)
