"""Bench helper: run the PyPI ``linksocks`` CLI (1.10.x wheel) with its broken ``server`` fixed.

Run with the peer venv's interpreter::

    .venv-peer110/bin/python bench/linksocks_peer_launcher.py server|client|provider|connector|version ...

linksocks 1.10.1 and 1.10.3 crash in ``linksocks server`` with
``'_FFIServerOption' object has no attribute 'WithDirectEnable'``: the Python
option wrapper lacks four setters that the CLI calls (linksocks.md 23.3).  Each
missing setter is attached here, only if the class lacks it, and stores its
converted value in the option object's ``_cfg`` dictionary under
``_json_key(<key>)``, which the Go FFI layer already understands.  Then the
unchanged click CLI runs with ``sys.argv``.  Every other sub-command passes
through untouched.  Not product code.
"""

import sys

import linksocks._base as _base

_MISSING = (
    ("WithDirectEnable", "direct_enable", bool),
    ("WithDirectRendezvousUDP", "direct_rendezvous_udp", bool),
    ("WithDirectRendezvousHost", "direct_rendezvous_host", str),
    ("WithDirectRendezvousPort", "direct_rendezvous_port", int),
)


def _make_setter(key, convert):
    def setter(self, value):
        self._cfg[_base._json_key(key)] = convert(value)

    setter.__name__ = "With" + key.title().replace("_", "")
    return setter


def patch():
    cls = _base._FFIServerOption
    for name, key, convert in _MISSING:
        if not hasattr(cls, name):
            setattr(cls, name, _make_setter(key, convert))


def main():
    patch()
    from linksocks._cli import cli

    sys.argv[0] = "linksocks"
    return cli()


if __name__ == "__main__":
    sys.exit(main())
