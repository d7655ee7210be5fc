"""Parser cost per token over a 50,000-token completion: `StreamParser` against re-parsing the text so far.

The completion is synthetic but shaped like QwQ-32B output: long reasoning with drafted calls, then visible
text with many calls (code arguments full of `<`, nested objects, unicode). It is cut into token-sized chunks
(1 to 7 characters, about 4 on average) and fed to `StreamParser`; the mean time per token is reported for the
first, middle and last tenth of the stream, which must stay flat as the text grows.

The baseline is what a parser without incremental state has to do: run `parse_completion` on the whole text
so far after every token. That is quadratic overall, so it is measured at a few sampled positions in each
tenth and its total is estimated from them (said so in the output). Figures only; nothing is asserted.

    python benchmarks/parser_stream.py [--tokens 50000] [--repeat 3] [--samples 4]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import random
import statistics
import time

from agent.parsing import StreamParser, parse_completion

CHARS_PER_TOKEN = 4


def build_completion(tokens: int, seed: int = 7) -> str:
    """A turn of about `tokens` * 4 characters: 40% reasoning (with drafts), then text and calls."""
    rng = random.Random(seed)
    words = ["the", "a", "tool", "call", "result", "value", "check", "search", "file", "line", "we", "then"]

    def prose(chars: int) -> str:
        out: list[str] = []
        size = 0
        while size < chars:
            word = rng.choice(words)
            if rng.random() < 0.05:
                word = rng.choice(["a < b", "<b>", "x<y", "é", "日本", "</tool", "<think"])
            out.append(word)
            size += len(word) + 1
            if rng.random() < 0.08:
                out.append(".\n")
        return " ".join(out)

    def call(i: int) -> str:
        arguments = {
            "code": f"for i in range({i}):\n    if i < {i * 2} and i > 2:\n        print('<{i}>')\n",
            "options": {"timeout": i % 30, "tags": ["x", "y", str(i)], "deep": {"k": [1, 2, {"z": None}]}},
            "path": f"src/módulo_{i}.py",
        }
        name = rng.choice(["python.run", "web-fetch", "files/read", "search"])
        return (
            "\n<tool_call>\n"
            + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
            + "\n</tool_call>"
        )

    target = tokens * CHARS_PER_TOKEN
    parts: list[str] = []
    size = 0
    i = 0
    while size < target * 0.4:
        piece = prose(rng.randint(300, 1500)) + (call(i) + "\n" if rng.random() < 0.3 else "")
        parts.append(piece)
        size += len(piece)
        i += 1
    parts.append("\n</think>\n\n")
    while size < target:
        piece = prose(rng.randint(100, 600)) + call(i)
        parts.append(piece)
        size += len(piece)
        i += 1
    return "".join(parts)[:target]


def chunk(text: str, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    chunks: list[str] = []
    pos = 0
    while pos < len(text):
        step = rng.randint(1, 2 * CHARS_PER_TOKEN - 1)
        chunks.append(text[pos : pos + step])
        pos += step
    return chunks


def stream_per_tenth(chunks: list[str]) -> list[float]:
    """Seconds per token in each tenth of the stream, for one pass."""
    tenth = len(chunks) // 10
    parser = StreamParser()
    per_token: list[float] = []
    for part in range(10):
        batch = chunks[part * tenth : (part + 1) * tenth if part < 9 else len(chunks)]
        start = time.perf_counter()
        for delta in batch:
            parser.feed(delta)
        per_token.append((time.perf_counter() - start) / len(batch))
    parser.finish()
    parser.close()
    return per_token


def baseline_per_tenth(text: str, chunks: list[str], samples: int) -> list[float]:
    """Seconds per token of re-parsing the text so far, sampled at `samples` positions per tenth."""
    ends: list[int] = []
    pos = 0
    for delta in chunks:
        pos += len(delta)
        ends.append(pos)
    tenth = len(chunks) // 10
    per_token: list[float] = []
    for part in range(10):
        lo, hi = part * tenth, (part + 1) * tenth if part < 9 else len(chunks)
        times = []
        for k in range(samples):
            prefix = text[: ends[lo + (hi - lo) * (2 * k + 1) // (2 * samples)]]
            best = math.inf
            for _ in range(2):  # best of two, as the stream keeps its best pass: both face the same noise
                start = time.perf_counter()
                parse_completion(prefix)
                best = min(best, time.perf_counter() - start)
            times.append(best)
        per_token.append(statistics.mean(times))
    return per_token


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--tokens", type=int, default=50_000)
    options.add_argument("--repeat", type=int, default=5, help="stream passes; the fastest per tenth is kept")
    options.add_argument("--samples", type=int, default=4, help="baseline positions sampled per tenth")
    args = options.parse_args()

    text = build_completion(args.tokens)
    chunks = chunk(text)
    whole = parse_completion(text)
    print(
        f"completion: {len(text):,} chars, {len(chunks):,} token-sized chunks, "
        f"{len(whole.tool_calls)} calls, {len(whole.drafts)} drafts, {len(whole.thinking):,} chars of reasoning, "
        f"{len(whole.content):,} chars of content"
    )
    parser = StreamParser()
    for delta in chunks:
        parser.feed(delta)
    assert parser.close() == whole, "stream and whole disagree"  # a correctness guard, not a timing assertion

    gc.collect()
    passes = [stream_per_tenth(chunks) for _ in range(args.repeat)]
    stream = [min(p[i] for p in passes) for i in range(10)]
    gc.collect()
    whole_s = math.inf
    for _ in range(3):
        start = time.perf_counter()
        parse_completion(text)
        whole_s = min(whole_s, time.perf_counter() - start)
    baseline = baseline_per_tenth(text, chunks, args.samples)
    per_tenth = len(chunks) // 10

    us = 1e6
    print(f"\nStreamParser, mean time per token (best of {args.repeat} passes per tenth):")
    for label, i in (("first tenth", 0), ("middle tenth", 4), ("last tenth", 9)):
        print(f"  {label:13s} {stream[i] * us:8.2f} us")
    print(f"  last/first    {stream[9] / stream[0]:8.2f}x   (flat means about 1)")
    print("  all tenths    " + " ".join(f"{t * us:.2f}" for t in stream) + " us")
    stream_total = sum(t * per_tenth for t in stream)
    print(
        f"  whole stream  {stream_total * 1e3:8.1f} ms;  parse_completion(whole text) once: {whole_s * 1e3:.1f} ms"
    )

    print(
        "\nNaive baseline, parse_completion(text so far) after every token "
        f"({args.samples} sampled positions per tenth, best of 2 each):"
    )
    for label, i in (("first tenth", 0), ("middle tenth", 4), ("last tenth", 9)):
        print(f"  {label:13s} {baseline[i] * us:10.1f} us   = {baseline[i] / stream[i]:8.0f}x StreamParser")
    print("  all tenths    " + " ".join(f"{t * 1e3:.2f}" for t in baseline) + " ms")
    baseline_total = sum(t * per_tenth for t in baseline)
    print(
        f"  whole stream  {baseline_total:10.1f} s (estimated from the samples) "
        f"= {baseline_total / stream_total:,.0f}x StreamParser"
    )


if __name__ == "__main__":
    main()
