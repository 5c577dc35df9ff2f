"""Live alert rules: a small TOML file, validated at start, evaluated on a participant's rows as they
are committed (store/writer.py). Pure: rows in, the first window that satisfies a rule out.

    [[rule]]
    name = "customer-upset"          # fires at most once per call
    role = "customer"                # whose timeline (default customer)
    labels = ["angry", "disgust"]    # label rule: at least `at_least` of the last `of_last` segments
    at_least = 5
    of_last = 10

    [[rule]]
    name = "customer-agitated"
    arousal_above = 0.8              # arousal rule: speech above this for `for_seconds` without a break
    for_seconds = 8

    [[rule]]
    name = "customer-wants-to-leave"
    phrases = ["cancel", "lawyer", "speak to a supervisor"]   # phrase rule (CALLSTREAM_WORDS): said once

Windows never span a break in the grid (cells not yet received); rows without media count as segments
that do not match, so a gap never makes a window look worse than it was. Phrases match whole words,
without regard to case or punctuation, in what the words model heard in the chunk being committed
(whatever CALLSTREAM_TRANSCRIPTS stores); the alert names the phrase, never the rest of the sentence.
"""

from __future__ import annotations

import re
import tomllib
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.contract import ROLES
from pipeline.shared.labels import DFEW_LABELS

Label = Literal["neutral", "happy", "sad", "angry", "fear", "disgust", "surprise"]
assert set(Label.__args__) == set(DFEW_LABELS)  # type: ignore[attr-defined]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Role = Literal["customer", "agent", "supervisor", "other"]
assert set(Role.__args__) == set(ROLES)  # type: ignore[attr-defined]


class RuleError(ValueError):
    """The rules file is wrong: names the file, the rule and what is wrong."""


class LabelRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name
    role: Role = "customer"
    labels: list[Label] = Field(min_length=1)
    at_least: int = Field(ge=1)
    of_last: int = Field(ge=1, le=600)

    @model_validator(mode="after")
    def _fits(self) -> LabelRule:
        if self.at_least > self.of_last:
            raise ValueError(f"at_least={self.at_least} is more than of_last={self.of_last}")
        return self

    def reach_ms(self, segment_ms: int) -> int:
        return self.of_last * segment_ms


class ArousalRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name
    role: Role = "customer"
    arousal_above: float = Field(gt=0, lt=1)
    for_seconds: float = Field(gt=0, le=3600)

    def reach_ms(self, segment_ms: int) -> int:
        return int(self.for_seconds * 1000) + segment_ms


class PhraseRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Name
    role: Role = "customer"
    phrases: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(min_length=1, max_length=200)

    @model_validator(mode="after")
    def _words(self) -> PhraseRule:
        if any(not words(p).strip() for p in self.phrases):
            raise ValueError("phrases: each needs at least one letter or digit")
        return self

    def reach_ms(self, segment_ms: int) -> int:
        return 0


Rule = LabelRule | ArousalRule | PhraseRule


def words(text: str) -> str:
    """Lower case, punctuation gone, single spaces, padded: phrases match whole words only."""
    return " " + " ".join(re.findall(r"[\w']+", text.lower())) + " "


def parse_rules(doc: Mapping[str, Any], source: str = "rules") -> list[Rule]:
    entries = doc.get("rule", [])
    unknown = set(doc) - {"rule"}
    if unknown or not isinstance(entries, list):
        raise RuleError(f"{source}: expected only [[rule]] tables, found {sorted(unknown) or type(entries).__name__}")
    rules: list[Rule] = []
    for i, entry in enumerate(entries, 1):
        kind: type[LabelRule] | type[ArousalRule] | type[PhraseRule]
        if "labels" in entry:
            kind = LabelRule
        elif "arousal_above" in entry:
            kind = ArousalRule
        elif "phrases" in entry:
            kind = PhraseRule
        else:
            raise RuleError(f"{source}: rule {i} ({entry.get('name', 'unnamed')}) has none of `labels` "
                            "(with at_least, of_last), `arousal_above` (with for_seconds) or `phrases`")
        try:
            rules.append(kind.model_validate(entry))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'rule'}: {e['msg']}" for e in exc.errors())
            raise RuleError(f"{source}: rule {i} ({entry.get('name', 'unnamed')}): {problems}") from None
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise RuleError(f"{source}: rule names must be unique (an alert fires once per call and rule name)")
    return rules


def load_rules(path: str | Path | None) -> list[Rule]:
    """The rules of CALLSTREAM_ALERT_RULES; none when it is empty."""
    if not path:
        return []
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RuleError(f"CALLSTREAM_ALERT_RULES={str(path)!r}: {exc}") from None
    return parse_rules(doc, str(path))


@dataclass(frozen=True)
class Firing:
    rule: str
    start_ms: int
    end_ms: int
    details: dict[str, Any]


def _runs(rows: Iterable[Mapping[str, Any]]) -> Iterable[list[Mapping[str, Any]]]:
    """Rows split where the grid breaks (a cell not received yet)."""
    run: list[Mapping[str, Any]] = []
    for r in rows:
        if run and r["start_ms"] != run[-1]["end_ms"]:
            yield run
            run = []
        run.append(r)
    if run:
        yield run


def heard(rule: PhraseRule, said: Iterable[tuple[int, int, str]]) -> Firing | None:
    """The first utterance, (start ms, end ms, text) of one participant, that says one of the phrases."""
    wanted = [(p, words(p)) for p in rule.phrases]
    for start, end, text in sorted(said):
        spoken = words(text)
        for phrase, w in wanted:
            if w in spoken:
                return Firing(rule.name, start, end, {"phrase": phrase})
    return None


def evaluate(rule: Rule, rows: Iterable[Mapping[str, Any]]) -> Firing | None:
    """The first window of `rows` (one participant's, in start order) that satisfies the rule."""
    if isinstance(rule, PhraseRule):
        return None   # phrases are heard (`heard`), not read from rows
    ordered = sorted(rows, key=lambda r: r["start_ms"])
    for run in _runs(ordered):
        found = _label(rule, run) if isinstance(rule, LabelRule) else _arousal(rule, run)
        if found:
            return found
    return None


def _label(rule: LabelRule, run: list[Mapping[str, Any]]) -> Firing | None:
    window: deque[Mapping[str, Any]] = deque(maxlen=rule.of_last)
    for r in run:
        window.append(r)
        hits = Counter(w["label"] for w in window if w["label"] in rule.labels)
        if sum(hits.values()) >= rule.at_least:
            return Firing(rule.name, window[0]["start_ms"], window[-1]["end_ms"],
                          {"matching": sum(hits.values()), "segments": len(window), "labels": dict(hits)})
    return None


def _arousal(rule: ArousalRule, run: list[Mapping[str, Any]]) -> Firing | None:
    stretch: list[Mapping[str, Any]] = []
    for r in run:
        if r["speech_found"] and r["arousal"] is not None and r["arousal"] > rule.arousal_above:
            stretch.append(r)
            seconds = (stretch[-1]["end_ms"] - stretch[0]["start_ms"]) / 1000
            if seconds >= rule.for_seconds:
                values = [s["arousal"] for s in stretch]
                return Firing(rule.name, stretch[0]["start_ms"], stretch[-1]["end_ms"],
                              {"seconds": seconds, "min_arousal": round(min(values), 3),
                               "mean_arousal": round(sum(values) / len(values), 3)})
        else:
            stretch = []
    return None
