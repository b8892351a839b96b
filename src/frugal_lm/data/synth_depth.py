"""Depth families: problems whose direct answer needs many sequential applications of one rule.

- `modexpr` (the "Mano" task of Ouro, arXiv 2510.25741, after Allen-Zhu's Physics of Language
  Models 4.1): a random expression tree of `min_ops` to `ops` operations in +, -, * modulo a
  prime, written in prefix notation, e.g. `Evaluate mod 7: + * 3 4 - 5 6` -> `4`. The number
  of sequential steps is the tree's depth (operations on its longest root-to-leaf path); with
  `shape=chain` the tree is left-deep (`* - + 3 4 5 6` is ((3 + 4) - 5) * 6), so every
  operation waits for the previous one and the depth is the operation count.
- `chain` (pointer chasing): `1 + distractors` disjoint chains of variable bindings, every one
  `h` bindings long (`h` from `min_hops` to `hops`), shuffled together, then a query at the
  head of one chain: `k=b; Q=4; x=Q; b=7. x=?` -> `4`. The answer takes exactly `h` look-ups.

Design choices:
- Answered directly in both answer formats (no worked solution): a written solution would
  put the serial steps into the output, one per token, and take away the very depth these
  families measure (TRM's direct-prediction baseline scored 0% where recursion scored 87%).
- Every number and variable is one character, so that under the demo's character-level
  tokenizer operands, variables and the answer are single tokens (Mano's are too) and
  contexts stay short: at the default difficulty an instruction is 18-63 characters (35 for
  `modexpr` and 40 for `chain` on average). Values from 10 up are written a, b, c, ... (`SYMBOLS`), so any prime modulus
  up to 36 fits; variables are the 52 ASCII letters.
- The default modulus is 7 rather than Mano's 23: the operation tables a model must learn grow
  with the square of the modulus (147 entries at 7, 1,587 at 23), and the point of the family
  is depth, not table size. `modexpr.modulus=23` gives Mano's setting.
- `ops`/`hops` is the most, `min_ops`/`min_hops` the least, drawn uniformly between ("up to
  L operations" as in Mano), so training meets every depth up to the hardest; setting both
  the same gives one difficulty, as a per-difficulty evaluation wants.
- No surface feature gives the `chain` answer away: all chains have the same length, each
  value (a digit) ends exactly one chain, each variable is bound once and read at most once,
  and the bindings are shuffled. With `distractors=0` the only digit in the text is the
  answer (allowed, as the trivial end of the knob).
- Knobs are pydantic models (`ModexprKnobs`, `ChainKnobs`); `parse_difficulty` reads the
  CLI's `family.knob=value,...` into them, with a one-line error for an unknown family, knob
  or bad value. The generators return (instruction, answer); `frugal_lm.data.synth` registers
  them as families beside the others.
"""

from __future__ import annotations

import random
import string
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from frugal_lm.config import validate
from frugal_lm.errors import FrugalError

SYMBOLS = string.digits + string.ascii_lowercase
"""The value v is written SYMBOLS[v]: one character for every value below 36."""
VARIABLES = string.ascii_letters
VALUES = string.digits
OPERATORS = "+-*"


def _at_most(least: int, most_field: str, info: ValidationInfo) -> int:
    """A `min_*` knob, checked against its maximum (declared before it, so validated first)."""
    most = info.data.get(most_field)
    if most is not None and least > most:
        raise ValueError(f"must be <= {most_field} ({most}), not {least}")
    return least


class ModexprKnobs(BaseModel):
    """Difficulty of `modexpr`: how many operations, the tree's shape, the modulus."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ops: int = Field(8, ge=1, le=128)
    """Most operations in one expression."""
    min_ops: int = Field(1, ge=1)
    """Fewest operations in one expression."""
    shape: Literal["random", "chain"] = "random"
    """`random`: each operation splits the rest at random between its operands; `chain`:
    left-deep, fully serial."""
    modulus: int = 7

    @field_validator("modulus")
    @classmethod
    def _prime(cls, modulus: int) -> int:
        if not 2 <= modulus <= len(SYMBOLS) or any(modulus % d == 0 for d in range(2, modulus)):
            raise ValueError(f"must be a prime from 2 to {len(SYMBOLS)}, not {modulus}")
        return modulus

    @field_validator("min_ops")
    @classmethod
    def _at_most_ops(cls, min_ops: int, info: ValidationInfo) -> int:
        return _at_most(min_ops, "ops", info)


class ChainKnobs(BaseModel):
    """Difficulty of `chain`: how many hops from the query to its value, how many other chains."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hops: int = Field(4, ge=1)
    """Most bindings followed from the query to its value."""
    min_hops: int = Field(1, ge=1)
    """Fewest bindings followed from the query to its value."""
    distractors: int = Field(2, ge=0, le=len(VALUES) - 1, validate_default=True)  # checked against hops
    """Chains beside the queried one, each as long and ending in its own value."""

    @field_validator("min_hops")
    @classmethod
    def _at_most_hops(cls, min_hops: int, info: ValidationInfo) -> int:
        return _at_most(min_hops, "hops", info)

    @field_validator("distractors")
    @classmethod
    def _enough_variables(cls, distractors: int, info: ValidationInfo) -> int:
        needed = (1 + distractors) * info.data.get("hops", 1)
        if needed > len(VARIABLES):
            raise ValueError(f"(1 + distractors) * hops = {needed} variables, more than the {len(VARIABLES)} letters")
        return distractors


KNOBS: dict[str, type[BaseModel]] = {"modexpr": ModexprKnobs, "chain": ChainKnobs}
"""The knob model of each family that has difficulty knobs."""
DIFFICULTY_SYNTAX = "FAMILY.KNOB=VALUE,... (e.g. modexpr.ops=24,modexpr.shape=chain,chain.hops=6)"


def _apply(operator: str, a: int, b: int, modulus: int) -> int:
    return (a + b if operator == "+" else a - b if operator == "-" else a * b) % modulus


def _prefix_tree(rng: random.Random, count: int, knobs: ModexprKnobs) -> tuple[list[str], int]:
    """A tree of `count` operations: its prefix tokens and its value."""
    if count == 0:
        value = rng.randrange(knobs.modulus)
        return [SYMBOLS[value]], value
    left_count = count - 1 if knobs.shape == "chain" else rng.randint(0, count - 1)
    operator = rng.choice(OPERATORS)
    left, left_value = _prefix_tree(rng, left_count, knobs)
    right, right_value = _prefix_tree(rng, count - 1 - left_count, knobs)
    return [operator, *left, *right], _apply(operator, left_value, right_value, knobs.modulus)


def modexpr(rng: random.Random, knobs: ModexprKnobs | None = None) -> tuple[str, str]:
    """A prefix-notation expression modulo a prime and its value, one character."""
    knobs = knobs or ModexprKnobs()
    tokens, value = _prefix_tree(rng, rng.randint(knobs.min_ops, knobs.ops), knobs)
    return f"Evaluate mod {knobs.modulus}: {' '.join(tokens)}", SYMBOLS[value]


def chain(rng: random.Random, knobs: ChainKnobs | None = None) -> tuple[str, str]:
    """Shuffled bindings of disjoint equal-length chains and the query's value, one digit."""
    knobs = knobs or ChainKnobs()
    hops, chains = rng.randint(knobs.min_hops, knobs.hops), 1 + knobs.distractors
    names = rng.sample(VARIABLES, chains * hops)
    values = rng.sample(VALUES, chains)
    bindings = []
    for index, value in enumerate(values):
        path = names[index * hops : (index + 1) * hops]
        bindings += [f"{a}={b}" for a, b in zip(path, path[1:])] + [f"{path[-1]}={value}"]
    rng.shuffle(bindings)
    return f"{'; '.join(bindings)}. {names[0]}=?", values[0]


def parse_difficulty(text: str | None) -> dict[str, BaseModel]:
    """`modexpr.ops=24,chain.hops=6` -> {"modexpr": ModexprKnobs(ops=24), "chain": ChainKnobs(hops=6)};
    knobs not named keep their defaults. Bad input is a one-line FrugalError."""
    values: dict[str, dict[str, str]] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, equals, value = item.partition("=")
        family, dot, knob = key.strip().partition(".")
        if not (equals and dot and family and knob.strip() and value.strip()):
            raise FrugalError(f"--difficulty: {item!r} is not {DIFFICULTY_SYNTAX}")
        if family not in KNOBS:
            raise FrugalError(
                f"--difficulty: family {family!r} has no difficulty knobs; families with knobs: {', '.join(KNOBS)}"
            )
        if knob.strip() in values.setdefault(family, {}):
            raise FrugalError(f"--difficulty: {family}.{knob.strip()} given twice")
        values[family][knob.strip()] = value.strip()
    return {family: validate(KNOBS[family], knobs, f"--difficulty {family}") for family, knobs in values.items()}


def sequential_steps(family: str, instruction: str) -> int | None:
    """How many sequential steps a depth family's problem takes (a modexpr tree's depth, a
    chain's hops), read back from its instruction, so that any held-out file can be scored
    per difficulty; None for other families."""
    if family == "modexpr":
        depths: list[int] = []  # pending operators' depths so far, innermost last
        for token in reversed(instruction.split(": ", 1)[1].split(" ")):
            depths.append(1 + max(depths.pop(), depths.pop()) if token in OPERATORS else 0)
        return depths[0]
    if family == "chain":
        text, query = instruction.rsplit(". ", 1)
        bindings = dict(binding.split("=") for binding in text.split("; "))
        name, hops = query.removesuffix("=?"), 0
        while name in bindings:
            name, hops = bindings[name], hops + 1
        return hops
    return None
