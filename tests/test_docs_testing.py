"""The example from docs/testing.md, kept here so that it is known to work.

"My app shows the reconnecting banner when the link stalls, and recovers without losing
progress." The app is a small progress view: a banner driven by the client's state changes and a
percentage driven by a state topic.
"""

import trio
import trio.testing

import trioconn
from trioconn.testing import open_memory_link


class ProgressView:
    """The app under test: what a status bar would show."""

    def __init__(self) -> None:
        self.banner = ""
        self.percent = 0
        self.done = False

    async def run(self, client: trioconn.Client, job: str) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_link, client)
            async with client.subscribe(job) as updates:
                async for item in updates:
                    if isinstance(item, trioconn.SnapshotItem):
                        self.percent = item.value
                    elif isinstance(item, trioconn.EventItem):
                        self.percent = item.data
            self.done = True
            nursery.cancel_scope.cancel()

    async def _watch_link(self, client: trioconn.Client) -> None:
        async for change in client.state_changes():
            self.banner = "reconnecting…" if change.state is trioconn.ClientState.RECONNECTING else ""


async def test_banner_shows_while_the_link_is_stalled_and_progress_resumes(autojump_clock):
    hub = trioconn.Hub(heartbeat_interval=5, heartbeat_timeout=15)
    view = ProgressView()
    async with open_memory_link(hub.serve_stream) as link, trio.open_nursery() as nursery:
        client = await nursery.start(connected, link)
        nursery.start_soon(view.run, client, "job/7")
        for percent in range(0, 50, 10):
            await hub.set_state("job/7", percent)
            await trio.sleep(1)
        assert view.percent == 40 and view.banner == ""

        link.stall()  # the half-dead link: sockets open, nothing gets through
        for percent in range(50, 80, 10):  # the job goes on meanwhile
            await hub.set_state("job/7", percent)
            await trio.sleep(10)
        assert view.banner == "reconnecting…"  # noticed within timeout + interval
        assert view.percent == 40

        link.pass_through()
        await client.wait_state(trioconn.ClientState.OPEN)
        await trio.testing.wait_all_tasks_blocked()
        assert view.banner == "" and view.percent == 70  # caught up from the snapshot

        await hub.set_state("job/7", 100)
        await hub.end("job/7")
        await trio.testing.wait_all_tasks_blocked()
        assert view.done and view.percent == 100
        nursery.cancel_scope.cancel()


async def connected(link, task_status):
    async with trioconn.connect("ws://app.invalid/", transport=link.transport) as client:
        task_status.started(client)
        await trio.sleep_forever()
