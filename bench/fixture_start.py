"""How long until a fakemx is ready: figures for the Python API and the pytest plugin.

    python bench/fixture_start.py [--runs 200]

Prints medians of:
- ``FakeMX(...)`` started in a thread until a client has the ``220`` greeting,
  for the default sink (which offers STARTTLS) and for a TLS profile, with the
  state dir seeded as the plugin seeds it (CA, certificate, empty store copied
  from the session's), and once with the store created on the spot;
- the same through the plugin's fixture path (state dir seeded from the
  session CA, then ``fakemx_factory``), measured inside pytest;
- the import cost of ``fakemx.pytest_plugin`` (``python -X importtime``), with
  pytest already imported as it is in a real run;
- the wall time of a parametrized run over the whole catalog
  (tests/examples/test_relay_catalog.py), serial and with ``-n 2``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fakemx import FakeMX, catalog  # noqa: E402
from fakemx.store import DB_NAME, Store  # noqa: E402
from fakemx.tls import certs  # noqa: E402


def greeting(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=5) as sock:
        if not sock.recv(512).startswith(b"220"):
            raise RuntimeError("no 220 greeting")


def start_to_greeting(
    profile: str | None, seed_dir: Path, runs: int, *, store: bool = True
) -> list[float]:
    """Seeded as the plugin does it: CA, certificates and (with ``store``) an empty store."""
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as state:
            for name in (certs.CA_FILE, certs.CA_KEY_FILE, *([DB_NAME] if store else [])):
                shutil.copy2(seed_dir / name, Path(state) / name)
            shutil.copytree(seed_dir / "certs", Path(state) / "certs")
            began = time.perf_counter()
            with FakeMX(profile, state_dir=state) as mx:
                greeting(mx.host, mx.port)
                times.append(time.perf_counter() - began)
    return times


FIXTURE_TEST = """
import socket, time
import pytest

TIMES = []

@pytest.mark.parametrize("n", range({runs}))
def test_start(request, n):
    began = time.perf_counter()
    mx = request.getfixturevalue("fakemx")
    with socket.create_connection((mx.host, mx.port), timeout=5) as sock:
        assert sock.recv(512).startswith(b"220")
    TIMES.append(time.perf_counter() - began)

def test_report():
    import statistics
    print("FIXTURE_MEDIAN_MS", statistics.median(TIMES[1:]) * 1000)
"""


def fixture_median(runs: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        test = Path(tmp) / "test_fixture_bench.py"
        test.write_text(FIXTURE_TEST.replace("{runs}", str(runs)))
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
             "-p", "no:benchmark", "-o", "asyncio_default_fixture_loop_scope=function",
             str(test)],
            capture_output=True, text=True, cwd=tmp, timeout=300, check=False,
        )
    found = re.search(r"FIXTURE_MEDIAN_MS (\S+)", out.stdout)
    if found is None:
        raise RuntimeError(out.stdout + out.stderr)
    return float(found[1])


def plugin_import_ms() -> tuple[float, float]:
    """(self+children µs of fakemx.pytest_plugin with pytest loaded, whole import alone)."""
    code = "import pytest; import fakemx.pytest_plugin"
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    lines = out.stderr.splitlines()
    plugin = [line for line in lines if line.rstrip().endswith("fakemx.pytest_plugin")]
    cumulative = int(plugin[-1].split("|")[1])
    alone = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import fakemx.pytest_plugin"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )
    total = int(alone.stderr.splitlines()[-1].split("|")[1])
    return cumulative / 1000, total / 1000


def catalog_run(*extra: str) -> float:
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/examples/test_relay_catalog.py", *extra],
        cwd=ROOT, check=True, capture_output=True, timeout=600,
    )
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--skip-catalog", action="store_true",
                        help="leave out the catalog run (about 15 s)")
    args = parser.parse_args()
    seed = Path(tempfile.mkdtemp(prefix="fakemx-bench-ca-"))
    certs.load_or_create_ca(seed)
    certs.valid_cert_files(seed, certs.DEFAULT_HOSTNAME)
    Store(seed).close()
    names = {profile.name for profile in catalog()}
    tls_profile = "tls-valid-starttls" if "tls-valid-starttls" in names else None
    start_to_greeting(None, seed, 5)  # warm up imports and caches
    ms = 1000
    sink = statistics.median(start_to_greeting(None, seed, args.runs)) * ms
    tls = statistics.median(start_to_greeting(tls_profile, seed, args.runs)) * ms
    fresh = statistics.median(start_to_greeting(None, seed, args.runs, store=False)) * ms
    print(f"catalog: {len(names)} profiles")
    print(f"FakeMX() start to greeting, sink, store created (fsyncs): median {fresh:.2f} ms")
    print(f"FakeMX() start to greeting, sink (STARTTLS offered): median {sink:.2f} ms")
    print(f"FakeMX() start to greeting, {tls_profile or 'sink'}: median {tls:.2f} ms")
    print(f"fakemx fixture request to greeting (in pytest): median "
          f"{fixture_median(args.runs):.2f} ms")
    with_pytest, alone = plugin_import_ms()
    print(f"import fakemx.pytest_plugin: {with_pytest:.1f} ms with pytest loaded "
          f"({alone:.1f} ms cold, pytest included)")
    if not args.skip_catalog:
        print(f"catalog run (tests/examples/test_relay_catalog.py): {catalog_run():.1f} s "
              f"serial, {catalog_run('-n', '2'):.1f} s with -n 2")
    shutil.rmtree(seed, ignore_errors=True)


if __name__ == "__main__":
    main()
