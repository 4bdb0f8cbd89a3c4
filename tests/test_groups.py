"""No ExceptionGroup of trioconn's own crosses the public API."""

import errno

import pytest
import trio

from trioconn import Hub
from trioconn._server.groups import unwrap_group
from trioconn.testing import open_fault_proxy, open_memory_link


class Mine(Exception):
    pass


def several() -> ExceptionGroup:
    return ExceptionGroup("the user's own", [Mine("a"), Mine("b")])


def same(got: BaseException, raised: BaseException) -> bool:
    """``raised`` itself; for a group, the same group (a trio nursery re-derives group objects)."""
    if isinstance(raised, BaseExceptionGroup):
        return (
            type(got) is type(raised)
            and got.message == raised.message
            and got.exceptions == raised.exceptions  # the very same leaf exceptions
        )
    return got is raised


# -- the helper ------------------------------------------------------------------------------------------


async def test_one_exception_comes_out_as_itself_with_its_own_context():
    cause = ValueError("cause")
    with pytest.raises(Mine) as info, unwrap_group():
        async with trio.open_nursery():
            try:
                raise cause
            except ValueError:
                raise Mine("x") from None
    assert info.value.__context__ is cause and info.value.__suppress_context__


async def test_a_group_the_block_raised_comes_out_unchanged():
    group = several()
    with pytest.raises(ExceptionGroup) as info, unwrap_group():
        async with trio.open_nursery():
            raise group
    assert same(info.value, group)


async def test_several_failures_at_once_stay_a_group():
    async def fail(message):
        raise Mine(message)

    with pytest.raises(ExceptionGroup) as info, unwrap_group():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fail, "one")
            nursery.start_soon(fail, "two")  # runs in the same batch: fails before any checkpoint
    assert sorted(str(e) for e in info.value.exceptions) == ["one", "two"]


async def test_cancellation_still_works_through_it():
    with trio.move_on_after(0) as scope, unwrap_group():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            await trio.sleep_forever()
    assert scope.cancelled_caught


# -- the public API ----------------------------------------------------------------------------------------


async def test_serve_on_a_busy_port_raises_a_plain_oserror():
    hub = Hub()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(hub.serve, "127.0.0.1", 0)
        with pytest.raises(OSError) as info:
            await Hub().serve("127.0.0.1", port)
        assert info.value.errno == errno.EADDRINUSE
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("raised", [Mine("one"), several()], ids=["one", "group-of-several"])
async def test_running_passes_the_callers_exception_through_unchanged(raised):
    with pytest.raises(BaseException) as info:
        async with Hub().running():
            raise raised
    assert same(info.value, raised)


@pytest.mark.parametrize("raised", [Mine("one"), several()], ids=["one", "group-of-several"])
async def test_testing_helpers_pass_the_callers_exception_through_unchanged(raised):
    with pytest.raises(BaseException) as info:
        async with open_memory_link(Hub().serve_stream):
            raise raised
    assert same(info.value, raised)
    with pytest.raises(BaseException) as info:
        async with open_fault_proxy("127.0.0.1", 9):
            raise raised
    assert same(info.value, raised)
