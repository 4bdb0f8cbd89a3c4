"""The pytest plugin (entry point ``pytest11``): its fixtures used as a user's test suite would.

Each test writes a user's test module into a fresh directory and runs pytest on it (pytester):
the plugin is found through the installed entry point, as in any project that installs trioconn.
"""

from __future__ import annotations

import textwrap

pytest_plugins = ["pytester"]

TRIO_MODE = """
[pytest]
trio_mode = true
filterwarnings = error
"""


def run_user_tests(pytester, source: str, ini: str = TRIO_MODE, *args: str):
    pytester.makeini(ini)
    pytester.makepyfile(test_user=textwrap.dedent(source))
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def test_the_plugin_is_registered_through_its_entry_point(pytester):
    result = run_user_tests(pytester, "def test_nothing(): pass\n", TRIO_MODE, "--fixtures")
    result.stdout.fnmatch_lines(
        [
            "*trioconn_hub_settings -- *pytest_plugin.py*",
            "*trioconn_hub -- *pytest_plugin.py*",
            "*trioconn_memory -- *pytest_plugin.py*",
            "*trioconn_fault_proxy -- *pytest_plugin.py*",
        ]
    )


def test_trioconn_hub_serves_on_loopback_in_real_time_and_is_closed_after_the_test(pytester):
    result = run_user_tests(
        pytester,
        """
        import pytest
        import trio
        import trio.testing

        import trioconn

        hubs = []


        async def test_a_client_gets_what_the_hub_publishes(trioconn_hub):
            assert trioconn_hub.url == f"ws://127.0.0.1:{trioconn_hub.port}/"
            assert not isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
            hubs.append(trioconn_hub.hub)
            with trio.fail_after(10):
                async with trioconn_hub.connect() as client, client.subscribe("log", last=5) as log:
                    await trioconn_hub.hub.publish("log", "hello")
                    item = await log.__anext__()
                    assert (item.offset, item.data) == (1, "hello")


        def test_the_hub_was_closed_after_the_test():
            with pytest.raises(trioconn.HubStopped):
                hubs[0].publish_nowait("log", "too late")
        """,
    )
    result.assert_outcomes(passed=2)


def test_trioconn_memory_runs_in_virtual_time_without_asking_for_a_clock(pytester):
    result = run_user_tests(
        pytester,
        """
        import trio
        import trio.testing

        import trioconn


        async def test_an_hour_passes_at_once(trioconn_memory):
            clock = trio.lowlevel.current_clock()
            assert isinstance(clock, trio.testing.MockClock) and clock.autojump_threshold == 0
            async with trioconn_memory.connect() as client:
                await client.wait_state(trioconn.ClientState.OPEN)
                trioconn_memory.link.stall()
                await trio.sleep(3600)  # the heartbeat gave up on the stalled link meanwhile
                assert client.state is trioconn.ClientState.RECONNECTING
                trioconn_memory.link.pass_through()
                await client.wait_state(trioconn.ClientState.OPEN)
            assert trio.current_time() >= 3600


        async def test_a_clock_the_test_asks_for_is_kept(trioconn_memory, mock_clock):
            assert trio.lowlevel.current_clock() is mock_clock
            mock_clock.jump(10)
            assert trio.current_time() == 10
        """,
    )
    result.assert_outcomes(passed=2)


def test_trioconn_memory_restart_gives_resuming_clients_a_reset_and_settings_can_be_overridden(pytester):
    result = run_user_tests(
        pytester,
        """
        import pytest
        import trio

        import trioconn


        @pytest.fixture
        def trioconn_hub_settings():
            return {"heartbeat_interval": 1, "heartbeat_timeout": 3, "history_size": 10}


        async def test_a_restarted_hub_is_a_reset(trioconn_memory):
            assert trioconn_memory.hub.config.history_size == 10
            async with trioconn_memory.connect() as client, client.subscribe("job") as job:
                trioconn_memory.hub.set_state_nowait("job", 1)
                first = await job.__anext__()
                hub = await trioconn_memory.restart()
                assert hub is trioconn_memory.hub and hub.config.heartbeat_interval == 1
                hub.set_state_nowait("job", 2)
                reset = await job.__anext__()
                assert isinstance(reset, trioconn.ResetItem)
                assert reset.previous_epoch == first.epoch and reset.snapshot == 2
        """,
    )
    result.assert_outcomes(passed=1)


def test_trioconn_memory_needs_no_trio_mode(pytester):
    result = run_user_tests(
        pytester,
        """
        import trio


        async def test_virtual_time(trioconn_memory):
            await trio.sleep(60)
            async with trioconn_memory.connect() as client:
                async with client.subscribe("t", last=1) as sub:
                    trioconn_memory.hub.publish_nowait("t", 1)
                    assert (await sub.__anext__()).data == 1
        """,
        ini="[pytest]\nfilterwarnings = error\n",
    )
    result.assert_outcomes(passed=1)


def test_trioconn_fault_proxy_cuts_and_the_client_resumes_through_it(pytester):
    result = run_user_tests(
        pytester,
        """
        import trio

        import trioconn


        async def test_a_cut_link_is_resumed_without_a_gap(trioconn_fault_proxy):
            proxied = trioconn_fault_proxy
            assert proxied.url != proxied.hub_url
            fast = trioconn.Backoff(base=0.01, cap=0.05)
            with trio.fail_after(10):
                async with proxied.connect(backoff=fast) as client, client.subscribe("log", last=10) as log:
                    proxied.hub.publish_nowait("log", 1)  # replayed if it comes before the answer
                    assert (await log.__anext__()).data == 1
                    proxied.proxy.cut()
                    await client.wait_state(trioconn.ClientState.RECONNECTING)
                    proxied.hub.publish_nowait("log", 2)  # while the client is away
                    await client.wait_state(trioconn.ClientState.OPEN)
                    proxied.hub.publish_nowait("log", 3)
                    assert [(await log.__anext__()).data for _ in range(2)] == [2, 3]
                    assert proxied.proxy.accepted == 2
        """,
    )
    result.assert_outcomes(passed=1)


def test_a_failing_user_test_reports_its_own_assertion(pytester):
    result = run_user_tests(
        pytester,
        """
        async def test_fails(trioconn_memory):
            async with trioconn_memory.connect():
                assert 1 + 1 == 3, "the user's own message"
        """,
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: the user's own message*"])
