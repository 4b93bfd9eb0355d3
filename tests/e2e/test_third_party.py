"""A third-party plugin package, installed through its entry point, reaches the technician.

The package ``tests/fixtures/hw-example-plugin`` is pip-installed into the running venv
(offline: ``--no-index --no-deps``) for this module only, and uninstalled afterwards, so
the other tests never see its probe. pip builds it with the venv's setuptools
(``--no-build-isolation``) when that setuptools can build wheels (>= 70.1, or with the
``wheel`` package); otherwise the test packs the same files into a wheel itself (a zip with
the ``.dist-info`` of PEP 427) and pip installs that, so no network is ever needed.

The agent process started here finds it the way a customer's agent would:
``importlib.metadata`` entry points in the group ``helloword.plugins``, with nothing in
``$HW_PLUGINS``.

Not covered yet: ``hw-tech plugins CASE --json`` listing the plugin (that command is being
added separately); extend this test when it lands.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugins import DISABLE_AUTOLOAD_ENV, ENTRY_POINT_GROUP, PLUGINS_ENV
from tests.harness import Harness

pytestmark = pytest.mark.e2e

PACKAGE = "hw-example-plugin"
SOURCE = Path(__file__).resolve().parents[1] / "fixtures" / PACKAGE
#: Seconds any one pip command may take (it is offline: a local build, a few files).
PIP_TIMEOUT_S = 120.0


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1",
           "PIP_NO_CACHE_DIR": "1"}
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_TARGET",
                "PIP_PREFIX", "PIP_USER"):
        env.pop(key, None)
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                          env=env, timeout=PIP_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False)


def _entry_point_names() -> set[str]:
    """Entry points of the group as a *fresh* interpreter of this venv sees them."""
    code = ("import importlib.metadata as m; "
            f"print(' '.join(sorted(e.name for e in m.entry_points(group={ENTRY_POINT_GROUP!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    return set(out.stdout.split())


def _uninstall() -> None:
    p = _pip("uninstall", "-y", PACKAGE)
    assert p.returncode == 0, f"pip uninstall {PACKAGE} failed:\n{p.stdout}\n{p.stderr}"


def _setuptools_builds_wheels() -> bool:
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    parts = tuple(int(x) for x in version.split(".")[:2] if x.isdigit())
    return parts >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _pack_wheel(src: Path, out: Path) -> Path:
    """A pure-Python wheel of the one-module project in ``src`` (per its pyproject.toml)."""
    meta = tomllib.loads((src / "pyproject.toml").read_text("utf-8"))
    project, modules = meta["project"], meta["tool"]["setuptools"]["py-modules"]
    dist = project["name"].replace("-", "_")
    info = f"{dist}-{project['version']}.dist-info"
    entry_points = "".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
        for group, eps in project.get("entry-points", {}).items())
    files = {f"{m}.py": (src / f"{m}.py").read_bytes() for m in modules}
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
        f"Summary: {project.get('description', '')}\n"
        f"Requires-Python: {project.get('requires-python', '')}\n").encode()
    files[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: tests/e2e/test_third_party.py\n"
                              b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    files[f"{info}/entry_points.txt"] = entry_points.encode()
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = out / f"{dist}-{project['version']}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel


@pytest.fixture(scope="module")
def example_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Install the example package into this venv for the module; always uninstall it."""
    if importlib.util.find_spec("pip") is None:
        pytest.skip("pip is not installed in this venv, so the example plugin cannot be "
                    "installed")
    # Build from a copy: an in-tree build leaves build/ and *.egg-info in the source folder.
    src = tmp_path_factory.mktemp("plugin-src") / PACKAGE
    shutil.copytree(SOURCE, src, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                               "__pycache__"))
    if _setuptools_builds_wheels():
        args = ["--no-build-isolation", str(src)]
    else:  # e.g. setuptools 65 without `wheel`: bdist_wheel is missing, pip cannot build
        args = [str(_pack_wheel(src, src.parent))]
    _uninstall()  # a leftover of an interrupted run
    try:
        p = _pip("install", "--no-deps", "--no-index", *args)
        assert p.returncode == 0, f"pip install {PACKAGE} failed:\n{p.stdout}\n{p.stderr}"
        assert "example" in _entry_point_names(), "the entry point was not installed"
        yield
    finally:
        _uninstall()
    assert "example" not in _entry_point_names(), f"{PACKAGE} is still installed"


def test_installed_plugin_finding_reaches_the_technician(
    example_plugin: None, harness: Harness
) -> None:
    h = harness
    h.env.pop(DISABLE_AUTOLOAD_ENV, None)  # autoload is what this test is about
    h.env.pop(PLUGINS_ENV, None)  # found through the entry point, not named
    h.init_server()
    h.start_server()
    home = h.enroll("A")
    h.start_agent(home)
    case = h.help(home).splitlines()[0]
    alice = h.add_tech("alice")
    h.grant(home, case, "alice")
    out = h.tech_json(alice, "diag", case)
    result = out["result"]
    assert result["ok"] is True, result
    reports = {r["probe"]: r for r in result["reports"]}
    assert "example" in reports, f"probe 'example' not run; probes: {sorted(reports)}"
    report = reports["example"]
    assert report["status"] == "ok" and report["version"] == "1", report
    codes = [f["code"] for f in report["findings"]]
    assert codes == ["example.demo_fault"], report
    fault = report["findings"][0]
    assert fault["fixers"] == ["example.marker"] and fault["remote_fixable"] is True
    assert "memory" in reports, "the built-ins still run next to the third-party plugin"
    assert not [r for r in reports if r.startswith("plugin:")], "no plugin failed"
    listed = {(p["kind"], p["name"]) for p in h.tech_json(alice, "plugins", case)}
    assert {("probe", "example"), ("fixer", "example.marker")} <= listed
