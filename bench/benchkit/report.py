"""Turn per-round samples into ratios and verdicts, and render them as text, JSON and Markdown."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchkit.harness import Sample, Spread, spread

MEETS_TARGET = "meets target"
MEETS_FLOOR = "meets floor"
BELOW_FLOOR = "below floor"
NOT_MEASURED = "not measured"
INFO = "info"
_RANK = {MEETS_TARGET: 0, MEETS_FLOOR: 1, BELOW_FLOOR: 2}

# A target whose error responses exceed this share of its requests measured an error path, not the
# endpoint: its figures are void and the run is a correctness failure.
MAX_BAD_SHARE = 0.005


@dataclass(frozen=True)
class RatioSpec:
    """numerator / denominator, measured round by round. No target/floor means informational."""

    label: str
    numerator: str
    denominator: str
    target: float | None = None
    floor: float | None = None


@dataclass(frozen=True)
class LimitSpec:
    """A figure where lower is better (a latency, a start-up time, a share of a time budget), judged
    against fixed limits. `figure` names a list of values, one per repetition, passed to evaluate().
    No target/floor means informational."""

    label: str
    figure: str
    unit: str
    target: float | None = None
    floor: float | None = None


@dataclass(frozen=True)
class GoalSpec:
    id: str
    title: str
    ratios: Sequence[RatioSpec] = ()
    limits: Sequence[LimitSpec] = ()


@dataclass(frozen=True)
class RatioResult:
    spec: RatioSpec
    value: Spread | None
    verdict: str
    below_half_floor: bool


@dataclass(frozen=True)
class LimitResult:
    spec: LimitSpec
    value: Spread | None
    verdict: str
    beyond_twice_floor: bool  # a lower-is-better figure's "below half its floor"


@dataclass(frozen=True)
class GoalResult:
    spec: GoalSpec
    ratios: list[RatioResult]
    limits: list[LimitResult] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """A goal is only as good as its worst required figure; unmeasured parts leave it open."""
        graded = [r.verdict for r in self.ratios if r.spec.floor is not None]
        graded += [r.verdict for r in self.limits if r.spec.floor is not None]
        if not graded or NOT_MEASURED in graded:
            return NOT_MEASURED
        return max(graded, key=_RANK.__getitem__)

    @property
    def under_half_strength(self) -> bool:
        """Below half a floor (for a ratio) or beyond twice a floor (for a lower-is-better figure):
        what --smoke fails on, since a noisy CI machine easily costs a factor below two."""
        required = [r.below_half_floor for r in self.ratios if r.spec.floor is not None]
        required += [r.beyond_twice_floor for r in self.limits if r.spec.floor is not None]
        return any(required)


def invalid_targets(samples: Mapping[str, Sequence[Sample]]) -> dict[str, str]:
    """Targets that answered with errors under load (status >= 400 or socket errors)."""
    bad: dict[str, str] = {}
    for name, runs in samples.items():
        requests = sum(s.requests for s in runs)
        errors = sum(s.bad_status + s.socket_errors for s in runs)
        if requests and errors > MAX_BAD_SHARE * requests:
            bad[name] = f"{errors} of {requests} requests failed under load"
    return bad


def evaluate(
    goals: Sequence[GoalSpec],
    samples: Mapping[str, Sequence[Sample]],
    figures: Mapping[str, Sequence[float]] | None = None,
) -> list[GoalResult]:
    void = invalid_targets(samples)
    figures = figures or {}
    return [
        GoalResult(
            goal,
            [_ratio(spec, samples, void) for spec in goal.ratios],
            [_limit(spec, figures) for spec in goal.limits],
        )
        for goal in goals
    ]


def _limit(spec: LimitSpec, figures: Mapping[str, Sequence[float]]) -> LimitResult:
    values = figures.get(spec.figure, [])
    if not values:
        return LimitResult(spec, None, NOT_MEASURED, False)
    value = spread(values)
    if spec.floor is None or spec.target is None:
        return LimitResult(spec, value, INFO, False)
    verdict = (
        MEETS_TARGET if value.median <= spec.target else MEETS_FLOOR if value.median <= spec.floor else BELOW_FLOOR
    )
    return LimitResult(spec, value, verdict, value.median > 2 * spec.floor)


def _ratio(spec: RatioSpec, samples: Mapping[str, Sequence[Sample]], void: Mapping[str, str]) -> RatioResult:
    top, bottom = samples.get(spec.numerator, []), samples.get(spec.denominator, [])
    # Ratios are taken within each round (both sides measured minutes apart at most) and then the
    # median is taken: this cancels slow drift of a shared machine better than a ratio of medians.
    pairs = [a.rate / b.rate for a, b in zip(top, bottom, strict=False) if b.rate > 0]
    if not pairs or spec.numerator in void or spec.denominator in void:
        return RatioResult(spec, None, NOT_MEASURED, False)
    value = spread(pairs)
    if spec.floor is None or spec.target is None:
        return RatioResult(spec, value, INFO, False)
    verdict = (
        MEETS_TARGET if value.median >= spec.target else MEETS_FLOOR if value.median >= spec.floor else BELOW_FLOOR
    )
    return RatioResult(spec, value, verdict, value.median < spec.floor / 2)


# ----------------------------------------------------------------------------------------- render


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def target_rows(samples: Mapping[str, Sequence[Sample]]) -> list[list[str]]:
    void = invalid_targets(samples)
    rows = []
    for name, runs in samples.items():
        if not runs:
            continue
        rate = spread([s.rate for s in runs])
        p50 = [s.p50_ms for s in runs if s.p50_ms is not None]
        p99 = [s.p99_ms for s in runs if s.p99_ms is not None]
        rows.append(
            [
                name,
                _fmt(rate.median),
                f"{_fmt(rate.low)} - {_fmt(rate.high)}",
                _fmt(spread(p50).median if p50 else None, 2),
                _fmt(spread(p99).median if p99 else None, 2),
                void.get(name, "ok"),
            ]
        )
    return rows


def goal_rows(results: Sequence[GoalResult]) -> list[list[str]]:
    rows = []
    for goal in results:
        for r in goal.ratios:
            v = r.value
            rows.append(
                [
                    goal.spec.id,
                    r.spec.label,
                    _fmt(v.median if v else None, 2),
                    f"{_fmt(v.low, 2)} - {_fmt(v.high, 2)}" if v else "-",
                    _fmt(r.spec.target, 2),
                    _fmt(r.spec.floor, 2),
                    r.verdict,
                ]
            )
    return rows


def limit_rows(results: Sequence[GoalResult]) -> list[list[str]]:
    rows = []
    for goal in results:
        for r in goal.limits:
            v = r.value
            rows.append(
                [
                    goal.spec.id,
                    r.spec.label,
                    _fmt(v.median if v else None, 3),
                    f"{_fmt(v.low, 3)} - {_fmt(v.high, 3)}" if v else "-",
                    r.spec.unit,
                    _fmt(r.spec.target, 2),
                    _fmt(r.spec.floor, 2),
                    r.verdict,
                ]
            )
    return rows


TARGET_HEADER = ["target", "req/s (median)", "min - max", "p50 ms", "p99 ms", "errors"]
GOAL_HEADER = ["goal", "ratio", "median", "min - max", "target", "floor", "verdict"]
LIMIT_HEADER = ["goal", "figure (lower is better)", "median", "min - max", "unit", "target", "floor", "verdict"]


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [line.format(*header), line.format(*("-" * w for w in widths)), *(line.format(*row) for row in rows)]
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(out)


def to_json(
    meta: Mapping[str, Any],
    samples: Mapping[str, Sequence[Sample]],
    results: Sequence[GoalResult],
    notes: Sequence[str],
    failures: Sequence[str],
    figures: Mapping[str, Sequence[float]] | None = None,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "meta": dict(meta),
        "targets": {
            name: {
                "rounds": [s.__dict__ for s in runs],
                "rate": spread([s.rate for s in runs]).as_dict() if runs else None,
            }
            for name, runs in samples.items()
        },
        "goals": [
            {
                "id": g.spec.id,
                "title": g.spec.title,
                "verdict": g.verdict,
                "ratios": [
                    {
                        "label": r.spec.label,
                        "numerator": r.spec.numerator,
                        "denominator": r.spec.denominator,
                        "target": r.spec.target,
                        "floor": r.spec.floor,
                        "value": r.value.as_dict() if r.value else None,
                        "verdict": r.verdict,
                    }
                    for r in g.ratios
                ],
                "limits": [
                    {
                        "label": r.spec.label,
                        "figure": r.spec.figure,
                        "unit": r.spec.unit,
                        "target": r.spec.target,
                        "floor": r.spec.floor,
                        "value": r.value.as_dict() if r.value else None,
                        "verdict": r.verdict,
                    }
                    for r in g.limits
                ],
            }
            for g in results
        ],
        "figures": {name: list(values) for name, values in (figures or {}).items()},
        "details": dict(details or {}),
        "notes": list(notes),
        "correctness_failures": list(failures),
    }


def to_markdown(
    meta: Mapping[str, Any],
    samples: Mapping[str, Sequence[Sample]],
    results: Sequence[GoalResult],
    notes: Sequence[str],
    failures: Sequence[str],
    title: str = "Lanyard token-minting benchmark",
    details: Mapping[str, Any] | None = None,
) -> str:
    parts = [f"# {title} ({meta.get('mode')})", ""]
    parts += [f"- **{k}**: {v}" for k, v in meta.items()]
    parts += ["", "## Verdicts", ""]
    parts += [f"- **{g.spec.id}** {g.spec.title}: **{g.verdict}**" for g in results]
    parts += [
        "",
        "## Ratios (per-round ratio, median and min - max over rounds)",
        "",
        markdown_table(GOAL_HEADER, goal_rows(results)),
        "",
    ]
    if any(g.limits for g in results):
        parts += [
            "## Figures (median and min - max over repetitions)",
            "",
            markdown_table(LIMIT_HEADER, limit_rows(results)),
            "",
        ]
    parts += ["## Targets", "", markdown_table(TARGET_HEADER, target_rows(samples)), ""]
    if details:
        parts += ["## Details", "", *(f"- **{k}**: {v}" for k, v in details.items()), ""]
    if failures:
        parts += ["## Correctness failures", "", *(f"- {f}" for f in failures), ""]
    if notes:
        parts += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    return "\n".join(parts)


def write(out_dir: Path, stem: str, payload: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")
    md_path.write_text(markdown)
    return json_path, md_path
