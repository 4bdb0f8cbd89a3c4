"""The accept loop in virtual time: limits and running out of descriptors."""

import errno
import logging

import pytest
import trio
import trio.testing

from trioconn._frontends.trio_wsproto.listener import ACCEPT_PAUSE, REPORT_INTERVAL, SocketGate, accept_loop


class FakeListener:
    """accept() fails with ``errno`` until ``failing`` is cleared, then hands out fake sockets."""

    def __init__(self, error: int) -> None:
        self.error = error
        self.failing = True
        self.attempts = 0
        self.ready = trio.Semaphore(0)

    async def accept(self):
        self.attempts += 1
        await trio.lowlevel.checkpoint()
        if self.failing:
            raise OSError(self.error, "simulated")
        await self.ready.acquire()
        return FakeStream()


class FakeStream:
    async def aclose(self):
        await trio.lowlevel.checkpoint()


@pytest.mark.parametrize("error", [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM])
async def test_running_out_of_a_resource_pauses_accepts_and_logs_one_line_per_interval(
    autojump_clock, caplog, error
):
    caplog.set_level(logging.DEBUG, logger="trioconn")
    listener = FakeListener(error)
    gate = SocketGate(max_handshakes=10, max_sockets=None)
    served = []

    async def serve(stream, handshake_over):
        handshake_over()
        served.append(stream)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_loop, listener, gate, nursery, serve)
        await trio.sleep(60)  # a minute without descriptors
        assert listener.attempts == pytest.approx(60 / ACCEPT_PAUSE, rel=0.05)  # paced, not spinning
        listener.failing = False
        listener.ready.release()
        await trio.sleep(ACCEPT_PAUSE)  # the pause under way ends
        await trio.testing.wait_all_tasks_blocked()
        assert len(served) == 1 and gate.sockets == 1 and gate.handshaking == 0
        nursery.cancel_scope.cancel()
    records = [r for r in caplog.records if r.name == "trioconn"]
    assert 1 <= len(records) <= 60 / REPORT_INTERVAL + 1
    assert all(r.exc_info is None and errno.errorcode[error] in r.getMessage() for r in records)
    assert gate.sockets == 0  # counted closed when its task ended


async def test_other_accept_errors_are_raised_as_themselves(autojump_clock):
    listener = FakeListener(errno.EINVAL)
    with pytest.raises(OSError) as info:
        await accept_loop(listener, SocketGate(1, None), None, None)
    assert info.value.errno == errno.EINVAL


async def test_a_full_gate_stops_accepting_until_a_socket_frees_a_place(autojump_clock, caplog):
    caplog.set_level(logging.WARNING, logger="trioconn")
    listener = FakeListener(0)
    listener.failing = False
    gate = SocketGate(max_handshakes=2, max_sockets=None)
    waiting = []

    async def serve(stream, handshake_over):
        done = trio.Event()
        waiting.append((handshake_over, done))
        await done.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_loop, listener, gate, nursery, serve)
        for _ in range(5):
            listener.ready.release()
        await trio.testing.wait_all_tasks_blocked()
        assert gate.handshaking == 2 and listener.attempts == 2  # the third accept is not even tried
        waiting[0][0]()  # one handshake completes: room for one more
        await trio.testing.wait_all_tasks_blocked()
        assert gate.handshaking == 2 and gate.sockets == 3 and listener.attempts == 3
        nursery.cancel_scope.cancel()
    assert len(caplog.records) <= 2 and "max_handshakes=2" in caplog.records[0].getMessage()
