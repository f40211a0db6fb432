"""Layer routing per request on the embedded SmolLM2-135M: Dr.LLM skip/execute/repeat routers
trained from a configuration search, next to a fixed skip set and the full model, in one batch.

`fit_drllm` searches, for each training task, the cheapest layer configuration whose gold-answer
log-likelihood stays within 0.3 nats/token of the full model (a beam search; every candidate of a
round is one request slot of a single batched forward), then trains one bottleneck-MLP router
per layer on the pooled layer inputs with the focal loss. The routers decide at prefill; the
trace event shows each request's decisions.

.venv/bin/python examples/routing.py
"""

import asyncio

from agentic import load_backend
from agentic.core import GenerateRequest, InterventionRef, Tracer
from agentic.runtime.suites import load_suite
from backends.interventions.drllm import fit_drllm
from backends.interventions.static import LayerSkip

EASY = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}


async def main() -> None:
    lm = load_backend("embedded:smollm2")
    train = load_suite("basic_arithmetic", n=2, seed=100, config=EASY)
    examples = [(GenerateRequest.chat(t.input), str(t.answer)) for t in train.tasks]
    router, configs = await fit_drllm(
        lm,
        examples,
        layers=range(1, lm.num_layers),
        search={"max_executions": lm.num_layers - 2, "tolerance": 0.3, "rounds": 2, "beam": 1},
        train={"epochs": 100},
    )
    for c in configs:
        print(f"searched: skip {sorted(c.skip)} repeat {sorted(c.repeat)} loglik {c.score:.2f}")
    lm.attach("drllm", router)
    lm.attach("skip3", LayerSkip({4, 12, 14}))
    test = load_suite("basic_arithmetic", n=3, seed=7, config=EASY)
    events: list = []
    with Tracer([events.append]).activate():
        runs = []
        for t in test.tasks:
            for name in (None, "drllm", "skip3"):
                req = GenerateRequest.chat(t.input, max_tokens=16, temperature=0.0)
                refs = (InterventionRef(name=name),) if name else ()
                runs.append(
                    (t, name, lm.generate([req.model_copy(update={"interventions": refs})]))
                )
        outs = await asyncio.gather(*(r for _, _, r in runs))
    for (t, name, _), out in zip(runs, outs, strict=True):
        text = out[0][0].text.strip().split("\n")[0][:40]
        ok = await test.check(t, out[0][0].text)
        print(f"{t.input.splitlines()[0]:<22} {name or 'full':<6} {ok:.0f} {text!r}")
    for e in events:
        if e.type == "backend.intervention":
            print("decided:", {"skip": e.payload["skip"], "repeat": e.payload["repeat"]})
    await lm.aclose()


asyncio.run(main())
