"""Which reasoning-gym datasets give other tasks under another string-hash seed.

A generator that draws from a `set` (`rng.choice(list(letters))`) follows Python's string-hash
order, which differs between processes unless PYTHONHASHSEED is fixed: its tasks for one seed
then change from run to run. This generates 8 tasks of every dataset at its default settings in
child processes (PYTHONHASHSEED=1 twice, then =2) and prints those whose tasks differ only
across hash seeds, which belong in `agentic.runtime.suites.HASH_ORDERED` (generated with the hash
seed fixed), apart from those that differ under one hash seed too (no hash seed fixes them).

    .venv/bin/python benchmarks/gym_hash_order.py
"""

from __future__ import annotations

import os
import subprocess
import sys

# One child per hash seed digests every dataset; a generator that fails or hangs on its
# defaults is reported as such, not compared.
_DIGESTS = """
import hashlib, signal, warnings
warnings.filterwarnings("ignore")
import reasoning_gym
from reasoning_gym.factory import DATASETS

def slow(*_):
    raise TimeoutError

signal.signal(signal.SIGALRM, slow)
for name in sorted(DATASETS):
    signal.alarm(20)
    try:
        ds = reasoning_gym.create_dataset(name, seed=0, size=8)
        text = "".join(str(ds[i]["question"]) + str(ds[i]["answer"]) for i in range(8))
        digest = hashlib.md5(text.encode()).hexdigest()
    except BaseException as e:
        digest = "failed:" + type(e).__name__
    signal.alarm(0)
    print(name, digest, flush=True)
"""


def digests(hash_seed: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run(
        [sys.executable, "-c", _DIGESTS], env=env, capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines())


def main() -> None:
    first, again, second = digests("1"), digests("1"), digests("2")
    compared = [n for n in first if not first[n].startswith("failed")]
    unseeded = [n for n in compared if first[n] != again.get(n)]
    ordered = [n for n in compared if n not in unseeded and first[n] != second.get(n)]
    failed = [n for n in first if first[n].startswith("failed")]
    print(f"{len(first)} datasets; hash-ordered: {', '.join(ordered) or 'none'}")
    print(f"not reproducible under one hash seed either: {', '.join(unseeded) or 'none'}")
    if failed:
        print(f"not compared (failed or over 20 s on their defaults): {', '.join(failed)}")


if __name__ == "__main__":
    main()
