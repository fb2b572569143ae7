"""The hook page's chart, drawn on the server as SVG geometry: no script draws it, so the
strict Content-Security-Policy holds and the picture is there without JavaScript."""

from __future__ import annotations

from dataclasses import dataclass

from crohooks.delivery.insights import CHARTED, HourCount

WIDTH = 720
HEIGHT = 200
_LEFT = 40
_BOTTOM = 24
_TOP = 8


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    status: str
    label: str


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    ticks: list[Tick]
    peak: int
    baseline: float
    left: float


def hourly_chart(hours: list[HourCount]) -> Chart:
    """Stacked bars per hour, succeeded at the bottom, then failed, then pending."""
    peak = max((hour.total for hour in hours), default=0)
    scale_top = max(peak, 1)
    plot_height = HEIGHT - _BOTTOM - _TOP
    slot = (WIDTH - _LEFT) / max(len(hours), 1)
    baseline = HEIGHT - _BOTTOM
    bars: list[Bar] = []
    ticks: list[Tick] = []
    for index, hour in enumerate(hours):
        x = _LEFT + index * slot + slot * 0.1
        stacked = 0.0
        for status in CHARTED:
            count = hour.counts.get(status.value, 0)
            if not count:
                continue
            height = plot_height * count / scale_top
            stacked += height
            bars.append(
                Bar(
                    x=round(x, 1),
                    y=round(baseline - stacked, 1),
                    width=round(slot * 0.8, 1),
                    height=round(height, 1),
                    status=status.value,
                    label=f"{hour.start:%H}:00 UTC: {count} {status.value}",
                )
            )
        if index % 3 == 0:
            ticks.append(Tick(x=round(x + slot * 0.4, 1), label=f"{hour.start:%H}h"))
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        bars=bars,
        ticks=ticks,
        peak=peak,
        baseline=baseline,
        left=_LEFT,
    )
