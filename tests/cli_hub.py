"""A hub process for the command-line client tests: ``python -m tests.cli_hub [PORT] [--refuse-with close]``.

Serves a Hub on 127.0.0.1 (PORT, default 0: a free one), prints the bound port on one line, then
takes commands on standard input, one per line, and answers each on standard output:

- ``publish TOPIC JSON`` / ``state TOPIC JSON`` → ``offset N``
- ``end TOPIC`` → ``ended N``
- ``kick CODE`` → ``kicked K``: closes every connection with CODE (the clients reconnect for 4001)

It stops (closing its connections with 1001) when standard input closes.

Credentials: no token is a reader, ``writer`` may publish too, ``banned`` is refused with 403 and
any other token with 401 (or, with ``--refuse-with close``, closed with 4403/4401). Topics
starting with ``secret/`` cannot be subscribed to.
"""

import json
import sys

import trio

from trioconn import HandshakeRejected, Hub


def authenticate(request):
    if request.token is None:
        return "reader"
    if request.token == "writer":
        return "writer"
    if request.token == "banned":
        raise HandshakeRejected(403, b"banned")
    return None


def authorize(identity, topic, action):
    if action == "publish":
        return identity == "writer"
    return not topic.startswith("secret/")


async def main(port: int, refuse_with: str) -> None:
    hub = Hub(authenticate=authenticate, authorize=authorize, refuse_with=refuse_with)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(hub.serve, "127.0.0.1", port)
        print(port, flush=True)
        stdin = trio.wrap_file(sys.stdin)
        async for line in stdin:
            command, _, rest = line.strip().partition(" ")
            if command == "publish":
                topic, _, data = rest.partition(" ")
                print("offset", await hub.publish(topic, json.loads(data)), flush=True)
            elif command == "state":
                topic, _, data = rest.partition(" ")
                print("offset", await hub.set_state(topic, json.loads(data)), flush=True)
            elif command == "end":
                print("ended", await hub.end(rest), flush=True)
            elif command == "kick":
                sessions = hub.sessions()
                for session in sessions:
                    hub.close(session, int(rest), "kicked by the test")
                print("kicked", len(sessions), flush=True)
        await hub.aclose()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    args = sys.argv[1:]
    refuse = "http"
    if "--refuse-with" in args:
        at = args.index("--refuse-with")
        refuse = args[at + 1]
        del args[at : at + 2]
    trio.run(main, int(args[0]) if args else 0, refuse)
