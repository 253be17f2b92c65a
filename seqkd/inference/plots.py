"""The speed/quality frontier figure, shared by `seqkd bench` and the reproduce report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Point:
    """One measurement: x per panel (e.g. {"sent_per_s": 310.0, "p50_ms": 4.1}), its BLEU, and whether
    it is drawn filled (greedy) or hollow (beam)."""

    x: dict[str, float]
    bleu: float
    filled: bool = True


@dataclass
class Series:
    """One system (one legend entry): a colour and marker shared by all its points. `style` = (colour
    index, marker index) lets related series share a colour or a marker (e.g. marker = model, colour =
    engine); by default each series gets its own pair."""

    label: str
    points: list[Point] = field(default_factory=list)
    style: tuple[int, int] | None = None


@dataclass
class Panel:
    """One axis: the Point.x key it plots, its label, and +1 if larger x is better (throughput) or -1
    if smaller is (latency)."""

    key: str
    xlabel: str
    better: int = 1


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both coordinates (higher x and higher y), by x."""
    front = [i for i, (x, y) in enumerate(points)
             if not any((x2 >= x and y2 >= y) and (x2, y2) != (x, y) for x2, y2 in points)]
    return sorted(front, key=lambda i: points[i][0])


def frontier_plot(series: list[Series], panels: list[Panel], path: str | Path, title: str,
                  legend_cols: int = 1) -> None:
    """BLEU against each panel's x (log scale), one colour x marker per series with a legend (no stacked
    labels), the Pareto front over all points drawn as a dashed line. Panels whose key some point lacks
    are left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts_all = [p for s in series for p in s.points]
    panels = [pn for pn in panels if pts_all and all(pn.key in p.x for p in pts_all)]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(7 * max(1, len(panels)) + 4, 5.5), squeeze=False)
    cmap = plt.get_cmap("tab10")
    markers = "osD^v<>ph*"
    for ax, pn in zip(axes[0], panels):
        xy = []
        for i, s in enumerate(series):  # colour x marker: a unique symbol for up to 100 series
            ci, mi = s.style or (i % 10, i // 10)
            color, mk = cmap(ci % 10), markers[mi % len(markers)]
            for filled in (True, False):  # one scatter call per series and fill: 100 points draw in one
                pts = [p for p in s.points if p.filled == filled]
                if pts:
                    kw = {"color": color} if filled else {"facecolors": "none", "edgecolors": [color]}
                    first = pts[0] is s.points[0]
                    ax.scatter([p.x[pn.key] for p in pts], [p.bleu for p in pts], marker=mk,
                               label=s.label if first else None, **kw)
            xy += [(p.x[pn.key], p.bleu) for p in s.points]
        front = pareto([(pn.better * x, y) for x, y in xy])
        ax.plot([xy[i][0] for i in front], [xy[i][1] for i in front], "k--", lw=1, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel(pn.xlabel)
        ax.set_ylabel("BLEU")
    axes[0][0].set_title(title)
    axes[0][-1].legend(fontsize=6, ncol=legend_cols, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
