"""Which topics a handler or an in-process reader is for: one topic, or every topic with a prefix.

One rule everywhere (``hub.publications``, ``hub.on_request``, ``hub.presence_changes``): a
pattern that ends in ``*`` matches every topic that starts with what comes before the ``*``
(``"jobs/*"`` matches ``jobs/1`` and ``jobs/a/b``; ``"*"`` matches every topic); any other
pattern matches that one topic. No I/O.
"""

from __future__ import annotations

import attrs

from .._core.protocol import validate_topic

__all__ = ["TopicPattern"]


@attrs.frozen
class TopicPattern:
    """A parsed pattern; ``matches(topic)`` says whether it covers ``topic``."""

    text: str
    prefix: bool

    @classmethod
    def parse(cls, pattern: object, argument: str = "topic_or_prefix") -> TopicPattern:
        """Parse ``pattern``; ``argument`` names it in the error.

        Raises:
            TypeError: not a str.
            ValueError: not a valid topic name (the ``*`` aside).
        """
        if not isinstance(pattern, str):
            raise TypeError(f"{argument} must be a str, not {type(pattern).__name__}")
        prefix = pattern.endswith("*")
        text = pattern[:-1] if prefix else pattern
        if text or not prefix:
            try:
                validate_topic(text)
            except ValueError as exc:
                raise ValueError(f"{argument} {pattern!r}: {exc}") from None
        return cls(text, prefix)

    def matches(self, topic: str) -> bool:
        return topic.startswith(self.text) if self.prefix else topic == self.text

    def __str__(self) -> str:
        return self.text + "*" if self.prefix else self.text
