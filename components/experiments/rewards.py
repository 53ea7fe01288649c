"""Reward weightings: what one shown slot is worth, by what the user did with it.

A slot is clicked, muted (the user dismissed it: negative feedback) or neither (a plain impression); its reward is
the weight of that outcome. Click-only (click 1, anything else 0) is the default everywhere. LINE's score counts an
impression 0.5, a click 1.0 and a mute 0.0, chosen there because it agrees with questionnaire satisfaction and is
stable over time. A click is never also a mute (the shop draws mutes among the slots not clicked).

Spelled as a string where a pipeline parameter carries it: "click", "score", or explicit weights
"impression=0.5,click=1,mute=0" (names left out weigh 0).
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class RewardWeights:
    impression: float = 0.0  # shown, neither clicked nor muted
    click: float = 1.0
    mute: float = 0.0

    def __post_init__(self) -> None:
        for name in ("impression", "click", "mute"):
            if not np.isfinite(getattr(self, name)):
                raise ValueError(f"reward weight {name} must be finite, got {getattr(self, name)}")

    def of(self, click: np.ndarray, mute: np.ndarray | None = None) -> np.ndarray:
        """Per-slot rewards of 0/1 click and mute arrays (mute None: no slot was muted)."""
        click = np.asarray(click, dtype=bool)
        muted = np.zeros_like(click) if mute is None else np.asarray(mute, dtype=bool)
        if muted.shape != click.shape:
            raise ValueError(f"mute shape {muted.shape} differs from click shape {click.shape}")
        if np.any(click & muted):
            raise ValueError("a slot is both clicked and muted")
        return np.where(click, self.click, np.where(muted, self.mute, self.impression)).astype(np.float64)

    def expected(self, p_click: np.ndarray, p_mute: np.ndarray) -> np.ndarray:
        """Expected per-slot reward given P(click) and P(mute) of each slot."""
        return self.click * p_click + self.mute * p_mute + self.impression * (1.0 - p_click - p_mute)

    @property
    def needs_mutes(self) -> bool:
        """True when a mute weighs other than a plain impression, so the logs must record mutes."""
        return self.mute != self.impression

    @property
    def is_click_only(self) -> bool:
        """True for the click-only weighting (the OPE estimand's), where no weighted study is needed."""
        return self == CLICK

    def spec(self) -> str:
        """The weighting as the pipeline parameter's text (rewards.parse reads it back)."""
        return f"impression={self.impression:g},click={self.click:g},mute={self.mute:g}"


CLICK = RewardWeights()
SCORE = RewardWeights(impression=0.5, click=1.0, mute=0.0)
NAMED = {"click": CLICK, "score": SCORE}


def parse(text: str | RewardWeights) -> RewardWeights:
    """ "click" (default for ""), "score", or "impression=0.5,click=1,mute=0"."""
    if isinstance(text, RewardWeights):
        return text
    text = (text or "click").strip().lower()
    if text in NAMED:
        return NAMED[text]
    values = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in ("impression", "click", "mute"):
            raise ValueError(
                f"reward weighting {text!r}: expected 'click', 'score' or 'impression=<w>,click=<w>,mute=<w>'"
            )
        try:
            values[name] = float(value)
        except ValueError:
            raise ValueError(f"reward weighting {text!r}: {name} weight {value!r} is not a number") from None
    return RewardWeights(**{"click": 0.0, **values})
