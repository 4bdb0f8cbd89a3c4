"""The public surface: everything in __all__ exists, nothing private leaks."""

import types

import trioconn
import trioconn.testing


def test_all_names_exist_and_are_public():
    for name in trioconn.__all__:
        assert hasattr(trioconn, name), name
        assert not name.startswith("_")


def test_nothing_public_is_missing_from_all():
    public = {
        name
        for name, value in vars(trioconn).items()
        if not name.startswith("_") and name != "annotations" and not isinstance(value, types.ModuleType)
    }
    assert public == set(trioconn.__all__)


def test_one_exception_root():
    for name in trioconn.__all__:
        obj = getattr(trioconn, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, trioconn.TrioconnError), name


def test_testing_module_exports():
    for name in trioconn.testing.__all__:
        assert hasattr(trioconn.testing, name), name


def test_the_decision_table_is_public_and_the_same_function() -> None:
    import trioconn._core.decision

    assert "decision_table" in trioconn.__all__
    assert trioconn.decision_table is trioconn._core.decision.decision_table
    table = trioconn.decision_table()
    assert {"close_codes", "unlisted_close_codes", "handshake_statuses", "ends", "reauth"} <= set(table)
