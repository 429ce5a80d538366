"""The dashboard's two plots, drawn on the server as SVG with matplotlib (no display, no browser code).

Server-side so the page needs no charting script and no CDN. Each plot is its own ``Figure`` (not
pyplot, whose figure registry is global state shared by the request threads); matplotlib is imported
on the first plot, not when the backend starts.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

KINDS = (("bbox_AP", "boxes"), ("segm_AP", "masks"), ("keypoints_AP", "keypoints"))
_SIZE = (6.4, 2.6)  # inches at 100 dpi: fits the dashboard's column


def heldout_ap_svg(versions: Sequence[dict[str, Any]]) -> bytes:
    """COCO AP per version: held-out (solid, what matters) and training-set fit (dotted, did it learn).

    ``versions`` are :meth:`backend.model_store.ModelStore.version_summaries`, oldest first.
    """
    labels = [str(v["version"]).split("-")[0] for v in versions]
    fig, ax = _figure()
    for n, (key, name) in enumerate(KINDS):
        for field, style, suffix in (("heldout", "-o", "held-out"), ("training_set_fit", ":.", "training set")):
            values = [_score(v.get(field), key) for v in versions]
            if any(x is not None for x in values):
                ys = [float("nan") if x is None else x for x in values]
                ax.plot(range(len(labels)), ys, style, color=f"C{n}", label=f"{name} ({suffix})")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylim(0, 1)
    ax.set_ylabel("COCO AP")
    ax.set_title("Scores per model version")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", ncols=2)
    else:
        ax.text(0.5, 0.5, "no scores yet", ha="center", va="center", transform=ax.transAxes)
    return _svg(fig)


def loss_svg(history: Sequence[Sequence[float | None]], total: int | None) -> bytes:
    """The current run's total training loss per step (``[[step, loss], ...]``, from the run status)."""
    from matplotlib.ticker import MaxNLocator

    fig, ax = _figure()
    points = [(step, loss) for step, loss in history if step is not None and loss is not None]
    if points:
        ax.plot([s for s, _ in points], [loss for _, loss in points], ".-", color="C3", markersize=4)
    else:
        ax.text(0.5, 0.5, "no training steps yet", ha="center", va="center", transform=ax.transAxes)
    if total:
        ax.set_xlim(0, total)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers, even in a 4-step run
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Training loss of the current run")
    return _svg(fig)


def _score(scores: object, key: str) -> float | None:
    value = scores.get(key) if isinstance(scores, dict) else None
    return float(value) if isinstance(value, int | float) and value == value else None  # NaN: not a score


def _figure() -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=_SIZE, dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.grid(alpha=0.3)
    return fig, ax


def _svg(fig: Any) -> bytes:
    """SVG with its labels as text (the browser's font draws them; 5x smaller than glyph outlines)."""
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    return buf.getvalue()
