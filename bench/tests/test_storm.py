"""The storm generator's checks and the runner's peak-rate helpers, on hand-made input."""

from __future__ import annotations

from bench.run import _peak_rate_events, _peak_rate_samples
from bench.stormgen import Rec, Storm


def feed(seqs: list[int]) -> Rec:
    rec = Rec()
    for seq in seqs:
        Storm.on_event(rec, seq)
    return rec


def test_contiguous_sequence_is_clean() -> None:
    rec = feed([0, 1, 2, 3])
    assert (rec.next_seq, rec.missing, rec.late, rec.events) == (4, 0, 0, 4)


def test_gap_counts_every_missing_event() -> None:
    rec = feed([0, 1, 4, 5])
    assert (rec.next_seq, rec.missing, rec.late) == (6, 2, 0)


def test_duplicate_and_reordered_events_are_late() -> None:
    rec = feed([0, 1, 1, 3, 2])
    assert rec.late == 2
    assert rec.missing == 1


def test_resume_time_is_the_first_event_after_a_reconnect() -> None:
    rec = Rec()
    rec.opens.append(1.0)
    Storm.on_event(rec, 0)
    assert rec.resumes == []
    rec.opens.append(5.0)
    rec.reopened = True
    Storm.on_event(rec, 1)
    Storm.on_event(rec, 2)
    assert len(rec.resumes) == 1


def test_peak_rates() -> None:
    samples = [[t / 10, v] for t, v in enumerate([0, 0, 10, 50, 100, 120, 120, 120, 120, 120, 120, 130, 130])]
    assert _peak_rate_samples(samples) == 130  # 0 at t=0.1, 130 at t=1.1
    assert _peak_rate_events([0.0, 0.1, 0.2, 2.0, 2.5, 2.6, 2.9, 3.0]) == 5
    assert _peak_rate_events([]) == 0
