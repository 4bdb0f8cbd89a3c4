"""JSON hooks for data: how published values become JSON text and how received ones come back.

Theory of operation
-------------------
Protocol frames are always encoded and parsed by the strict codec of ``protocol.py``. Only the
*data* inside them (a published value, a state topic's value) may go through hooks of the
application's choosing, given to the hub (``HubConfig.json_dumps``/``json_loads``) or to the
client (``connect(json_dumps=..., json_loads=...)``):

- ``dumps(value) -> str | bytes`` runs once per publication, where the data is encoded today
  (``encode_data``); its text is then spliced into frames as the strict codec's would be. Bytes
  (orjson returns them) are decoded as UTF-8. The text is checked as the protocol demands
  (``check_data_json``: one JSON value, finite numbers, at most ``MAX_DATA_DEPTH`` levels), so a
  hook cannot put on the wire what a peer would refuse. A hook that raises, or returns anything
  but text, makes the publication fail with ``TypeError``.
- ``loads(text) -> value`` runs where received data is handed to application code. The frame
  has already been parsed strictly, so the hook gets the data re-encoded compactly by the
  strict codec (number text may differ from what was sent: ``1.50`` arrives as ``1.5``).

No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar

import attrs

from .items import EventItem, ResetItem, SnapshotItem
from .protocol import check_data_json, dumps, encode_data

__all__ = ["JsonCodec", "JsonDumps", "JsonLoads", "check_hook"]

#: Encodes one value as JSON text (``str``, or UTF-8 ``bytes``): ``json.dumps``, ``orjson.dumps``,
#: ``functools.partial(json.dumps, default=...)``.
JsonDumps: TypeAlias = Callable[[Any], "str | bytes"]
#: Decodes JSON text into a value: ``json.loads``, ``orjson.loads``,
#: ``functools.partial(json.loads, object_hook=...)``.
JsonLoads: TypeAlias = Callable[[str], Any]

_Item = TypeVar("_Item")


def check_hook(name: str, value: object) -> None:
    """Raise ``TypeError`` naming ``name`` unless ``value`` is callable or None."""
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be a callable or None, not {type(value).__name__}")


@attrs.frozen
class JsonCodec:
    """The data hooks of one hub or client; None means the strict standard-library codec."""

    dumps: JsonDumps | None = None
    loads: JsonLoads | None = None

    def encode(self, data: Any) -> str:
        """Encode ``data`` for the wire.

        Raises:
            TypeError: the hook raised (its message is kept), returned something other than
                ``str``/``bytes``, or produced text the protocol refuses (not JSON, NaN or an
                infinite number, nested more than 32 levels).
        """
        hook = self.dumps
        if hook is None:
            return encode_data(data)
        try:
            produced = hook(data)
        except Exception as exc:
            raise TypeError(f"data is not JSON-serializable: json_dumps raised {_describe(exc)}") from exc
        if isinstance(produced, bytes | bytearray | memoryview):
            try:
                text = bytes(produced).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TypeError(f"json_dumps returned bytes that are not UTF-8: {exc}") from None
        elif isinstance(produced, str):
            text = produced
        else:
            raise TypeError(f"json_dumps must return str or bytes, not {type(produced).__name__}")
        try:
            return check_data_json(text)
        except TypeError as exc:
            raise TypeError(f"json_dumps produced text the protocol refuses: {exc}") from None

    def decode(self, value: Any) -> Any:
        """Give ``value`` (data parsed from a frame) to the ``loads`` hook; unchanged without one.

        An exception the hook raises propagates unchanged: it is the application's own.
        """
        hook = self.loads
        if hook is None:
            return value
        return hook(dumps(value))

    def decode_item(self, item: _Item) -> _Item:
        """``item`` with its data (an event's, a snapshot's, a reset's snapshot) decoded."""
        if self.loads is None:
            return item
        if isinstance(item, EventItem | SnapshotItem):
            return attrs.evolve(item, data=self.decode(item.data))
        if isinstance(item, ResetItem) and item.has_snapshot:
            return attrs.evolve(item, snapshot=self.decode(item.snapshot))
        return item


def _describe(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
