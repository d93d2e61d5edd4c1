"""Test helper: run the PyPI ``linksocks`` CLI with its broken ``server`` command fixed.

Run with a peer venv's interpreter: ``python peer_launcher.py server|client|provider|connector|version ...``.
linksocks 1.10.x's ``_FFIServerOption`` lacks four setters the CLI calls
(spec 23.3); they are added here only when missing, then the unchanged click
CLI runs with ``sys.argv`` as given. Not product code.
"""

import sys

import linksocks._base as base

_MISSING = (
    ("WithDirectEnable", "direct_enable", bool),
    ("WithDirectRendezvousUDP", "direct_rendezvous_udp", bool),
    ("WithDirectRendezvousHost", "direct_rendezvous_host", str),
    ("WithDirectRendezvousPort", "direct_rendezvous_port", int),
)


def _setter(key, convert):
    def set_option(self, value):
        self._cfg[base._json_key(key)] = convert(value)

    return set_option


for _name, _key, _convert in _MISSING:
    if not hasattr(base._FFIServerOption, _name):
        setattr(base._FFIServerOption, _name, _setter(_key, _convert))

if __name__ == "__main__":
    from linksocks._cli import cli

    sys.argv[0] = "linksocks"
    sys.exit(cli())
