"""docs/scaling.md, "SyncPublisher": the Celery task, run as a plain function against a redis-server.

Celery is not installed for the tests: ``shared_task`` is stood in for by the identity, which is
what it is to a direct call.
"""

import os
import sys
import types

import trioconn

sys.modules["celery"] = types.SimpleNamespace(shared_task=lambda task: task)

# doc-block

render("7")
publisher.close()

from trioconn.redis import SyncPublisher  # noqa: E402

with SyncPublisher(os.environ["DOC_REDIS_URL"]) as check:
    try:
        check.set_state("jobs/7", {"pct": 101})
    except trioconn.TopicEnded:
        pass
    else:
        raise AssertionError("the task did not end its topic")
