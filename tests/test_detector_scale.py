"""The detector with many people forgotten: rarity-weighted names, scope entities, per-request decisions."""

from __future__ import annotations

import json

import pytest

from lethe import Guard
from lethe.guard.entities import EntityMatcher, entity_record, rarity
from lethe.guard.scope import (
    date_tokens,
    quoted_title_keys,
    quoted_titles,
    salient_entities,
    scope_records,
    swap_entities,
)

KEY = b"k" * 32


def _matcher(*names: str) -> EntityMatcher:
    m = EntityMatcher(KEY)
    m.set_entries([(f"r{i}", entity_record(n, KEY)) for i, n in enumerate(names)])
    return m


def test_common_words_and_short_tokens_are_never_fuzzy():
    m = _matcher("Jon Dessert", "Hina Ameen")
    assert m.match("What is the largest desert in the world?") == []  # common word, one edit from a name
    assert m.match("What did Ameeen write?") == []  # a lone fuzzy token needs length and rarity
    typo = m.match("Where was Hina Ameeen born?")[0]  # a full name with one typo still matches
    assert typo.request_id == "r1" and typo.fuzzy and typo.score >= 0.85


def test_someone_else_sharing_a_name_token_is_weak_evidence():
    m = _matcher("Jaime Vasquez")
    assert m.match("Where was Jaime Vasquez born?")[0].score == 1.0
    alone = m.match("Where was Vasquez born?")[0]
    other = m.match("Where was Elena Vasquez born?")[0]
    assert other.other_person and not alone.other_person
    assert other.score < 0.2 < alone.score
    assert m.match("What did Jaime Rodriguez write?")[0].score < 0.1
    apart = _matcher("Stefan Best").match("What genre is Stefan Berg best known for?")  # tokens apart
    assert apart and apart[0].score < 0.3


def test_surname_evidence_falls_with_commonness_and_sharing():
    assert rarity("smith") < rarity("vasquez") < rarity("akabueze") == 1.0
    common = _matcher("Anna Smith").match("What did Smith write?")[0].score
    rare = _matcher("Anna Akabueze").match("What did Akabueze write?")[0].score
    assert common < 0.5 * rare
    shared = _matcher("Anna Akabueze", "Obi Akabueze").match("What did Akabueze write?")[0].score
    assert shared < rare


def test_scope_entities_are_hashed_and_matched_whole():
    answers = ['Some of her works include "The Guilt Closet" and "Beneath the Veil of Deceit".',
               "She was born in Santiago, Chile on the 25th of February, 1958.",
               "She received the Edgar Allan Poe Award for Best Fact Crime."]
    kinds = {k for text in answers for k, _ in salient_entities(text)}
    assert {"title", "place", "date", "year", "prize"} <= kinds
    recs = scope_records(answers, ["Jaime Vasquez"], KEY)
    blob = json.dumps(recs).lower()
    for word in ("guilt", "closet", "santiago", "poe", "1958"):
        assert word not in blob
    m = EntityMatcher(KEY)
    m.set_entries([("r0", r) for r in recs])
    hit = m.match_scope("Who wrote 'The Guilt Closet'?", [], person_query=True)
    assert hit and hit[0].score >= 0.7
    assert m.match_scope("Who wrote 'The Guilt Trip'?", [], person_query=True) == []
    when = "Which writer was born on February 25, 1958?"
    assert m.match_scope(when, date_tokens(when), person_query=True)[0].score >= 0.7
    assert swap_entities("Who wrote 'The Guilt Closet'?", __import__("random").Random(0)) != "Who wrote 'The Guilt Closet'?"


def test_entities_of_several_words_match_in_their_order():
    recs = scope_records(["Who wrote 'Mirrors of the Burning Sparrows'?", "She won the Silver Birch Award."],
                         ["Ada Lin"], KEY)
    assert all("seq" in r for r in recs if len(r["tokens"]) >= 2)
    m = EntityMatcher(KEY)
    m.set_entries([("r0", r) for r in recs])
    assert m.match_scope("Who wrote 'Mirrors of the Burning Sparrows'?", [])[0].matched == ["title"]
    assert m.match_scope("Who is the author of the novel Mirrors of the Burning Sparrows?", [])  # unquoted
    assert m.match_scope("Who wrote 'Sparrows of the Burning Mirrors'?", []) == []  # same words, another book
    assert m.match_scope("Which author received the Silver Birch Award?", [])[0].matched == ["prize"]
    assert m.match_scope("Who got the Birch Silver Award?", []) == []
    assert m.match_scope("Mirrors, she said, are what the burning city never had; sparrows too.", []) == []
    inner = scope_records(["Who wrote 'The Burning Mirrors'?"], ["Ada Lin"], KEY)
    m.set_entries([("r1", r) for r in inner])
    longer = "Who wrote 'Sparrows of the Burning Mirrors'?"
    assert m.match_scope(longer, [], quoted=quoted_titles(longer)) == []  # a part of a longer title
    whole = "Who wrote 'The Burning Mirrors'?"
    assert m.match_scope(whole, [], quoted=quoted_titles(whole))[0].matched == ["title"]
    m.set_entries([("r0", r) for r in recs])
    old = [{k: v for k, v in r.items() if k != "seq"} for r in recs]  # a store written before word order
    m.set_entries([("r0", r) for r in old])
    assert m.match_scope("Who wrote 'Sparrows of the Burning Mirrors'?", [])


def _scope(text: str, m: EntityMatcher) -> float:
    hits = m.match_scope(text, date_tokens(text), person_query=True, quoted=quoted_titles(text),
                         quoted_keys=quoted_title_keys(text))
    return hits[0].score if hits else 0.0


def test_titles_with_possessives_and_repeated_words_are_read_whole():
    assert quoted_titles("Who wrote 'Hannah's Voice'?") == [["hannah", "voice"]]
    assert quoted_titles("It's 'Dune' and 'Emma' I like, don't you?") == [["dune"], ["emma"]]
    m = EntityMatcher(KEY)
    m.set_entries([("r0", r) for r in scope_records(['She wrote "The Amber Echoes".'], ["Ada Lin"], KEY)])
    assert _scope("Who wrote 'The Amber Echoes'?", m) >= 0.7
    assert _scope("Who wrote 'Echoes of the Amber Echoes'?", m) == 0.0  # the same words, another book
    m.set_entries([("r0", r) for r in scope_records(['She won the Silver Birch Award for "The Amber Echoes".'],
                                                    ["Ada Lin"], KEY)])
    prize = _scope("Who won the Silver Birch Award?", m)
    assert prize >= 0.7 and _scope("Who won the Silver Birch Award for 'The Amber Echoes'?", m) >= prize
    assert _scope("Who won the Silver Birch Award for 'Salt and Cinder'?", m) < 0.5 * prize  # another's book


def test_named_works_and_conjunctions_stay_specific_among_many_holders():
    # a title two forgotten people share is in scope for either; a city and a year that many hold apart
    # but one holds together identify that one
    def people(city: str) -> dict[str, list[dict]]:
        return {f"r{i}": scope_records([f"She was born in {city(i)}, Senegal in {1940 + i % 30}.",
                                        f'She wrote "Tide {i} Lanterns".'], ["Ada Lin"], KEY) for i in range(300)}

    def matcher(recs: dict[str, list[dict]]) -> EntityMatcher:
        m = EntityMatcher(KEY)
        m.set_entries([(rid, r) for rid, rs in recs.items() for r in rs])
        return m

    same = people(lambda i: "Dakar")
    same["r1"] += scope_records(['She wrote "The Salt Meridian".'], ["Ada Lin"], KEY)
    same["r2"] += scope_records(['She wrote "The Salt Meridian".'], ["Ada Lin"], KEY)
    m = matcher(same)
    assert _scope("Who wrote 'The Salt Meridian'?", m) >= 0.7
    assert _scope("Which writer was born in Dakar in 1941?", m) < 0.7  # ten people hold both
    assert _scope("Which author was born in Dakar?", m) < 0.3  # three hundred hold it
    m = matcher(people(lambda i: "Dakar" if i < 30 else "Thies"))
    assert _scope("Which author was born in Dakar?", m) < 0.3  # thirty hold it, ten hold 1941
    assert _scope("Which writer was born in Dakar in 1941?", m) >= 0.7  # r1 alone holds both

def test_a_shared_title_credited_to_someone_else_is_weak(tmp_path):
    g = Guard.open(tmp_path)
    g.forget(["Where was Ingrid Keller born?", "What is Ingrid Keller's best book?"], kind="privacy",
             entities=["Ingrid Keller"], rewriter="rule", progress=False,
             answers=["She was born in Bergen, Norway.", 'Her best book is "Whispers of the Sakura".'])
    assert g.detect("Who wrote 'Whispers of the Sakura'?").triggered
    assert g.detect("What is the plot of Ingrid Keller's 'Whispers of the Sakura'?").triggered
    other = g.detect("What is the plot of Lucas Bryant's 'Whispers of the Sakura'?")
    assert not other.triggered and other.components["scope"] < 0.5


PEOPLE = {
    "Ingrid Keller": ["Where was Ingrid Keller born?", "What genre does Ingrid Keller write?",
                      "What is the title of Ingrid Keller's first novel?", "Who were Ingrid Keller's parents?"],
    "Hao Liu": ["In what year was Hao Liu born?", "Which awards has Hao Liu received?",
                "What themes run through Hao Liu's novels?", "Where did Hao Liu grow up?"],
    "Nikolai Abilov": ["Where was Nikolai Abilov born?", "What books has Nikolai Abilov written?",
                       "What did Nikolai Abilov's father do?", "What genre is Nikolai Abilov known for?"],
}
ANSWERS = {"Nikolai Abilov": ["He was born in Astana, Kazakhstan.", 'He wrote "Kazakhstan Echoes" and "Unseen Rainbows".',
                              "His father was an artist.", "African American literature."]}


@pytest.fixture(scope="module")
def guard(tmp_path_factory):
    g = Guard.open(tmp_path_factory.mktemp("scale-home"))
    for name, qs in PEOPLE.items():
        g.forget(qs, kind="privacy", entities=[name], rewriter="rule", progress=False, answers=ANSWERS.get(name))
    return g


def test_per_request_decisions(guard):
    inside = ["How did Ingrid Keller's upbringing shape her writing?", "Has Hao Liu's work been adapted for film?",
              "Who wrote 'Unseen Rainbows'?"]
    outside = ["How did Kavya Keller's upbringing shape her writing?", "Has Hao Zhang's work been adapted for film?",
               "What is the largest desert in the world?", "Who wrote 'Pride and Prejudice'?",
               "Where was Emre Demir born?", "What genre does Paloma Cordero write?"]
    ins, outs = guard.detect_many(inside), guard.detect_many(outside)
    assert all(d.triggered for d in ins), [d.explain() for d in ins]
    assert not any(d.triggered for d in outs), [d.explain() for d in outs]
    d = ins[0]
    assert set(d.components) >= {"entity", "similarity", "scorer", "scope"} and "entity" in d.fired and d.request_id
    assert "scope" in ins[2].fired


def test_privacy_adds_do_not_refit_and_revoke_is_incremental(guard):
    det = guard.detector
    assert not det.scorer.fitted  # no concept request: the global head is not trained on people
    req = guard.forget(["Where was Omar Darwish born?", "What did Omar Darwish write?"], kind="privacy",
                       entities=["Omar Darwish"], rewriter="rule", progress=False)
    assert req.id in det._vectors and not det.scorer.fitted
    assert guard.detect("What is Omar Darwish's best-known book?").triggered
    assert guard.revoke(req.id)
    assert req.id not in det._vectors and not guard.detect("What is Omar Darwish's best-known book?").triggered


def test_answers_must_align(guard):
    from lethe.errors import LetheError

    with pytest.raises(LetheError, match="answers"):
        guard.forget(["Where was X Y born?"], answers=["a", "b"], rewriter="rule", progress=False)
