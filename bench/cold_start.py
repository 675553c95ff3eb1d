"""Cold-start benchmark: what `generate` pays to import, and what the languages add.

Prints the median wall time, over fresh Python processes, of importing
- the vendor packages `generate` needs anyway (functions-framework, supabase, twilio,
  google-cloud-secret-manager, requests, phonenumbers);
- `generate/main.py` itself (those packages, our code and the six catalogues);
- the catalogues alone (shared/catalogue.py reading shared/languages/*.toml);
and the first plural and number of a language (Babel's CLDR data, loaded on first use), so
the ratio main / packages can be checked against the 1.15x target. No language detection
library is loaded: a text's language comes from its own keyword and command words.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 7
PACKAGES = (
    "import functions_framework, supabase, twilio.rest, requests, phonenumbers;"
    " from google.cloud import secretmanager"
)
GENERATE = "import sys; sys.path.insert(0, 'generate'); import main"
CATALOGUES = "import shared.catalogue"
FIRST_PLURAL = (
    "from shared.catalogue import phrasebook; phrasebook('es').count('limit_per_day', 1000)"
)


def median_ms(code: str) -> float:
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def parse_ms() -> float:
    """Reading and checking the shape of the six catalogues, in this process (median)."""
    from shared.catalogue import load_catalogues

    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        load_catalogues()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    bare = median_ms("pass")
    packages = median_ms(PACKAGES) - bare
    generate = median_ms(GENERATE) - bare
    catalogues = median_ms(CATALOGUES) - bare
    plural = median_ms(FIRST_PLURAL) - bare - catalogues
    print(f"cold start of generate ({ROUNDS} fresh processes each, median, less bare Python):")
    print(f"  packages it needs anyway       {packages:7.0f} ms")
    print(f"  generate/main.py               {generate:7.0f} ms   {generate / packages:5.2f}x")
    print(f"  importing shared/catalogue.py  {catalogues:7.0f} ms   (tomllib included)")
    print(f"  of which reading the six files {parse_ms():7.1f} ms")
    print(f"  first plural + number (Babel)  {plural:7.0f} ms   (on the first reply that counts)")


if __name__ == "__main__":
    main()
