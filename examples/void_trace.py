"""Where does SmolLM2-135M work? The L2 change each decoder layer makes to the residual stream,
for a prompt (prefill) and for the answer it generates (decode), as a rich bar chart and a PNG.

Layers whose relative change ||h_out - h_in|| / ||h_in|| is small are "voids" (Void in Language
Models, L2 Adaptive Computation): `VoidSkip` skips them during decoding.

.venv/bin/python examples/void_trace.py
"""

import asyncio
from pathlib import Path

from agentic import load_backend
from agentic.cli.route import bars, save_trace_png
from agentic.core import GenerateRequest, InterventionRef
from backends.interventions.static import ActivityTrace


async def main() -> None:
    lm = load_backend("embedded:smollm2")
    trace = ActivityTrace()
    lm.attach("trace", trace)
    req = GenerateRequest.chat("Calculate 17 + 25.", max_tokens=24, temperature=0.0)
    req = req.model_copy(update={"interventions": (InterventionRef(name="trace"),)})
    [[out]] = await lm.generate([req])
    [a] = trace.reports
    print(f"answer: {out.text!r}")
    print(f"{'layer':>5} {'prefill':>8}  {'':<30} {'decode':>8}")
    for i, (p, d, bp) in enumerate(
        zip(a.prefill_relative, a.decode_relative, bars(a.prefill_relative, 30), strict=True)
    ):
        print(f"{i:>5} {p:>8.3f}  {bp:<30} {d:>8.3f}")
    quiet = sorted(range(1, len(a.prefill_relative)), key=a.prefill_relative.__getitem__)[:5]
    print(f"quietest layers on the prompt: {sorted(quiet)}")
    print(f"wrote {save_trace_png(a, Path('void_trace.png'), 'SmolLM2-135M')}")
    await lm.aclose()


asyncio.run(main())
