"""Which reasoning-gym families suit the test-time-compute matrix: greedy accuracy of the
embedded SmolLM2-135M on 20 tasks of each candidate (seed 1234, not the matrix's seed 0), with
easy settings. The matrix keeps the families between ~5% and ~70%
(`benchmarks/results/ttc/probe.json`; the split into train and eval is in `ttc_matrix.py`).

    .venv/bin/python benchmarks/ttc_probe.py
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from agentic.core import AgenticError, SamplingParams
from agentic.runtime.runner import run_suite
from agentic.runtime.suites import load_suite
from backends import load_backend
from controllers import Direct

OUT = Path(__file__).parent / "results" / "ttc" / "probe.json"
CANDIDATES: dict[str, dict[str, Any]] = {
    "basic_arithmetic": {},
    "chain_sum": {"min_terms": 3, "max_terms": 3, "max_digits": 1},
    "products": {"max_digits": 1},
    "leg_counting": {"min_animals": 1, "max_animals": 2, "max_instances": 3},
    "letter_counting": {"min_words": 3, "max_words": 5},
    "count_bits": {"max_n": 64},
    "gcd": {"max_value": 20},
    "lcm": {"max_value": 10},
    "simple_equations": {"max_terms": 2, "max_value": 10, "operators": ["+", "-"]},
    "spell_backward": {"max_word_len": 4},
    "word_sequence_reversal": {"min_words": 3, "max_words": 3},
    "number_sorting": {
        "min_numbers": 3, "max_numbers": 3, "max_decimals": 0, "min_value": 0, "max_value": 20,
    },
    "syllogism": {},
    "family_relationships": {"min_family_size": 4, "max_family_size": 4},
    "base_conversion": {"max_value": 16, "max_base": 10},
    "decimal_arithmetic": {
        "max_terms": 2, "min_num_decimal_places": 1, "max_num_decimal_places": 1,
    },
    "word_sorting": {"min_words": 3, "max_words": 3, "max_word_length": 6},
    "count_primes": {"max_n": 20},
    "isomorphic_strings": {"max_string_length": 4},
    "ransom_note": {"max_note_length": 3, "max_magazine_length": 8},
    "prime_factorization": {"max_value": 20},
    "letter_jumble": {"min_words": 2, "max_words": 3, "max_word_len": 5},
    "number_filtering": {"min_numbers": 3, "max_numbers": 4, "max_decimals": 0},
    "power_function": {"min_base": -5, "max_base": 5, "max_exponent": 2},
}  # fmt: skip


async def main() -> None:
    backend = load_backend("embedded:smollm2")
    greedy = Direct(backend, params=SamplingParams(max_tokens=64, temperature=0.0))
    out: dict[str, float] = {}
    for name, cfg in CANDIDATES.items():
        try:
            suite = load_suite(name, n=20, seed=1234, config=cfg)
        except AgenticError as e:  # simple_equations' settings are refused by reasoning-gym
            print(f"{name:25s} refused: {e}", flush=True)
            continue
        t0 = time.perf_counter()
        result = await run_suite(suite, greedy, concurrency=20)
        out[name] = result.accuracy
        print(f"{name:25s} {result.accuracy:.2f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    await backend.aclose()


if __name__ == "__main__":
    asyncio.run(main())
