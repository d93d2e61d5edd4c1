"""hatchway linksocks: a LinkSocks-compatible SOCKS5/HTTP proxy over WebSocket.

The engine embeds in a running asyncio loop::

    from hatchway.linksocks import Client, Server

    async with Server(ws_host="127.0.0.1", ws_port=8765) as server:
        token = server.add_forward_token("secret")
        async with Client(token, url="ws://127.0.0.1:8765", socks_port=1080) as client:
            await client.wait_ready()
"""

from .client import AuthError, Client, ClientOptions
from .server import Server, ServerOptions

__all__ = ["AuthError", "Client", "ClientOptions", "Server", "ServerOptions"]
