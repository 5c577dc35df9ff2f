import pytest

from pipeline.alerts.rules import (
    ArousalRule,
    LabelRule,
    PhraseRule,
    RuleError,
    evaluate,
    heard,
    load_rules,
    parse_rules,
)
from pipeline.settings import REPO_ROOT


def row(start, label=None, arousal=None, speech=False, end=None):
    return {"start_ms": start, "end_ms": end or start + 1000, "label": label, "arousal": arousal,
            "speech_found": speech}


UPSET = LabelRule(name="upset", labels=["angry", "disgust"], at_least=5, of_last=10)
AGITATED = ArousalRule(name="agitated", arousal_above=0.8, for_seconds=8)


def test_the_shipped_rules_file_is_valid():
    rules = load_rules(REPO_ROOT / "infra" / "alerts" / "rules.toml")
    assert [r.name for r in rules] == ["customer-upset", "customer-agitated"]
    assert load_rules("") == []


def test_five_of_the_last_ten_fires_on_the_first_window_that_holds():
    labels = ["happy"] * 6 + ["angry", "neutral", "disgust", "angry", "happy", "angry", "angry"] + ["happy"] * 5
    fired = evaluate(UPSET, [row(i * 1000, lab) for i, lab in enumerate(labels)])
    assert fired is not None and fired.rule == "upset"
    assert (fired.start_ms, fired.end_ms) == (3000, 13000)   # the ten segments ending at the fifth match
    assert fired.details == {"matching": 5, "segments": 10, "labels": {"angry": 4, "disgust": 1}}


def test_four_of_ten_and_windows_across_a_break_in_the_grid_do_not_fire():
    assert evaluate(UPSET, [row(i * 1000, "angry" if i % 3 == 0 else "happy") for i in range(10)]) is None
    # Three angry before a missing cell and three after: never five inside one unbroken window.
    rows = [row(i * 1000, "angry") for i in range(3)] + [row(i * 1000, "angry") for i in range(4, 7)]
    assert evaluate(UPSET, rows) is None


def test_no_media_rows_are_segments_that_do_not_match():
    rows = [row(i * 1000, "angry" if i < 4 else None) for i in range(10)]
    assert evaluate(UPSET, rows) is None


def test_arousal_must_hold_for_the_whole_stretch():
    calm_break = [row(i * 1000, "happy", 0.9, True) for i in range(7)] + [row(7000, "happy", 0.5, True)] + \
                 [row(i * 1000, "happy", 0.9, True) for i in range(8, 12)]
    assert evaluate(AGITATED, calm_break) is None
    rows = [row(i * 1000, "happy", 0.85 + 0.01 * (i % 3), True) for i in range(2, 12)]
    fired = evaluate(AGITATED, rows)
    assert fired is not None and (fired.start_ms, fired.end_ms) == (2000, 10000)
    assert fired.details["seconds"] == 8 and fired.details["min_arousal"] == 0.85
    silent = [row(i * 1000, "happy", 0.95, False) for i in range(12)]          # no speech: no voice arousal
    assert evaluate(AGITATED, silent) is None


@pytest.mark.parametrize("text, says", [
    ('[[rule]]\nname = "x"\nlabels = ["angyr"]\nat_least = 1\nof_last = 2\n', "labels.0"),
    ('[[rule]]\nname = "x"\nlabels = ["angry"]\nat_least = 6\nof_last = 5\n', "at_least=6 is more than of_last=5"),
    ('[[rule]]\nname = "x"\narousal_above = 1.5\nfor_seconds = 8\n', "arousal_above"),
    ('[[rule]]\nname = "x"\narousal_above = 0.8\nfor_seconds = 8\nrole = "caller"\n', "role"),
    ('[[rule]]\nname = "x"\narousal_above = 0.8\nfor_secs = 8\n', "for_secs"),
    ('[[rule]]\nname = "x"\n', "none of `labels`"),
    ('[[rule]]\nname = "x"\nphrases = []\n', "phrases"),
    ('[[rule]]\nname = "x"\nphrases = ["?!"]\n', "at least one letter"),
    ('[[rule]]\nname = "x"\narousal_above = 0.8\nfor_seconds = 8\n[[rule]]\nname = "x"\narousal_above = 0.7\n'
     'for_seconds = 2\n', "unique"),
    ('[rules]\nname = "x"\n', "only [[rule]]"),
])
def test_a_wrong_rules_file_is_refused_saying_what_is_wrong(tmp_path, text, says):
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(RuleError) as err:
        load_rules(path)
    assert says in str(err.value) and str(path) in str(err.value)


def test_a_file_that_is_not_toml_names_the_setting(tmp_path):
    (tmp_path / "r.toml").write_text("[[rule]\n")
    with pytest.raises(RuleError, match="CALLSTREAM_ALERT_RULES"):
        load_rules(tmp_path / "r.toml")
    assert parse_rules({}) == []


def test_phrases_match_whole_words_without_regard_to_case_or_punctuation():
    rule = PhraseRule(name="leaving", phrases=["cancel", "speak to a supervisor"])
    said = [(9000, 10_500, "I want to SPEAK to a supervisor, now!"), (2000, 3500, "Is cancellation free?"),
            (4000, 5000, "Then cancel it.")]
    fired = heard(rule, said)
    assert fired is not None and (fired.start_ms, fired.end_ms, fired.details) == (4000, 5000, {"phrase": "cancel"})
    assert heard(rule, [(0, 1000, "cancellation, supervisors")]) is None
    assert evaluate(rule, [row(0, "angry")]) is None   # phrases are heard, not read from rows
    rules = parse_rules({"rule": [{"name": "lawyer", "phrases": ["lawyer"], "role": "customer"}]})
    assert isinstance(rules[0], PhraseRule) and rules[0].reach_ms(1000) == 0
