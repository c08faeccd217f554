"""Scope packs: shipped in-scope questions for the hazardous-knowledge areas a safety team removes.

A concept request (``harmful``) learns its scope from what it is given: a few prompts, a description
(``--expand``) and the rewrites and augmentations of both. A field such as biological-weapons
knowledge is far wider than a handful of examples, and the detector's concept scorer
(:mod:`lethe.guard.concept`) only knows the part of it the request shows. A pack is a curated
set of questions that spans such a field, area by area, written for Lethe from the public description
of the hazard categories in the WMDP paper (Li et al. 2024, arXiv 2403.03218, Sec. 3: biosecurity,
chemical security, cybersecurity), never from WMDP's items. The questions carry no answers.

A pack is added to a request (``lethe forget add --pack NAME``, the admin API's ``pack`` field,
``Guard.forget(pack=NAME)``). Its texts are public (they ship with the package), so, unlike an
operator's prompts, they are stored as they are, as the request's rewrites with their augmentations
(as expanded questions are), and the scorers train on them as positives: natural questions, not the
rule rewriter's keyword frame, which is what a user's question looks like.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from lethe.errors import LetheError

__all__ = ["PACKS", "Pack", "get_pack", "load_pack", "pack_areas", "pack_names"]


@dataclass(frozen=True)
class Pack:
    """One shipped scope: its kind, what it covers (usable as ``--describe``) and its file."""

    name: str
    kind: str
    describe: str
    file: str


PACKS: dict[str, Pack] = {p.name: p for p in (
    Pack("biosecurity", "harmful",
         "Hazardous biology that could help develop or use biological weapons: enhancing the transmissibility, "
         "virulence or immune evasion of pathogens, reverse genetics and synthesis of viruses, viral vectors, "
         "bacterial agents and toxins, producing and disseminating agents, acquiring agents and evading "
         "biosafety controls, and agricultural bioweapons.", "biosecurity.jsonl"),
    Pack("chemical-weapons", "harmful",
         "Hazardous chemistry that could help make or use chemical weapons or explosives: nerve, blister, "
         "choking and blood agents, their synthesis and precursors, procuring controlled chemicals, purifying "
         "and stabilising agents, evading detection, dispersal and munitions, and improvised explosives.",
         "chemical_weapons.jsonl"),
    Pack("offensive-cyber", "harmful",
         "Offensive cyber-security knowledge that could help attack computer systems: reconnaissance, writing "
         "exploits and shellcode, exploiting web, memory-corruption and industrial-control vulnerabilities, "
         "privilege escalation, lateral movement, command and control, evading defences, reverse engineering "
         "binaries and crafting malicious packets.", "offensive_cyber.jsonl"),
)}


def pack_names() -> list[str]:
    return sorted(PACKS)


def get_pack(name: str) -> Pack:
    try:
        return PACKS[name]
    except KeyError:
        raise LetheError(f"unknown scope pack '{name}' (use one of: {', '.join(pack_names())})") from None


@cache
def _rows(name: str) -> tuple[dict, ...]:
    text = (resources.files("lethe") / "resources" / "scopes" / get_pack(name).file).read_text(encoding="utf-8")
    return tuple(json.loads(line) for line in text.splitlines() if line.strip())


def load_pack(name: str, areas: list[str] | None = None) -> list[str]:
    """The pack's questions (optionally only some of its areas), in file order."""
    rows = _rows(name)
    if areas:
        known = {r["area"] for r in rows}
        unknown = sorted(set(areas) - known)
        if unknown:
            raise LetheError(f"pack '{name}' has no area {', '.join(unknown)} (areas: {', '.join(sorted(known))})")
    return [r["prompt"] for r in rows if not areas or r["area"] in areas]


def pack_areas(name: str) -> dict[str, int]:
    """Questions per area of a pack."""
    out: dict[str, int] = {}
    for r in _rows(name):
        out[r["area"]] = out.get(r["area"], 0) + 1
    return out
