"""genlm-control's AWRS on the sampling bench's model cases, run in genlm-control's own venv.

genlm-control pins its own stack (genlm-backend, genlm-grammar, transformers, ...), so the bench never
installs it into constrain's venv: ``constrain bench sampling --genlm-python PATH`` runs this file with
that interpreter (a venv with ``pip install torch==2.13.0 genlm-control``) and reads its JSON answer.
It imports nothing from constrain. Input (a JSON file named by argv[1]): ``model`` (a local model folder),
``max_tokens``, ``seed``, ``repeats`` and ``cases`` (``name``, ``prompt_ids``: the bench's own encoding of
the prompt, ``schema`` or ``lark``). Output (argv[2]): per case, each run's output tokens, seconds,
condition checks (calls of the sampler's accept test: one per candidate token) and text, or its error.

Each run is genlm-control's AWRS token sampler through its SMC driver with one particle (no resampling:
plain sequential AWRS), the condition being its JSON Schema potential (or its Lark CFG potential)
coerced to the model's tokens, as its documentation composes them.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any


async def _run_case(llm: Any, case: dict[str, Any], max_tokens: int, seed: int) -> dict[str, Any]:
    from genlm.control import AWRS, BoolCFG, JsonSchema

    llm.prompt_ids = list(case["prompt_ids"])
    if case.get("schema") is not None:
        condition = JsonSchema(case["schema"])
    else:
        condition = BoolCFG.from_lark(case["lark"])
    sampler = AWRS(llm, condition.coerce(llm, f=b"".join), seed=seed)
    checks = 0
    accept = sampler._accept  # counted per candidate; the sampler looks it up on the instance

    async def counted(context: Any, token: Any, verbosity: int = 0) -> bool:
        nonlocal checks
        checks += 1
        return bool(await accept(context, token, verbosity))

    sampler._accept = counted
    t0 = time.perf_counter()
    sequences = await sampler.smc(n_particles=1, ess_threshold=0.0, max_tokens=max_tokens)
    seconds = time.perf_counter() - t0
    context = sequences.contexts[0]
    text = b"".join(t for t in context if isinstance(t, bytes)).decode("utf-8", errors="replace")
    return {"tokens": len(context), "seconds": seconds, "checks": checks, "text": text}


async def _main(spec: dict[str, Any]) -> dict[str, Any]:
    from importlib import metadata

    from genlm.control import PromptedLLM

    llm = PromptedLLM.from_name(spec["model"], backend="hf", temperature=1.0)
    out: dict[str, Any] = {"version": metadata.version("genlm-control"), "cases": {}}
    for case in spec["cases"]:
        runs = []
        for r in range(spec["repeats"]):
            try:
                runs.append(await _run_case(llm, case, spec["max_tokens"], spec["seed"] + r))
            except Exception as e:  # noqa: BLE001 - report the peer's failure, do not stop the bench
                runs.append({"error": f"{type(e).__name__}: {e}"[:300]})
        out["cases"][case["name"]] = runs
        sys.stderr.write(f"[genlm] {case['name']}: {runs[-1]}\n")
    return out


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    result = asyncio.run(_main(spec))
    with open(sys.argv[2], "w") as f:
        json.dump(result, f)
