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
