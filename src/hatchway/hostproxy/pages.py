"""The HTML pages the callback listeners show in the host browser (dark, terminal-themed)."""

from __future__ import annotations

from aiohttp import web

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{background:#0d1117;color:#c9d1d9;font-family:ui-monospace,Menlo,monospace;
display:flex;align-items:center;justify-content:center;height:100vh;margin:0}}
.box{{border:1px solid #30363d;padding:2em 3em;border-radius:6px}} h1{{color:{colour};font-size:1.2em}}</style>
</head><body><div class="box"><h1>$ {title}</h1><p>{text}</p></div></body></html>
"""


def success_page() -> web.Response:
    return web.Response(
        text=_PAGE.format(title="Authentication Complete", colour="#3fb950",
                          text="You can close this window and return to your terminal."),
        content_type="text/html", charset="utf-8", status=200,
    )


def error_page() -> web.Response:
    return web.Response(
        text=_PAGE.format(title="Authentication Error", colour="#f85149",
                          text="The callback could not be delivered. Please try again."),
        content_type="text/html", charset="utf-8", status=500,
    )
