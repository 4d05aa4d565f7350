"""How long the fakemx command takes to start, as a CLI user feels it.

    python bench/startup.py --runs 21

Times, from exec to exit (wall clock, median and p90 of ``--runs``):
``fakemx --version``, ``fakemx list``, ``fakemx explain 4.4.316``,
``fakemx check profiles/sink.toml``, and ``fakemx serve`` from exec to its ready
line on stdout. ``list`` and ``explain`` are timed with the catalog cache warm
(the usual case: it is written by the first run after an install or an edit) and
once cold; ``check`` and ``serve`` with their caches warm too (fakemx.check_cache,
fakemx.profile_cache), and ``serve``'s state dir holding its CA and certificate.
The interpreter is this one run directly (``sys.executable -m fakemx``), so a
version manager's shim (pyenv's is a bash script) is not counted.

Python's bytecode is cached, as for an installed fakemx (pip compiles it at
install): in a scratch ``PYTHONPYCACHEPREFIX``, whatever ``PYTHONDONTWRITEBYTECODE``
says, which would otherwise make every run compile fakemx's modules from source
(about 0.1 s for ``serve``). ``--no-bytecode-cache`` measures with the
environment as it is. Raw output belongs in bench/results/ (see
docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine_header, percentile

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [
    ("fakemx --version", ["--version"]),
    ("fakemx list", ["list"]),
    ("fakemx explain 4.4.316", ["explain", "4.4.316"]),
    ("fakemx check profiles/sink.toml", ["check", str(ROOT / "profiles" / "sink.toml")]),
]


def time_command(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fakemx", *args], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def time_serve_ready(env: dict[str, str], state_dir: str) -> float:
    """From exec to the ready line; then SIGTERM (not counted)."""
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "fakemx", "serve", "--port", "0", "--state-dir", state_dir],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert server.stdout is not None
    line = server.stdout.readline()
    elapsed = time.perf_counter() - started
    server.terminate()
    server.wait(timeout=30)
    if not line.startswith("fakemx: serving"):
        raise SystemExit(f"fakemx serve printed {line!r} instead of its ready line")
    return elapsed


def report(name: str, samples: list[float]) -> None:
    print(f"{name:<36} median {statistics.median(samples) * 1000:6.0f} ms"
          f"   p90 {percentile(samples, 0.9) * 1000:6.0f} ms   ({len(samples)} runs)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="keep the environment's PYTHONDONTWRITEBYTECODE and"
                             " PYTHONPYCACHEPREFIX")
    args = parser.parse_args()
    flag = " --no-bytecode-cache" if args.no_bytecode_cache else ""
    print(machine_header(f"python3 bench/startup.py --runs {args.runs}{flag}"))
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "FAKEMX_CACHE_DIR": str(Path(scratch) / "cache")}
        if not args.no_bytecode_cache:  # as installed: compiled once, by the first run
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(Path(scratch) / "pycache")
        print("# bytecode: " + (f"as the environment says (PYTHONDONTWRITEBYTECODE="
                                 f"{env.get('PYTHONDONTWRITEBYTECODE', '')!r})"
                                 if args.no_bytecode_cache else "cached, as installed"),
              flush=True)
        time_command(["list"], env)  # compiles the bytecode (when cached), not counted
        cold = []
        for _ in range(max(3, args.runs // 4)):
            for stale in Path(env["FAKEMX_CACHE_DIR"]).glob("catalog-*.json"):
                stale.unlink()
            cold.append(time_command(["list"], env))
        for name, command in COMMANDS:
            time_command(command, env)  # warm the cache and the page cache
            report(name, [time_command(command, env) for _ in range(args.runs)])
        report("fakemx list, catalog cache cold", cold)
        state_dir = str(Path(scratch) / "state")
        time_serve_ready(env, state_dir)  # the first start writes the CA: not the usual case
        report("fakemx serve -> ready line", [time_serve_ready(env, state_dir)
                                                for _ in range(args.runs)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
