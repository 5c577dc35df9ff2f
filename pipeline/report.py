"""Human-facing output: the timeline as a table, and as a PNG of probabilities over time per participant."""

from __future__ import annotations

from pathlib import Path

from pipeline.shared.labels import DFEW_LABELS


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tracks = sorted({r["participant"] for r in rows})
    fig, axes = plt.subplots(len(tracks), 1, figsize=(11, 2.8 * len(tracks)), sharex=True, squeeze=False)
    for ax, track in zip(axes[:, 0], tracks, strict=True):
        mine = [r for r in rows if r["participant"] == track]
        xs = [(r["start_ms"] + r["end_ms"]) / 2000 for r in mine]
        for label in DFEW_LABELS:
            ax.plot(xs, [r[label] if r[label] is not None else float("nan") for r in mine], label=label, lw=1.5)
        for r in mine:
            if r["label"] is None:
                ax.axvspan(r["start_ms"] / 1000, r["end_ms"] / 1000, color="0.9", lw=0)
        ax.set_ylim(-0.03, 1.03)  # keep curves at exactly 0 or 1 off the frame edge
        ax.set_ylabel(f"{track}\nprobability")
        ax.grid(alpha=0.3)
    axes[0, 0].set_title(title)
    axes[0, 0].legend(ncol=7, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 1.35))
    axes[-1, 0].set_xlabel("call time (s); grey = no face and no speech")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
