"""Print the recall of PHI redaction per kind on the synthetic corpus, and what it alters of the
clinical prose: ``python -m tests.audit.phi_report [--notes N] [--misses]``."""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "medai.settings")
os.environ.setdefault("MEDAI_ENV", "test")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--notes", type=int, default=400)
    parser.add_argument("--seed", type=int, default=None, help="another corpus (a held-out check)")
    parser.add_argument("--misses", action="store_true", help="list every identifier that leaked")
    args = parser.parse_args(argv)

    from apps.audit.redaction import redact
    from tests.audit.phi_corpus import clinical_false_positives, generate, score

    notes = generate(args.notes, **({"seed": args.seed} if args.seed is not None else {}))
    scores = score(redact, notes)
    print(f"{len(notes)} synthetic notes, {sum(s.planted for s in scores.values())} planted identifiers\n")
    print(f"{'kind':<16}{'planted':>8}{'caught':>8}{'recall':>9}")
    for s in scores.values():
        print(f"{s.kind:<16}{s.planted:>8}{s.caught:>8}{s.recall:>9.1%}")
    terms, sentences = clinical_false_positives(redact)
    from tests.audit.phi_corpus import CLINICAL_SENTENCES, CLINICAL_TERMS

    print(f"\nclinical terms altered: {len(terms)}/{len(CLINICAL_TERMS)} ({len(terms) / len(CLINICAL_TERMS):.1%})")
    print(
        f"clinical sentences altered: {len(sentences)}/{len(CLINICAL_SENTENCES)}"
        f" ({len(sentences) / len(CLINICAL_SENTENCES):.1%})"
    )
    for t in terms + sentences:
        print(f"  altered: {t!r} -> {redact(t)!r}")
    if args.misses:
        for s in scores.values():
            for value, parts in s.misses:
                print(f"  missed {s.kind}: {value!r} (left {parts})")
    return 0 if all(s.recall >= 0.99 for s in scores.values()) and not terms else 1


if __name__ == "__main__":
    sys.exit(main())
