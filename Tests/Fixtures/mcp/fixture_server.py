"""A small MCP server for Troupe's tests, on the `mcp` package's high-level server (2.x).

    python fixture_server.py stdio
    python fixture_server.py http PORT_FILE   # serves POST /mcp on 127.0.0.1, writes its port

Tools: echo, add, fail (an error result), crash (the process exits mid-call), slow (writes a
marker file, then sleeps: the tests kill or time out the server while it waits), environment,
read_text (a file's text), picture (an image result) and wordy (a 5,000-character description).
"""

import os
import socket
import sys
import time

from mcp.server.mcpserver import Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer(name="fixture", log_level="WARNING")


@server.tool()
def echo(text: str) -> str:
    """Returns the text it is given."""
    return text


@server.tool(name="math.add")
def add(a: int, b: int) -> int:
    """Adds two whole numbers (its name has a dot, which model APIs do not allow)."""
    return a + b


@server.tool()
def fail(reason: str) -> str:
    """Always fails with the reason (a ToolError: its message reaches the client)."""
    raise ToolError(reason)


@server.tool()
def crash() -> str:
    """Ends the server process in the middle of the call."""
    os._exit(3)


@server.tool()
def slow(seconds: float, marker: str) -> str:
    """Writes the marker file, then waits `seconds` before answering."""
    with open(marker, "w") as file:
        file.write(str(os.getpid()))
    time.sleep(seconds)
    return f"waited {seconds} s"


@server.tool()
def environment(name: str) -> str:
    """The value of an environment variable in the server's process, or '(unset)'."""
    return os.environ.get(name, "(unset)")


@server.tool()
def read_text(path: str) -> str:
    """The text of a file (the sandbox tests aim it at files the server must not see)."""
    with open(path) as file:
        return file.read()


@server.tool()
def picture() -> Image:
    """A small PNG image."""
    return Image(data=b"\x89PNG\r\n\x1a\n" + bytes(92), format="png")


@server.tool(description="A tool whose description goes on and on. " + "blah " * 1000)
def wordy() -> str:
    return "said"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "http":
        port = free_port()
        with open(sys.argv[2] + ".tmp", "w") as file:
            file.write(str(port))
        os.rename(sys.argv[2] + ".tmp", sys.argv[2])
        server.run(transport="streamable-http", host="127.0.0.1", port=port)
    else:
        server.run(transport="stdio")
