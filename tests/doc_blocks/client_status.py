"""docs/client.md, "Controls for a status display": the loop, watching a client whose link drops."""

import trio
import trio.testing

import trioconn
from trioconn.testing import open_memory_link

shown = []


def show(text):
    shown.append(text)


async def main():
    hub = trioconn.Hub(heartbeat_interval=1, heartbeat_timeout=3)
    async with open_memory_link(hub.serve_stream) as link:
        backoff = trioconn.Backoff(base=4, cap=4)
        async with trioconn.connect("ws://app.invalid/", transport=link.transport, backoff=backoff) as client:
            await client.wait_state(trioconn.ClientState.OPEN)
            async with trio.open_nursery() as nursery:

                async def status():
                    pass  # doc-block

                nursery.start_soon(status)
                link.drop_for(60)  # the link goes, and new connections fail for a minute
                await client.wait_state(trioconn.ClientState.RECONNECTING)
                await trio.testing.wait_all_tasks_blocked()
                client.pause()
                await trio.testing.wait_all_tasks_blocked()
                nursery.cancel_scope.cancel()
    assert any(text.startswith("reconnecting in ") for text in shown), shown
    assert shown[-1] == "offline (paused)", shown


trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
