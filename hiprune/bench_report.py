"""``hiprune-bench``'s report: per-stage medians and p90s, speed-up ratios, and the JSON / Markdown / PNG files.

Kept apart from the measuring code so the report's shape is one small, documented thing (see docs/bench.md).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hiprune.artifacts import publish
from hiprune.runtime.llm.base import STAGES as CHAIN_STAGES

REPORT_FORMAT = "hiprune-bench/1"
BAR_STAGES = ("preprocess", "encoder", "splice", "prefill")  # ttft = these + what the chain spends between them
FILES = ("bench.json", "bench.md", "bench.png")


def summarize(samples: Sequence[float | None]) -> dict[str, float] | None:
    """Median and 90th percentile (ms, 3 decimals) of the measured samples; ``None`` when a stage was not timed."""
    values = [float(v) for v in samples if v is not None]
    if not values:
        return None
    return {
        "median": round(float(np.median(values)), 3),
        "p90": round(float(np.percentile(values, 90)), 3),
        "n": len(values),
    }


def budget_entry(label: str, kept: int, chain: dict[str, list], ideal: dict[str, list], extra: dict) -> dict:
    """One budget's block: chain stages and the component ideal (encoder and prefill timed on their own)."""
    stages = {stage: summarize(chain.get(stage, [])) for stage in CHAIN_STAGES}
    ttfts = chain.get("ttft", [])
    middle = sorted(range(len(ttfts)), key=lambda i: ttfts[i])[(len(ttfts) - 1) // 2] if ttfts else None
    parts = {part: summarize(ideal[part]) for part in ("encoder", "prefill")}
    ideal_ttft = sum(p["median"] for p in parts.values() if p is not None)
    return {
        "budget": label,
        "kept_tokens": kept,
        **extra,
        "chain_ms": stages,
        "median_run_ms": {s: _round(chain[s][middle]) for s in CHAIN_STAGES if middle is not None and s in chain},
        "ideal_ms": {**parts, "ttft": round(ideal_ttft, 3)},
        "samples_ms": {
            "chain": {s: [_round(v) for v in chain[s]] for s in CHAIN_STAGES if s in chain},
            "ideal": {part: [_round(v) for v in values] for part, values in ideal.items()},
        },
    }


def speedups(budgets: list[dict]) -> dict[str, dict[str, Any]]:
    """TTFT of ``full`` over each pruned budget, through the chain and ideally; ``chain_over_ideal`` near 1 means
    the runtime keeps the gain the components promise, and ``chain_over_ideal_90ci`` says how far the rounds' noise
    alone moves it. Empty when no ``full`` budget was measured."""
    full = next((b for b in budgets if b["budget"] == "full"), None)
    if full is None:
        return {}
    out = {}
    for entry in budgets:
        if entry is full:
            continue
        chain = full["chain_ms"]["ttft"]["median"] / entry["chain_ms"]["ttft"]["median"]
        ideal = full["ideal_ms"]["ttft"] / entry["ideal_ms"]["ttft"]
        out[entry["budget"]] = {
            "chain_ttft_full_over_pruned": round(chain, 3),
            "ideal_ttft_full_over_pruned": round(ideal, 3),
            "chain_over_ideal": round(chain / ideal, 3),
            "chain_over_ideal_90ci": bootstrap_interval(full, entry),
        }
    return out


def bootstrap_interval(full: dict, pruned: dict, draws: int = 2000, seed: int = 0) -> list[float] | None:
    """The 5th and 95th percentiles of ``chain_over_ideal`` over ``draws`` resamplings of the measured rounds.

    Whole rounds are drawn (every budget ran once per round, chain and ideal back to back), so what drifts
    between rounds stays paired. ``None`` with fewer than 3 rounds or without per-round samples.
    """
    if "samples_ms" not in full or "samples_ms" not in pruned:
        return None
    series = [
        entry["samples_ms"][kind][stage]
        for entry in (full, pruned)
        for kind, stage in (("chain", "ttft"), ("ideal", "encoder"), ("ideal", "prefill"))
    ]
    rounds = {len(values) for values in series}
    if len(rounds) != 1 or min(rounds) < 3 or any(v is None for values in series for v in values):
        return None
    columns = [np.asarray(values, dtype=float) for values in series]
    picks = np.random.default_rng(seed).integers(0, rounds.pop(), size=(draws, len(columns[0])))
    full_chain, full_encoder, full_prefill, chain, encoder, prefill = (np.median(c[picks], axis=1) for c in columns)
    ratio = (full_chain / chain) / ((full_encoder + full_prefill) / (encoder + prefill))
    low, high = np.percentile(ratio, [5, 95])
    return [round(float(low), 3), round(float(high), 3)]


def markdown(report: dict[str, Any]) -> str:
    """The table users paste: one row per budget, medians (p90) in ms, then the ratios."""
    head = ["budget", "kept", "prompt", *CHAIN_STAGES, "ideal enc+prefill"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for entry in report["budgets"]:
        cells = [entry["budget"], str(entry["kept_tokens"]), str(entry.get("prompt_tokens", ""))]
        cells += [_cell(entry["chain_ms"][stage]) for stage in CHAIN_STAGES]
        cells.append(f"{entry['ideal_ms']['ttft']:.1f}")
        rows.append("| " + " | ".join(cells) + " |")
    lines = [
        f"**{report['model']}** · target `{report['target']}` · LLM `{report['runtimes']['llm']}` · "
        f"{report['device']['name']} · {report['settings']['repeats']} interleaved repeats, medians (p90) in ms",
        "",
        *rows,
    ]
    for budget, ratio in report["speedups"].items():
        lines.append("")
        lines.append(
            f"- TTFT full / {budget}: chain **{ratio['chain_ttft_full_over_pruned']:.2f}x**, component ideal "
            f"{ratio['ideal_ttft_full_over_pruned']:.2f}x (chain keeps {ratio['chain_over_ideal']:.0%} of it"
            f"{interval_text(ratio.get('chain_over_ideal_90ci'))})"
        )
    return "\n".join(lines) + "\n"


def interval_text(interval: list[float] | None) -> str:
    """``chain_over_ideal_90ci`` as the report and the terminal say it (empty without an interval)."""
    return "" if interval is None else f"; 90% bootstrap interval over rounds {interval[0]:.0%}–{interval[1]:.0%}"


def _cell(summary: dict[str, float] | None) -> str:
    return "–" if summary is None else f"{summary['median']:.1f} ({summary['p90']:.1f})"


def plot(report: dict[str, Any], path: Path) -> None:
    """TTFT per budget stacked by stage (the chain run with the median TTFT), the component ideal beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = report["budgets"]
    x = np.arange(len(budgets))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(budgets), 4.2))
    bottom = np.zeros(len(budgets))
    for stage in BAR_STAGES:
        values = np.array([b["median_run_ms"].get(stage) or 0.0 for b in budgets])
        ax.bar(x - 0.2, values, 0.38, bottom=bottom, label=f"chain: {stage}")
        bottom += values
    low = np.array([_median(b["ideal_ms"]["encoder"]) for b in budgets])
    ax.bar(x + 0.2, low, 0.38, color="white", edgecolor="C1", hatch="//", label="ideal: encoder")
    ax.bar(x + 0.2, [_median(b["ideal_ms"]["prefill"]) for b in budgets], 0.38, bottom=low, color="white",
           edgecolor="C3", hatch="..", label="ideal: prefill")  # fmt: skip
    ax.set_xticks(x, [f"{b['budget']}\n({b['kept_tokens']} tokens)" for b in budgets])
    ax.set_ylabel("time to first token (ms)")
    ax.set_title(f"TTFT by budget · {report['runtimes']['llm']} · {report['device']['name']}", fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _median(summary: dict[str, float] | None) -> float:
    return 0.0 if summary is None else summary["median"]


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Writes bench.json, bench.md and bench.png into ``out``; each appears whole (temp file, then rename)."""
    out.mkdir(parents=True, exist_ok=True)
    writers: dict[str, Callable[[Path], object]] = {
        "bench.json": lambda p: p.write_text(json.dumps(report, indent=2) + "\n"),
        "bench.md": lambda p: p.write_text(markdown(report)),
        "bench.png": lambda p: plot(report, p),
    }
    staged: dict[str, Path] = {}
    try:
        for name, write in writers.items():
            handle, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=Path(name).suffix, dir=out)
            os.close(handle)
            staged[name] = Path(tmp_name)
            write(staged[name])
        for name, path in staged.items():
            publish(path, out / name)
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)
    return {name: out / name for name in FILES}
