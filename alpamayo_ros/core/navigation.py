"""Navigation instructions for Alpamayo 1.5: the trained wording, checks on free text, and ageing.

Alpamayo 1.5 reads a route instruction as ``<|route_start|>{text}<|route_end|>`` in its prompt. The
model was conditioned on a fixed wording (NVlabs/alpamayo1.5 ``notebooks/nav_demo_samples.json``;
Autoware's generator, whose docstring says not to paraphrase it)::

    Turn left in 11m    Turn right in 42m    Turn left onto De La Cruz Boulevard in 40m
    Turn left           Continue straight

The distance is whole metres with no space before ``m`` (``int(round(d))``, as Autoware's generator).
``format_route_instruction`` writes it from (maneuver, distance, street) for users whose route planner
gives no text; ``is_trained_wording`` says whether a text follows it.

Text from outside (a topic, a question) goes into the prompt verbatim, so ``check_prompt_text``
refuses what would change the prompt's structure: control characters, and anything tag-like
(``<|im_end|>``, ``<i12>`` …) that the tokenizer would turn into a special or trajectory token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MANEUVERS", "PromptTextError", "RouteInstruction", "RouteState", "check_prompt_text",
           "format_route_instruction", "is_trained_wording"]

# accepted spellings -> the trained wording's verb phrase
MANEUVERS: dict[str, str] = {
    "left": "Turn left", "turn_left": "Turn left",
    "right": "Turn right", "turn_right": "Turn right",
    "straight": "Continue straight", "continue": "Continue straight", "continue_straight": "Continue straight",
}  # fmt: skip
_TRAINED = re.compile(r"(Turn (left|right)( onto [^<>|\n]+?)?( in \d+m)?|Continue straight)")
_TAG = re.compile(r"<[^<>\s]*>|<\||\|>")


class PromptTextError(ValueError):
    """Text that cannot go into the prompt as it is (the message says why)."""


def format_route_instruction(maneuver: str, distance_m: float | None = None, street: str | None = None) -> str:
    """The trained wording for one manoeuvre, e.g. ``("left", 39.6, "Main St")`` -> "Turn left onto Main St in 40m".

    ``maneuver``: left / right / straight (also ``turn_left``, ``TURN_RIGHT``, ``continue_straight``).
    ``distance_m``: metres to the manoeuvre; None (already in it) leaves the distance out. "Continue
    straight" takes neither distance nor street (the trained wording has none).
    """
    key = maneuver.strip().lower().replace("-", "_").replace(" ", "_")
    phrase = MANEUVERS.get(key)
    if phrase is None:
        raise ValueError(f"maneuver {maneuver!r} has no trained wording; use one of "
                         f"{sorted(set(MANEUVERS))}")
    if phrase == "Continue straight":
        return phrase
    text = phrase
    if street is not None and street.strip():
        text += f" onto {' '.join(street.split())}"
    if distance_m is not None:
        if not distance_m >= 0.0 or distance_m == float("inf"):
            raise ValueError(f"distance_m must be a finite distance >= 0, got {distance_m}")
        text += f" in {int(round(distance_m))}m"
    return check_prompt_text(text, "route instruction")


def is_trained_wording(text: str) -> bool:
    """Whether ``text`` follows the wording Alpamayo 1.5 was conditioned on (see the module docstring)."""
    return _TRAINED.fullmatch(text) is not None


def check_prompt_text(text: str, what: str, max_chars: int = 200) -> str:
    """``text`` with surrounding whitespace removed, or PromptTextError naming ``what`` and the problem."""
    clean = text.strip()
    if not clean:
        raise PromptTextError(f"{what} is empty")
    if len(clean) > max_chars:
        raise PromptTextError(f"{what} has {len(clean)} characters, more than the limit of {max_chars}")
    bad = next((ch for ch in clean if ord(ch) < 32 or ord(ch) == 127), None)
    if bad is not None:
        raise PromptTextError(f"{what} contains the control character {bad!r}; send one line of text")
    tag = _TAG.search(clean)
    if tag is not None:
        raise PromptTextError(f"{what} contains {tag.group()!r}, which the tokenizer would read as a special or "
                              "trajectory token; remove the angle brackets")
    return clean


@dataclass(frozen=True)
class RouteInstruction:
    text: str
    received_s: float | None  # when it arrived (node clock, or bag time in replay); None: before the clock ran


class RouteState:
    """The current route instruction; it expires ``max_age_s`` after it arrived (a stale "Turn left in
    40m" is worse than none). An empty text clears it. Not thread-safe: the caller holds a lock."""

    def __init__(self, max_age_s: float, max_chars: int = 200) -> None:
        if not max_age_s > 0.0:
            raise ValueError(f"max_age_s must be > 0, got {max_age_s}")
        self.max_age_s = max_age_s
        self.max_chars = max_chars
        self.latest: RouteInstruction | None = None
        self.expired: RouteInstruction | None = None  # the last one dropped for its age (diagnostics)

    def update(self, text: str, received_s: float | None) -> RouteInstruction | None:
        """Take a new instruction ("" or only whitespace: clear). Raises PromptTextError (the previous one stays).

        ``received_s`` None: the clock has not started (simulated time before the first /clock); its
        age then counts from the first ``current`` call."""
        if not text.strip():
            self.latest = None
            return None
        self.latest = RouteInstruction(check_prompt_text(text, "route instruction", self.max_chars), received_s)
        self.expired = None
        return self.latest

    def current(self, now_s: float) -> RouteInstruction | None:
        """The instruction in effect at ``now_s`` (received at or before it, not older than max_age_s)."""
        latest = self.latest
        if latest is not None and latest.received_s is None:
            latest = self.latest = RouteInstruction(latest.text, now_s)
        if latest is None or latest.received_s is None or latest.received_s > now_s:
            return None
        if now_s - latest.received_s > self.max_age_s:
            self.expired, self.latest = latest, None
            return None
        return latest

    def clear(self) -> None:
        self.latest = self.expired = None
