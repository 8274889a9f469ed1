"""Turn harness results into docs: markdown tables, goal checks, PNG plots; one generated block per section.

docs/benchmarks.md keeps hand-written text outside ``<!-- BEGIN GENERATED: x -->`` / ``<!-- END
GENERATED: x -->`` markers; regenerating replaces only what lies between them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from .harness import LEARNED
from .metrics import METRICS

COLUMNS = ("input", "router", "oracle", "multitask", "ffdnet_sigma")
METRIC_TITLES = {"psnr": "PSNR (dB, higher is better)", "ssim": "SSIM (higher is better)",
                 "haarpsi": "HaarPSI (piq, weight-free; higher is better)",
                 "feature_distance": "Feature distance (EfficientNet-Lite0, uncalibrated, not LPIPS; lower is better)"}
Table = Mapping[str, Mapping[str, Mapping[str, float]]]


def classical_names(methods: Mapping[str, object]) -> list[str]:
    return [m for m in methods if m not in COLUMNS and m not in LEARNED]


def best_classical(methods: Mapping[str, Mapping[str, float]], metric: str) -> tuple[str, float] | None:
    """The classical method with the best mean ``metric`` for one case (higher or lower is better)."""
    names = classical_names(methods)
    if not names:
        return None
    pick = max if METRICS[metric] else min
    name = pick(names, key=lambda n: methods[n][metric])
    return name, methods[name][metric]


def _fmt(value: float | None, metric: str) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.2f}" if metric == "psnr" else f"{value:.3f}"


def metric_table(table: Table, metric: str, accuracy: Mapping[str, float] | None = None) -> str:
    """One markdown table: a row per case, a column per method, best classical named."""
    header = ["case", *COLUMNS, "best classical"] + (["router top-1 hit"] if accuracy else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for case, methods in table.items():
        cells = [case] + [_fmt(methods[m][metric], metric) if m in methods else "–" for m in COLUMNS]
        best = best_classical(methods, metric)
        cells.append(f"{_fmt(best[1], metric)} ({best[0]})" if best else "–")
        if accuracy:
            cells.append(f"{accuracy[case]:.0%}" if case in accuracy else "–")
        lines.append("| " + " | ".join(cells) + " |")
    means = ["**mean**"] + [_fmt(_mean(table, m, metric), metric) for m in COLUMNS]
    means.append(_fmt(_mean_best_classical(table, metric), metric))
    lines.append("| " + " | ".join(means + ([""] if accuracy else [])) + " |")
    return "\n".join(lines)


def _mean(table: Table, method: str, metric: str, cases: Sequence[str] | None = None) -> float | None:
    values = [table[c][method][metric] for c in (cases or table) if method in table[c]]
    return sum(values) / len(values) if values else None


def _mean_best_classical(table: Table, metric: str) -> float | None:
    values = [b[1] for b in (best_classical(table[c], metric) for c in table) if b]
    return sum(values) / len(values) if values else None


def goal_rows(table: Table, speed: Mapping | None) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, met?) for the issue's goals; None = not measured in this run."""
    rows: list[tuple[str, str, bool | None]] = []
    losses = [f"{c} ({b[0]} {b[1] - t['router']['psnr']:+.2f} dB)" for c, t in table.items()
              if (b := best_classical(t, "psnr")) and b[1] > t["router"]["psnr"]]
    rows.append(("router ≥ every classical method on every case (PSNR)",
                 "met on all cases" if not losses else f"behind on {len(losses)}/{len(table)}: " + "; ".join(losses),
                 not losses))
    noise = [c for c, t in table.items() if "ffdnet_sigma" in t]
    behind = [f"{c} ({t['ffdnet_sigma']['psnr'] - t['router']['psnr']:+.2f} dB)" for c in noise
              if (t := table[c])["ffdnet_sigma"]["psnr"] > t["router"]["psnr"]]
    rows.append(("router ≥ FFDNet told the true σ (cases with noise)",
                 "met" if not behind else f"behind on {len(behind)}/{len(noise)}: " + "; ".join(behind),
                 not behind if noise else None))
    gaps = {c: t["oracle"]["psnr"] - t["router"]["psnr"] for c, t in table.items() if "oracle" in t}
    far = [f"{c} ({g:.2f} dB)" for c, g in gaps.items() if g > 0.2]
    mean_gap = sum(gaps.values()) / len(gaps) if gaps else float("nan")
    rows.append(("router within 0.2 dB of the oracle LoRA (every case)",
                 f"mean gap {mean_gap:.2f} dB; over 0.2 dB on {len(far)}/{len(gaps)}" + (": " + "; ".join(far) if far
                                                                                       else ""),
                 (not far) if gaps else None))
    multi, router, oracle = (_mean(table, m, "psnr") for m in ("multitask", "router", "oracle"))
    rows.append(("LoRA bank ≥ multi-task baseline on average (PSNR)",
                 "not run" if multi is None else f"router {router:.2f}, oracle {oracle:.2f}, multi-task {multi:.2f} dB",
                 None if multi is None else router >= multi))
    ratio = speed.get("routing_composition_ratio") if speed else None
    rows.append(("routing + composition ≤ 1.3× the bare backbone's CPU time (512²)",
                 "not measured" if ratio is None else f"{ratio:.2f}×", None if ratio is None else ratio <= 1.3))
    peak = speed.get("big_image", {}).get("peak_rss_gb") if speed else None
    rows.append(("4000×3000 image under 3 GB peak memory",
                 "not measured" if peak is None else f"{peak:.2f} GB peak RSS", None if peak is None else peak < 3.0))
    return rows


def goals_markdown(rows: Sequence[tuple[str, str, bool | None]]) -> str:
    marks = {True: "yes", False: "**no**", None: "–"}
    lines = ["| goal | measured | met |", "|---|---|---|"]
    lines += [f"| {goal} | {measured} | {marks[met]} |" for goal, measured, met in rows]
    return "\n".join(lines)


def replace_section(path: Path, section: str, body: str, title: str = "# Benchmarks") -> None:
    """Write ``body`` between this section's markers in ``path`` (appending the markers if absent)."""
    begin, end = f"<!-- BEGIN GENERATED: {section} -->", f"<!-- END GENERATED: {section} -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.is_file() else f"{title}\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + f"\n\n{block}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def mean_gain_lines(gains: Mapping[str, Mapping[str, Sequence[float]]], overall: bool = False) -> list[str]:
    """One line per case of ``gains`` [case][column] -> values: each column's mean (dB, signed); with
    ``overall``, a last line of each column's mean over every value of every case."""
    width = max((len(case) for case in gains), default=0) + 2
    lines = [case.ljust(width) + "".join(f"  {name} {sum(v) / len(v):+.2f}" for name, v in sorted(columns.items()))
             for case, columns in gains.items()]
    if overall:
        pooled: dict[str, list[float]] = {}
        for columns in gains.values():
            for name, values in columns.items():
                pooled.setdefault(name, []).extend(values)
        lines.append("mean over cases" + "".join(f"  {name} {sum(v) / len(v):+.3f}"
                                                 for name, v in sorted(pooled.items())))
    return lines


def load_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None
