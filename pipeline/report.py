"""Human-facing output: the timeline as a table, and as a PNG of probabilities over time per participant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.shared.labels import DFEW_LABELS

# What the timeline's columns mean, printed under it: numbers a reader cannot interpret mislead.
KEY = """\
conf     the label's probability after fusing face and voice (0-1; 1/7 = 0.14 is no better than a guess)
face     a trusted face was seen in the segment; speech: enough of its audio was speech to be heard
arousal  how activated the voice sounds, 0 calm .. 1 agitated (prosody, or a voice net where one is
         served); - without speech
top-2    the two most probable of the seven labels"""


def format_timeline(rows: list[dict]) -> str:
    lines = [f"{'time':>13}  {'participant':<12} {'label':<9} {'conf':>5}  face speech arousal  top-2"]
    for r in rows:
        span = f"{r['start_ms'] / 1000:6.1f}-{r['end_ms'] / 1000:<6.1f}"
        if r["label"] is None:
            why = "no media" if r.get("media") == "none" else "no face, no speech"
            lines.append(f"{span}  {r['participant']:<12} {'(none)':<9} {'':>5}  {'-':<4} {'-':<6} {'':>7}  {why}")
            continue
        probs = sorted(((r[label], label) for label in DFEW_LABELS), reverse=True)[:2]
        top = ", ".join(f"{label} {p:.2f}" for p, label in probs)
        arousal = f"{r['arousal']:.2f}" if r["arousal"] is not None else "-"
        lines.append(f"{span}  {r['participant']:<12} {r['label']:<9} {r['confidence']:5.2f}  "
                     f"{'yes' if r['face_found'] else 'no':<4} {'yes' if r['speech_found'] else 'no':<6} "
                     f"{arousal:>7}  {top}")
    return "\n".join(lines)


def format_explained(rows: list[dict], said: dict[tuple[str, int], str] | None) -> str:
    """Per labelled segment, the one line of evidence behind its label, with the words said in it
    where they are stored and readable (`said` None: this login may not read transcripts)."""
    lines = []
    for r in rows:
        if r["label"] is None:
            continue
        quote = (said or {}).get((r["participant"], r["start_ms"]))
        why = (r.get("why") or "").replace("; fused: " + r["label"], "")
        lines.append(f"{r['start_ms'] / 1000:g}-{r['end_ms'] / 1000:g} s  {r['participant']:<12} {r['label']:<8} "
                     f"{r['confidence']:.2f}  {why}" + (f'; said "{quote}"' if quote else ""))
    if said is None:
        lines.append("(the words said are not shown: this login is not a member of callstream_transcripts)")
    return "\n".join(lines)


def format_summary(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        # Labelled seconds, of the seconds with rows: a call whose media gave nothing to label (no face,
        # no speech) must not read as analysed.
        lines.append(f"  {r['participant']} ({r['role']}): {float(r['observed_seconds']):5.1f}s labelled of "
                     f"{float(r['seconds']):.1f}s, "
                     f"dominant {r['dominant_label'] or '-'}, "
                     f"happy {float(r['happy_seconds']):.1f}s, angry {float(r['angry_seconds']):.1f}s, "
                     f"face in {float(r['face_coverage']) * 100:.0f}% / speech in "
                     f"{float(r['speech_coverage']) * 100:.0f}% of segments")
    return "\n".join(lines)


def plot_timeline(rows: list[dict], out: Path, title: str) -> Path:
    import matplotlib.pyplot as plt

    fig = timeline_figure(rows, title)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def timeline_figure(rows: list[dict], title: str) -> Any:
    """Per participant, the seven probabilities, the voice's arousal (dashed, on the same 0-1 scale) and
    where they spoke (a band under the curves); one legend for all, under the plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    tracks = sorted({r["participant"] for r in rows})
    height = 1.4 + 2.6 * len(tracks)
    fig, axes = plt.subplots(len(tracks), 1, figsize=(11, height), sharex=True, squeeze=False)
    for ax, track in zip(axes[:, 0], tracks, strict=True):
        mine = [r for r in rows if r["participant"] == track]
        xs = [(r["start_ms"] + r["end_ms"]) / 2000 for r in mine]
        for label in DFEW_LABELS:
            ax.plot(xs, [r[label] if r[label] is not None else float("nan") for r in mine], label=label, lw=1.5)
        # Arousal on the same 0-1 scale, dashed; speech as a band under the curves.
        ax.plot(xs, [r["arousal"] if r.get("arousal") is not None else float("nan") for r in mine], color="black",
                ls="--", lw=1.2, label="arousal (voice, 0 calm .. 1 agitated)")
        for r in mine:
            if r["label"] is None:
                ax.axvspan(r["start_ms"] / 1000, r["end_ms"] / 1000, color="0.9", lw=0)
            if r.get("speech_found"):
                ax.axvspan(r["start_ms"] / 1000, r["end_ms"] / 1000, ymin=0, ymax=0.04, color="tab:blue", lw=0,
                           alpha=0.6)
        ax.set_ylim(-0.03, 1.03)  # keep curves at exactly 0 or 1 off the frame edge
        ax.set_ylabel(f"{track}\nprobability, arousal")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles.append(Patch(color="tab:blue", alpha=0.6))
    labels.append("speech")
    handles.append(Patch(color="0.9"))
    labels.append("no face, no speech")
    # Below the plots, where it covers neither the title nor a curve.
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=8, frameon=False)
    axes[-1, 0].set_xlabel("call time (s)")
    fig.tight_layout(rect=(0, 0.55 / height, 1, 1))   # the legend's two rows: about half an inch
    return fig
