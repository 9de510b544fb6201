"""Summarise a `mutmut run` (make mutate): the score per module and every mutant not killed, with its diff.

Killed, timed-out, segfaulting and type-check-caught mutants count as detected; survivors, mutants no
selected test reaches, and suspicious ones (an unexpected exit code) count against the score. Writes
`mutants/REPORT.md` and prints the score table; exits 1 when the overall score is below `--target`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

DETECTED = frozenset({"killed", "timeout", "segfault", "caught by type check"})
IGNORED = frozenset({"skipped", "not checked", "check was interrupted by user"})


def mutmut(*args: str) -> str:
    """Run the venv's mutmut and return its standard output."""
    exe = Path(sys.executable).with_name("mutmut")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, check=True).stdout


def statuses() -> dict[str, str]:
    """Mutant name -> status, from `mutmut results --all true`."""
    out: dict[str, str] = {}
    for line in mutmut("results", "--all", "true").splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep:
            out[name] = status
    return out


def module_of(mutant: str) -> str:
    """`semookii_bridge.api.retry.x_is_transient__mutmut_3` -> `semookii_bridge.api.retry`."""
    head = mutant.split("__mutmut_")[0]
    return head.rsplit(".", 1)[0]


def score_table(by_module: dict[str, Counter[str]]) -> tuple[list[str], float]:
    """Markdown rows per module and the overall share of mutants detected."""
    rows = [
        "| module | mutants | detected | survived | no tests | other | score |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    total = detected = 0
    for module in sorted(by_module):
        counts = by_module[module]
        counted = sum(n for s, n in counts.items() if s not in IGNORED)
        hit = sum(counts[s] for s in DETECTED)
        other = counted - hit - counts["survived"] - counts["no tests"]
        total, detected = total + counted, detected + hit
        rows.append(f"| `{module}` | {counted} | {hit} | {counts['survived']} | {counts['no tests']} | {other} | "
                    f"{100 * hit / max(counted, 1):.1f} % |")  # fmt: skip
    score = detected / max(total, 1)
    rows.append(f"| **all** | {total} | {detected} | | | | **{100 * score:.1f} %** |")
    return rows, score


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", type=float, default=85.0, help="minimum overall score in percent")
    parser.add_argument("--out", type=Path, default=Path("mutants/REPORT.md"))
    args = parser.parse_args()
    found = statuses()
    if not found:
        print("no mutmut results: run `make mutate` first", file=sys.stderr)
        return 2
    by_module: dict[str, Counter[str]] = defaultdict(Counter)
    for name, status in found.items():
        by_module[module_of(name)][status] += 1
    rows, score = score_table(by_module)
    lines = ["# Mutation testing report", "", *rows, "", "## Mutants not detected", ""]
    for name, status in sorted(found.items()):
        if status in DETECTED or status in IGNORED:
            continue
        lines += [f"### `{name}` ({status})", "", "```diff", mutmut("show", name).strip(), "```", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(rows))
    unchecked = sum(n for counts in by_module.values() for s, n in counts.items() if s in IGNORED)
    if unchecked:
        print(f"\n{unchecked} mutants were not checked (run stopped early, or skipped) and are left out")
    print(f"\nreport: {args.out}")
    return 0 if 100 * score >= args.target else 1


if __name__ == "__main__":
    sys.exit(main())
