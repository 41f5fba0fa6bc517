"""Given-name and surname lexicons from the US Census Bureau's 1990 name lists (public domain).

The small NER model misses many names, most of all in lower case ("pt john smith"). A pair of
words whose first is a census given name and whose second a census surname is a name.

Rebuild the data files from the census lists (e.g. the dist.* files shipped by the `names`
package on PyPI): ``python -m phigate.detect.lexicon DIR``.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

DATA = Path(__file__).with_name("data")
GIVEN_FILE, SURNAME_FILE = DATA / "census_given_names.txt", DATA / "census_surnames.txt"
SURNAME_LIMIT = 20_000  # the most frequent surnames: about nine in ten Americans

# Census given names that are far more often ordinary words in clinical or technical text.
NOT_GIVEN = frozenset("""
january february march april may june july august september october november december monday tuesday
wednesday thursday friday saturday sunday will mark bill art hope joy faith grace page guy dean rose
ray jack sandy pat chance major king sky summer winter autumn dawn star sage ivy iris holly hazel
ruby amber crystal destiny precious lane else an in on so to my no go son al ed fit
""".split())


def _words(path: Path) -> frozenset[str]:
    return frozenset(line.strip() for line in path.read_text().splitlines() if line.strip())


@lru_cache(maxsize=1)
def given_names() -> frozenset[str]:
    return _words(GIVEN_FILE) - NOT_GIVEN


@lru_cache(maxsize=1)
def surnames() -> frozenset[str]:
    return _words(SURNAME_FILE)


def build(census_dir: Path) -> None:
    """Write the lower-cased lexicons from the census dist.* files."""
    def names(file: str, limit: int | None = None) -> list[str]:
        lines = (census_dir / file).read_text().splitlines()[:limit]
        return [line.split()[0].lower() for line in lines if line.strip()]

    given = sorted(set(names("dist.female.first") + names("dist.male.first")))
    DATA.mkdir(exist_ok=True)
    GIVEN_FILE.write_text("\n".join(given) + "\n")
    SURNAME_FILE.write_text("\n".join(sorted(set(names("dist.all.last", SURNAME_LIMIT)))) + "\n")


if __name__ == "__main__":
    build(Path(sys.argv[1]))
