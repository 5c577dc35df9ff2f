"""What the CLI prints: each line says what is true, and where to look when something is missing."""


def test_the_explained_timeline_quotes_only_what_this_login_may_read():
    from pipeline.report import format_explained

    rows = [{"participant": "c1", "start_ms": 12_000, "end_ms": 13_000, "label": "angry", "confidence": 0.62,
             "why": "face: angry 0.55 over 2 frames; voice: high arousal (energy +1.4σ); words: valence -0.60; "
                    "fused: angry"},
            {"participant": "c1", "start_ms": 13_000, "end_ms": 14_000, "label": None, "confidence": 0.0, "why": None}]
    quoted = format_explained(rows, {("c1", 12_000): "nothing is fixed"})
    assert quoted == ('12-13 s  c1           angry    0.62  face: angry 0.55 over 2 frames; voice: high arousal '
                      '(energy +1.4σ); words: valence -0.60; said "nothing is fixed"')
    unread = format_explained(rows, None)
    assert "said" not in unread.splitlines()[0] and "callstream_transcripts" in unread.splitlines()[-1]


def test_the_summary_says_labelled_seconds_not_seconds_with_rows():
    from pipeline.report import format_summary

    row = {"participant": "customer", "role": "customer", "seconds": 22.0, "observed_seconds": 0.0,
           "dominant_label": None, "happy_seconds": 0.0, "angry_seconds": 0.0, "face_coverage": 0.0,
           "speech_coverage": 0.0}
    line = format_summary([row])
    assert "0.0s labelled of 22.0s" in line and "analysed" not in line


def test_a_call_without_segments_says_why_and_where_to_look():
    from pipeline.cli.calls import no_segments_line

    assert "`callstream dlq --call c-9`" in no_segments_line("c-9", 0, 3) and "3 of its chunk(s)" in \
        no_segments_line("c-9", 0, 3)
    assert "not analysed" in no_segments_line("c-9", 2, 0)
    assert no_segments_line("c-9", 0, 0).endswith("no chunk of it has been processed")


def test_alerts_tail_stops_at_max_even_within_one_fetch_and_prints_times_with_their_zone():
    from pipeline.cli.ingest import utc
    from pipeline.ingest.topics import deliver

    shown: list[int] = []
    assert deliver(list(range(5)), shown.append, 0, 2) == 2 and shown == [0, 1]
    assert deliver(list(range(5)), shown.append, 2, 2) == 2 and shown == [0, 1]
    assert deliver([7], shown.append, 2, None) == 3 and shown == [0, 1, 7]
    assert utc("2026-12-05T12:49:09.511+01:00") == "2026-12-05 11:49:09 UTC"
    assert utc("2026-12-05T11:49:09") == "2026-12-05 11:49:09 (zone unknown)"


def test_produce_reports_chunk_lengths_and_warns_when_key_frames_make_them_longer_than_asked():
    from pipeline.cli.ingest import chunk_lengths

    line, warning = chunk_lengths([5000, 5000, 5000, 2400], 5)
    assert line == "chunk lengths: 2.4-5.0 s, median 5.0 s (asked 5 s)" and warning is None
    line, warning = chunk_lengths([10_000, 10_000, 4000], 5)
    assert "10.0 s" in line and warning is not None and "up to 10.0 s, not the 5 s asked" in warning
    assert "-force_key_frames 'expr:gte(t,n_forced*5)'" in warning
    assert chunk_lengths([], 5) == ("no chunks", None)
    assert chunk_lengths([10_000], None) == ("chunk lengths: 10.0-10.0 s, median 10.0 s", None)   # a recorder's own


def test_group_members_are_read_however_the_client_decoded_their_assignment():
    from kafka.structs import TopicPartition

    from pipeline.ingest.lag import _assigned, spans

    decoded = {"assigned_partitions": [{"topic": "chunks", "partitions": [3, 1]},
                                       {"topic": "other", "partitions": [0]}]}
    assert sorted(_assigned(decoded, "chunks")) == [1, 3]
    assert _assigned({"assignment": [("chunks", [0, 2])]}, "chunks") == [0, 2]

    class Obj:
        def partitions(self):
            return [TopicPartition("chunks", 5), TopicPartition("x", 1)]

    assert _assigned(Obj(), "chunks") == [5] and _assigned(b"\x00raw", "chunks") == []
    assert spans((0, 1, 2, 5, 7, 8)) == "0-2, 5, 7-8" and spans((4,)) == "4" and spans(()) == ""


def test_help_opens_with_what_the_tool_does_and_every_option_says_what_it_is():
    import argparse

    from pipeline.cli import build_parser

    parser, _ = build_parser()
    assert parser.format_help().split("\n\n")[1].startswith("callstream: call-center video calls")
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction) and not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing


def test_the_timeline_says_what_conf_and_arousal_mean():
    from pipeline.report import KEY, format_timeline

    row = {"participant": "customer", "start_ms": 0, "end_ms": 1000, "label": "angry", "confidence": 0.41,
           "face_found": True, "speech_found": True, "arousal": 0.83, "neutral": 0.1, "happy": 0.05, "sad": 0.1,
           "angry": 0.41, "fear": 0.2, "disgust": 0.1, "surprise": 0.04}
    assert "angry      0.41  yes  yes       0.83  angry 0.41, fear 0.20" in format_timeline([row])
    for column, meaning in (("conf", "1/7 = 0.14 is no better than a guess"), ("arousal", "0 calm .. 1 agitated")):
        assert any(line.startswith(column) and meaning in line for line in KEY.splitlines()), column


def test_the_plot_shows_arousal_and_speech_and_its_legend_covers_neither_title_nor_curves():
    from pipeline.report import timeline_figure
    from pipeline.shared.labels import DFEW_LABELS

    rows = []
    for who in ("agent", "customer"):
        for i in range(10):
            r = {"participant": who, "start_ms": i * 1000, "end_ms": i * 1000 + 1000, "label": "happy",
                 "arousal": i / 10 if i != 4 else None, "speech_found": i % 2 == 0, **dict.fromkeys(DFEW_LABELS, 0.1)}
            rows.append(r)
    fig = timeline_figure(rows, "call c-1")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert texts[:7] == list(DFEW_LABELS) and any(t.startswith("arousal") for t in texts) and "speech" in texts
    box = legend.get_window_extent(renderer)
    title = fig._suptitle.get_window_extent(renderer)
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(renderer)) and not box.overlaps(title)
        arousal = next(line for line in ax.get_lines() if line.get_label().startswith("arousal"))
        ys = list(arousal.get_ydata())
        assert ys[1] == 0.1 and ys[4] != ys[4]        # None (no speech) is a gap, not a zero
        assert len(ax.patches) == 5                     # a speech band in each of the five spoken seconds
