"""Figures, targets and the printed table."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Target:
    """A goal from the performance issue: ``value`` is a minimum when ``at_least``."""

    value: float
    at_least: bool = True
    relative_to: str | None = None  # the goal is value × that figure's median (e.g. 0.85×raw)

    def goal(self, figures: dict[str, "Figure"]) -> float | None:
        if self.relative_to is None:
            return self.value
        base = figures.get(self.relative_to)
        return self.value * base.median if base and base.samples else None

    def text(self, figures: dict[str, "Figure"]) -> str:
        goal = self.goal(figures)
        sign = "≥" if self.at_least else "≤"
        if self.relative_to:
            return (f"{sign}{self.value:.0%} of {self.relative_to}"
                    + (f" ({fmt(goal)})" if goal is not None else ""))
        return f"{sign}{fmt(goal)}"


@dataclass
class Figure:
    """One measured quantity: a sample per repetition."""

    key: str
    label: str
    unit: str
    higher_is_better: bool = True
    baseline: str | None = None  # key of the raw-SQL figure this one is compared to
    target: Target | None = None
    samples: list[float] = field(default_factory=list)
    # figure ÷ its baseline measured right before it in the same repetition: robust to the
    # load of a shared machine drifting between repetitions
    paired_ratios: list[float] = field(default_factory=list)
    unavailable: str | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def verdict(self, figures: dict[str, "Figure"]) -> str:
        if self.target is None or not self.samples:
            return ""
        goal = self.target.goal(figures)
        if goal is None:
            return "baseline missing"
        value = self.median
        met = value >= goal if self.target.at_least else value <= goal
        if met:
            return "met"
        if self.target.at_least:
            return f"MISSED by {1 - value / goal:.0%} (needs {goal / value:.1f}×)" if value else \
                "MISSED"
        return f"MISSED by {value - goal:.3g} {self.unit} ({value / goal:.1f}× the limit)"


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


class Registry:
    """Ordered figures of one run."""

    def __init__(self) -> None:
        self.figures: dict[str, Figure] = {}

    def figure(self, key: str, label: str, unit: str, **options) -> Figure:
        if key not in self.figures:
            self.figures[key] = Figure(key, label, unit, **options)
        return self.figures[key]

    def add(self, key: str, value: float) -> None:
        self.figures[key].samples.append(float(value))

    def unavailable(self, key: str, label: str, unit: str, why: str, **options) -> None:
        self.figure(key, label, unit, **options).unavailable = why

    def paired(self, key: str, value: float, baseline_value: float) -> None:
        """A sample of ``key`` and the ratio to its baseline measured just before it."""
        fig = self.figures[key]
        fig.samples.append(float(value))
        fig.paired_ratios.append(value / baseline_value)

    def ratio_value(self, fig: Figure) -> float | None:
        if fig.paired_ratios:
            return statistics.median(fig.paired_ratios)
        base = self.figures.get(fig.baseline) if fig.baseline else None
        if not fig.samples or not base or not base.samples or not base.median:
            return None
        return fig.median / base.median

    def ratio(self, fig: Figure) -> str:
        value = self.ratio_value(fig)
        if value is None:
            return ""
        how = " (paired)" if fig.paired_ratios else ""
        return f"{value:.2f}× {fig.baseline}{how}"

    def table(self) -> str:
        header = ("figure", "median", "min–max", "unit", "vs raw baseline", "target", "verdict")
        rows = []
        for fig in self.figures.values():
            if fig.unavailable:
                rows.append((fig.key, "-", "-", fig.unit, "", "",
                             f"not available: {fig.unavailable}"))
                continue
            if not fig.samples:
                rows.append((fig.key, "-", "-", fig.unit, "", "", "no samples"))
                continue
            spread = f"{fmt(min(fig.samples))}–{fmt(max(fig.samples))}"
            rows.append((fig.key, fmt(fig.median), spread, fig.unit, self.ratio(fig),
                         fig.target.text(self.figures) if fig.target else "",
                         fig.verdict(self.figures)))
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(header, widths))]
        lines.append("  ".join("-" * width for width in widths))
        lines.extend("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in rows)
        legend = [f"  {fig.key}: {fig.label}" + (f" — {fig.note}" if fig.note else "")
                  for fig in self.figures.values()]
        return "\n".join(lines + ["", "Figures:"] + legend)

    def to_json(self) -> str:
        out = []
        for fig in self.figures.values():
            record = asdict(fig)
            record["target"] = fig.target.text(self.figures) if fig.target else None
            record["median"] = fig.median if fig.samples else None
            record["min"] = min(fig.samples) if fig.samples else None
            record["max"] = max(fig.samples) if fig.samples else None
            record["ratio_to_baseline"] = self.ratio(fig) or None
            record["verdict"] = fig.verdict(self.figures) or None
            out.append(record)
        return json.dumps(out, indent=2)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def markdown(records: list[dict]) -> str:
    """A Markdown table of a ``--json`` file (for docs/benchmarks.md)."""
    lines = ["| figure | median | min–max | unit | vs raw baseline | target | verdict |",
             "| --- | ---: | --- | --- | --- | --- | --- |"]
    for r in records:
        if r["unavailable"]:
            lines.append(f"| `{r['key']}` | – | – | {r['unit']} | | | "
                         f"not available: {r['unavailable']} |")
        elif r["median"] is not None:
            lines.append(f"| `{r['key']}` | {fmt(r['median'])} | {fmt(r['min'])}–"
                         f"{fmt(r['max'])} | {r['unit']} | {r['ratio_to_baseline'] or ''} | "
                         f"{r['target'] or ''} | {r['verdict'] or ''} |")
    notes = [f"* `{r['key']}`: {r['note']}" for r in records if r.get("note")]
    return "\n".join(lines + ([""] + notes if notes else []))


if __name__ == "__main__":
    import sys

    print(markdown(json.loads(open(sys.argv[1]).read())))
