"""llama.cpp's CPU "extra buffer types" on or off: load time, prompt and generation tokens/s on a real GGUF.

`LlamaCppModel(extra_buffer_types=...)` decides whether llama.cpp may repack quantized weights into its extra
buffer types (AMX tiles, and the CPU "repack" layouts for AVX2/AVX-512 or ARM). None, the default, turns them
off on CPUs with AMX, where llama-cpp-python 0.3.36 built with native flags crashes in
`ggml_backend_amx_mul_mat` (see agent/models/_llama_runtime.py). This script measures what each choice costs
here, so the default can be held against figures.

Each measurement runs in a child process of its own: a crash (the AMX segfault) is reported as such instead
of ending the benchmark, and every load starts from a fresh process (the file is in the page cache after a
warm-up load, so load time is llama.cpp's own work: reading, repacking, allocating). The choices are
interleaved over the repeats, so machine load hits all alike; the best run and the median are printed.

`--python NAME=PATH` adds another interpreter whose llama-cpp-python is a different build (one compiled
without AMX, say: `CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=ON ..."`), measured interleaved with this one,
so a build choice and a load-time choice are compared in the same run.

Run: python benchmarks/llama_extra_bufts.py [--model PATH] [--repeat 3] [--prompt-tokens 512] [--gen-tokens 64]
     [--python NAME=PATH ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_MODEL = (
    Path(os.environ.get("QWQ_AGENT_TEST_MODELS", Path.home() / ".cache/qwq-agent/test-models"))
    / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
)
CHOICES = {"True": True, "False": False, "None": None}
TEXT = (
    "The quick brown fox jumps over the lazy dog while the agent computes prime numbers, hashes strings and "
    "writes files in its sandbox. "
)


def measure(
    path: str, choice: bool | None, threads: int, prompt_tokens: int, gen_tokens: int
) -> dict[str, float]:
    """One load, one cold prompt evaluation, one greedy generation (in this process)."""
    from agent.models import LlamaCppModel

    model = LlamaCppModel(
        path, n_ctx=2048, n_threads=threads, n_gpu_layers=0, seed=1, extra_buffer_types=choice
    )
    start = time.perf_counter()
    llm = model.load()
    load_s = time.perf_counter() - start
    runtime = model.runtime
    assert runtime is not None
    ids = llm.tokenize((TEXT * 200).encode(), add_bos=False)[:prompt_tokens]
    llm.reset()  # type: ignore[no-untyped-call]
    start = time.perf_counter()
    llm.eval(ids)
    prompt_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(gen_tokens):  # greedy, one token at a time: the decode path of an agent turn
        llm.eval([llm.sample(temp=0.0)])
    gen_s = time.perf_counter() - start
    used = runtime.extra_buffer_types
    model.close()
    return {
        "load_s": load_s,
        "prompt_tps": len(ids) / prompt_s,
        "gen_tps": gen_tokens / gen_s,
        "use_extra_bufts": -1.0 if used is None else float(used),
    }


def child(args: argparse.Namespace) -> None:
    result = measure(args.model, CHOICES[args.child], args.threads, args.prompt_tokens, args.gen_tokens)
    print(json.dumps(result))


def cpu_summary() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace")
    except OSError:
        return "unknown CPU"
    name, flags = "unknown CPU", set[str]()
    for line in text.splitlines():
        if line.startswith("model name") and name == "unknown CPU":
            name = line.split(":", 1)[1].strip()
        if line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    wanted = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"]
    have = [f for f in wanted if f in flags]
    amx = [f for f in flags if f.startswith("amx")]
    return f"{name}; flags: {' '.join(have)}; AMX: {' '.join(sorted(amx)) if amx else 'none'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--gen-tokens", type=int, default=64)
    parser.add_argument("--python", action="append", default=[], metavar="NAME=PATH", help="another build")
    parser.add_argument("--child", choices=sorted(CHOICES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from agent.models._llama_runtime import default_extra_buffer_types

    print(f"model: {args.model}")
    print(f"CPU: {cpu_summary()}")
    print(f"extra_buffer_types=None decides: {default_extra_buffer_types()} on this CPU")
    print(f"{args.threads} threads, {args.prompt_tokens}-token cold prompt, {args.gen_tokens} greedy tokens")
    pythons = {"this": sys.executable, **dict(item.split("=", 1) for item in args.python)}
    options = ["--model", args.model, "--threads", str(args.threads)]
    options += ["--prompt-tokens", str(args.prompt_tokens), "--gen-tokens", str(args.gen_tokens)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}  # this checkout's agent
    runs = {
        f"{who}:{name}" if len(pythons) > 1 else name: (path, name)
        for who, path in pythons.items()
        for name in CHOICES
    }
    subprocess.run(  # warm the page cache
        [sys.executable, __file__, *options, "--child", "False"], capture_output=True, check=False, env=env
    )
    results: dict[str, list[dict[str, float]]] = {label: [] for label in runs}
    failures: dict[str, list[str]] = {label: [] for label in runs}
    for _ in range(args.repeat):
        for label, (python, name) in runs.items():
            command = [python, __file__, *options, "--child", name]
            done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
            if done.returncode:
                failures[label].append(f"exit {done.returncode}: {done.stderr.strip()[-200:]}")
                continue
            results[label].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(
        f"\n{'extra_buffer_types':<20}{'load s (best/med)':>20}{'prompt tok/s (best/med)':>26}{'gen tok/s (best/med)':>24}"
    )
    for name, runs in results.items():
        if not runs:
            print(f"{name:<20}  failed: {failures[name][:1]}")
            continue
        load = [r["load_s"] for r in runs]
        prompt = [r["prompt_tps"] for r in runs]
        gen = [r["gen_tps"] for r in runs]
        print(
            f"{name:<20}{min(load):>9.2f} / {statistics.median(load):<8.2f}"
            f"{max(prompt):>13.1f} / {statistics.median(prompt):<10.1f}"
            f"{max(gen):>11.1f} / {statistics.median(gen):<10.1f}"
            + (f"  ({len(failures[name])} runs failed: {failures[name][0]})" if failures[name] else "")
        )


if __name__ == "__main__":
    main()
