import asyncio, json, sys, time
from agentic.suites import load_suite
from agentic.runner import run_suite
from backends.registry import load_backend
from controllers import Direct
from agentic.core import SamplingParams

FAMS = {
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
 "number_sorting": {"min_numbers": 3, "max_numbers": 3, "max_decimals": 0, "min_value": 0, "max_value": 20},
 "syllogism": {},
 "family_relationships": {"min_family_size": 4, "max_family_size": 4},
 "base_conversion": {"max_value": 16, "max_base": 10},
 "decimal_arithmetic": {"max_terms": 2, "min_num_decimal_places": 1, "max_num_decimal_places": 1},
 "word_sorting": {"min_words": 3, "max_words": 3, "max_word_length": 6},
 "count_primes": {"max_n": 20},
 "isomorphic_strings": {"max_string_length": 4},
 "ransom_note": {"max_note_length": 3, "max_magazine_length": 8},
 "prime_factorization": {"max_value": 20},
 "letter_jumble": {"min_words": 2, "max_words": 3, "max_word_len": 5},
 "number_filtering": {"min_numbers": 3, "max_numbers": 4, "max_decimals": 0},
 "power_function": {"min_base": -5, "max_base": 5, "max_exponent": 2},
}
async def main():
    b = load_backend("embedded:smollm2")
    out = {}
    for name, cfg in FAMS.items():
        try:
            suite = load_suite(name, n=20, seed=1234, config=cfg)
        except Exception as e:
            print(name, "ERR", e, flush=True); continue
        t=time.time()
        r = await run_suite(suite, Direct(b, params=SamplingParams(max_tokens=64, temperature=0.0)), concurrency=20)
        out[name] = r.accuracy
        print(f"{name:25s} {r.accuracy:.2f} {time.time()-t:.0f}s ex={r.outcomes[0].output[:60]!r} ans={suite.tasks[0].answer!r}", flush=True)
    json.dump(out, open("/tmp/probe/probe.json","w"))
asyncio.run(main())
