"""The browser client ships inside the Python package, and its package.json matches the package."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import json
import subprocess
import sys
from pathlib import Path

from packaging.version import Version

import trioconn.browser
from trioconn.browser import SCRIPT_PATH, script_dir

ROOT = Path(__file__).resolve().parent.parent
JS_FILES = ["trioconn.js", "trioconn.d.ts", "package.json", "README.md"]


def npm_version(python_version: str) -> str:
    """The semver form of a PEP 440 version (npm refuses ``0.1.0.dev0``; it is ``0.1.0-dev.0``).

    A release (``1.2.3``) is the same string in both; pre-releases and dev releases become
    semver pre-release tags that sort the same way (``a``→``alpha``, ``b``→``beta``, ``rc``).
    """
    version = Version(python_version)
    assert version.epoch == 0 and version.post is None and version.local is None, python_version
    text = ".".join(str(part) for part in (*version.release, 0, 0)[:3])
    tags: list[str] = []
    if version.pre is not None:
        letter, number = version.pre
        tags += [{"a": "alpha", "b": "beta", "rc": "rc"}[letter], str(number)]
    if version.dev is not None:
        tags += ["dev", str(version.dev)]
    return text + ("-" + ".".join(tags) if tags else "")


def test_npm_version_of_pep440_versions() -> None:
    assert npm_version("1.2.3") == "1.2.3"
    assert npm_version("0.1.0.dev0") == "0.1.0-dev.0"
    assert npm_version("2.0rc1") == "2.0.0-rc.1"
    assert npm_version("1.0.0a2.dev3") == "1.0.0-alpha.2.dev.3"


def test_the_module_exports_only_the_path_and_the_directory() -> None:
    assert trioconn.browser.__all__ == ["SCRIPT_PATH", "script_dir"]
    assert script_dir() / "trioconn.js" == SCRIPT_PATH
    assert SCRIPT_PATH.is_file()
    assert SCRIPT_PATH.read_text(encoding="utf-8").startswith("/**\n * trioconn.js")


def test_the_files_are_package_data_of_the_installed_package() -> None:
    installed = importlib.resources.files("trioconn") / "js"
    for name in JS_FILES:
        resource = installed / name
        assert resource.is_file(), name
        assert resource.read_bytes() == (script_dir() / name).read_bytes()


def test_a_build_of_the_package_carries_the_files(tmp_path: Path) -> None:
    """What setuptools copies into a wheel (build_py) includes trioconn/js/, byte for byte."""
    setup = "from setuptools import setup; setup()"
    result = subprocess.run(
        [sys.executable, "-c", setup, "-q", "build_py", "--build-lib", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    built = tmp_path / "trioconn" / "js"
    assert sorted(path.name for path in built.iterdir()) == sorted(JS_FILES)
    for name in JS_FILES:
        assert (built / name).read_bytes() == (script_dir() / name).read_bytes(), name


def test_package_json_names_the_files_and_the_python_version() -> None:
    package = json.loads((script_dir() / "package.json").read_text(encoding="utf-8"))
    assert package["name"] == "trioconn"
    assert package["type"] == "module"
    assert package["version"] == npm_version(importlib.metadata.version("trioconn"))
    assert package["types"] == "./trioconn.d.ts"
    assert package["exports"]["."] == {"types": "./trioconn.d.ts", "default": "./trioconn.js"}
    assert sorted(package["files"]) == ["README.md", "trioconn.d.ts", "trioconn.js"]
    assert package["license"] == "MIT"
    for name in package["files"]:
        assert (script_dir() / name).is_file(), name


def test_the_script_says_the_same_version() -> None:
    package = json.loads((script_dir() / "package.json").read_text(encoding="utf-8"))
    text = SCRIPT_PATH.read_text(encoding="utf-8")
    assert f'export const VERSION = "{package["version"]}";' in text
