#!/usr/bin/env python3
"""Check a run of `gradleak audit` against the default-audit table in the README.

    python3 scripts/check-readme-audit.py [REPORT_JSON] [--readme README.md]

REPORT_JSON defaults to out/audit/report.json (what `./gradleak audit` writes). For every row of the README's
table (layer, target) the check takes the row's `best` value and the 95% interval of the family it names as
`source`, and the run's `best` record for the same layer and target, and tests both ways:

- the run's `best` lies within the README's 95% interval (what the README promises: on another CPU the numbers
  move within their intervals, since libtorch's kernels differ by instruction set); a row outside is a mismatch;
- the README's `best` lies within the run's 95% interval; a row outside is a note, or a mismatch with
  --both-ways. A run's interval can be narrow or a single point (every victim's label read right: 3.32
  [3.32, 3.32]), so a value moved by a hundredth may fall outside it.

The README prints two decimals, so its values and intervals are read with half a unit of the last digit either
way. Numbers are identical for the same seed and version on one machine.

Prints one line per row and a summary; exits 0 when every row agrees, 1 on a mismatch (or a row missing from the
run), 2 when the inputs cannot be read. Standard library only.
"""

import argparse
import json
import math
import os
import re
import sys

HEADING = "What an audit says"
NUMBER = r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
ESTIMATE = re.compile(rf"^\s*({NUMBER})\s*\[\s*({NUMBER})\s*,\s*({NUMBER})\s*\]\s*$")
CELL_LINE = re.compile(
    r"\*\*Cell\s+(?P<key>[0-9a-f]+):\s*(?P<model>\S+)\s+on\s+(?P<dataset>\S+),\s*batch size\s+(?P<batch>\d+),"
    r"\s*epoch\s+(?P<epoch>\d+),\s*defence\s+(?P<defense>[^,]+),\s*test accuracy\s+(?P<acc>[\d.]+)%"
)


class InputError(Exception):
    pass


def number(text):
    return float(text.replace(",", ""))


def half_unit(text):
    """Half a unit of the last printed digit: 0.005 for '3.32', 0.5 for '192'."""
    text = text.strip().replace(",", "")
    mantissa = re.split(r"[eE]", text)[0]
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    scale = 10.0 ** int(re.split(r"[eE]", text)[1]) if re.search(r"[eE]", text) else 1.0
    return 0.5 * 10.0 ** (-decimals) * scale


def split_row(line):
    cells = line.strip().strip("|").split("|")
    return [c.strip() for c in cells]


def readme_table(path):
    """The cell line and the rows of the first table under the heading naming the default audit."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}")
    start = None
    for i, line in enumerate(lines):
        if re.match(r"#{1,6}\s", line) and HEADING.lower() in line.lower():
            start = i
            break
    if start is None:
        raise InputError(f"{path}: no heading '{HEADING}'")
    cell = None
    header = None
    rows = []
    for line in lines[start + 1:]:
        if header is None and re.match(r"#{1,6}\s", line):
            break
        if cell is None and CELL_LINE.search(line):
            cell = CELL_LINE.search(line).groupdict()
        if line.lstrip().startswith("|"):
            cells = split_row(line)
            if header is None:
                header = [c.lower() for c in cells]
                continue
            if all(re.fullmatch(r":?-+:?", c) for c in cells):
                continue
            rows.append(dict(zip(header, cells)))
        elif header is not None:
            break
    if header is None or not rows:
        raise InputError(f"{path}: no table under the heading '{HEADING}'")
    for column in ("layer", "target", "best", "source"):
        if column not in header:
            raise InputError(f"{path}: the table under '{HEADING}' has no column '{column}' (columns: {header})")
    families = {}
    for column in header:
        m = re.match(r"^(.+?):\s*bits\b", column)
        if m:
            families[m.group(1).strip()] = column
    if not families:
        raise InputError(f"{path}: the table under '{HEADING}' has no 'FAMILY: bits [95% CI]' column")
    return cell, families, rows


def run_records(path, cell):
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror} (run `./gradleak audit` first, or pass the path)")
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not JSON ({e})")
    records = report.get("records") if isinstance(report, dict) else None
    if not isinstance(records, list):
        raise InputError(f"{path}: no 'records' array; is this a report.json written by `gradleak audit`?")
    best = [r for r in records if r.get("family") == "best"]
    if not best:
        raise InputError(f"{path}: no 'best' records")
    cells = sorted({r.get("cell") for r in best})
    if len(cells) > 1:
        if cell is None:
            raise InputError(f"{path}: {len(cells)} cells, and the README names none to choose from")
        wanted = [
            r for r in best
            if r.get("model") == cell["model"] and r.get("dataset") == cell["dataset"]
            and str(r.get("batch_size")) == cell["batch"] and str(r.get("epoch")) == cell["epoch"]
            and str(r.get("defense")) == cell["defense"].strip() and not r.get("dropout")
        ]
        if not wanted:
            raise InputError(f"{path}: no cell matches the README's ({cell['model']} on {cell['dataset']}, batch size "
                             f"{cell['batch']}, epoch {cell['epoch']}, defence {cell['defense']})")
        best = wanted
    by_key = {}
    for r in best:
        by_key.setdefault((r.get("layer"), r.get("target")), r)
    return report, best[0], by_key


def within(value, low, high, slack=0.0):
    return low - slack <= value <= high + slack


def fmt(x):
    return f"{x:.2f}"


def main(argv):
    parser = argparse.ArgumentParser(description="Check a run of `gradleak audit` against the README's table.")
    parser.add_argument("report", nargs="?", default=os.path.join("out", "audit", "report.json"),
                        help="the report.json of the run (default: out/audit/report.json)")
    parser.add_argument("--readme", default=None, help="the README to read (default: the repository's README.md)")
    parser.add_argument("--both-ways", action="store_true",
                        help="also fail where the README's value lies outside the run's interval (default: a note)")
    args = parser.parse_args(argv)
    readme = args.readme or os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "README.md")
    readme = os.path.normpath(readme)

    try:
        cell, families, rows = readme_table(readme)
        report, first, by_key = run_records(args.report, cell)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    version = report.get("gradleak_version")
    run_acc = first.get("test_accuracy")
    shown = os.path.relpath(readme)
    print(f"README: {readme if shown.startswith(os.pardir) else shown}")
    print(f"run:    {args.report}" + (f" (gradleak {version})" if version else ""))
    if cell is not None:
        acc = f"{100 * run_acc:.2f}%" if isinstance(run_acc, (int, float)) else "?"
        print(f"cell:   README {cell['key']}, test accuracy {cell['acc']}%; run {first.get('cell')}, "
              f"test accuracy {acc} (informational: the key changes with the version, the accuracy with the CPU)")
    print()
    print(f"{'layer':<6} {'target':<20} {'README best [CI]':<40} {'run best [CI]':<40} result")

    failures = []
    notes = []
    checked = 0
    for row in rows:
        layer, target = row["layer"], row["target"]
        where = f"{layer} / {target}"
        source = row["source"].strip()
        column = families.get(source)
        try:
            best_text = row["best"].strip()
            readme_best = number(best_text)
        except ValueError:
            failures.append(f"{where}: the README's best '{row['best']}' is not a number")
            print(f"{layer:<6} {target:<20} {'?':<40} {'':<40} FAIL (README best unreadable)")
            continue
        if column is None:
            failures.append(f"{where}: the README's source '{source}' has no column (columns: {sorted(families)})")
            print(f"{layer:<6} {target:<20} {best_text:<40} {'':<40} FAIL (no column for source {source})")
            continue
        m = ESTIMATE.match(row[column])
        if not m:
            failures.append(f"{where}: the README's {source} cell '{row[column]}' is not 'BITS [LOW, HIGH]'")
            print(f"{layer:<6} {target:<20} {best_text:<40} {'':<40} FAIL (README interval unreadable)")
            continue
        lo_text, hi_text = m.group(2), m.group(3)
        readme_lo, readme_hi = number(lo_text), number(hi_text)
        slack = max(half_unit(best_text), half_unit(lo_text), half_unit(hi_text))
        record = by_key.get((layer, target))
        readme_txt = f"{best_text} [{lo_text}, {hi_text}] ({source})"
        if record is None:
            failures.append(f"{where}: the run has no 'best' record for this layer and target")
            print(f"{layer:<6} {target:<20} {readme_txt:<40} {'(none)':<40} FAIL (missing in the run)")
            continue
        checked += 1
        run_bits = record.get("bits")
        ci = record.get("ci95") or [math.nan, math.nan]
        run_src = record.get("source") or "?"
        run_txt = f"{fmt(run_bits)} [{fmt(ci[0])}, {fmt(ci[1])}] ({run_src})"
        problems = []
        reverse = None
        if not within(run_bits, readme_lo, readme_hi, slack):
            problems.append(f"the run's best {fmt(run_bits)} is outside the README's interval [{lo_text}, {hi_text}]")
        if not within(readme_best, ci[0], ci[1], slack):
            reverse = f"the README's best {best_text} is outside the run's interval [{fmt(ci[0])}, {fmt(ci[1])}]"
            if args.both_ways:
                problems.append(reverse)
        note = "" if run_src == source else f"; source {run_src} where the README has {source}"
        if problems:
            failures.append(f"{where}: " + "; ".join(problems) + note)
            result = "FAIL"
        elif reverse:
            notes.append(f"{where}: {reverse}")
            result = "ok (note below)"
        elif abs(run_bits - readme_best) <= slack:
            result = "ok (same to the digit)"
        else:
            result = "ok (within both intervals)"
        print(f"{layer:<6} {target:<20} {readme_txt:<40} {run_txt:<40} {result}{note}")

    print()
    if notes and not failures:
        print(f"Note: in {len(notes)} row(s) the README's value lies outside this run's interval (a failure with "
              "--both-ways):")
        for n in notes:
            print(f"  - {n}")
    if failures:
        print(f"MISMATCH: {len(failures)} of {len(rows)} rows disagree with the README's table:")
        for failure in failures:
            print(f"  - {failure}")
        print("A row may move within its interval on another CPU, but not outside it: either the run differs from "
              "the README's configuration (check the flags and configuration) or the README's table is out of date.")
        return 1
    print(f"OK: all {checked} rows of this run lie within the README's 95% intervals"
          + ("." if notes else ", and the README's values within this run's."))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
