"""Which concept goes where, and which pool sample shows what: decided from the seed alone.

Concepts are split per emojibase group (so every group is represented in every split)
into eval / trusted / pool; the eval and trusted splits are the same for every scale of
one seed. The pool side may be subsampled (``micro``) to keep a few samples per concept.
"""
from __future__ import annotations

import hashlib
import random
from functools import lru_cache

from .defects import DUPLICATES, Spec

SPLIT_FRACTIONS = {"eval": 0.2, "trusted": 0.2}     # the rest is the pool side


def split_concepts(concepts: list, seed: int, pool_concepts: int | None = None) -> dict:
    """{"pool": [...], "trusted": [...], "eval": [...]} of Concept, each sorted by id."""
    by_group: dict = {}
    for c in concepts:
        by_group.setdefault(c.group, []).append(c)
    out = {"pool": [], "trusted": [], "eval": []}
    for g in sorted(by_group):
        cs = sorted(by_group[g], key=lambda c: c.id)
        random.Random(f"datacurate-split/{seed}/{g}").shuffle(cs)
        n_eval = max(1, round(len(cs) * SPLIT_FRACTIONS["eval"]))
        n_trusted = max(1, round(len(cs) * SPLIT_FRACTIONS["trusted"]))
        out["eval"] += cs[:n_eval]
        out["trusted"] += cs[n_eval:n_eval + n_trusted]
        out["pool"].append(cs[n_eval + n_trusted:])
    # some concepts share their art pixel for pixel (Twemoji draws several families alike;
    # Norway's flag is Svalbard's): such a concept leaves the later split, so that no
    # held-out image is also a trusted or pool image
    taken: set = set()
    for key in ("eval", "trusted"):
        kept = [c for c in out[key] if not (_art_keys(c) & taken)]
        for c in kept:
            taken |= _art_keys(c)
        out[key] = kept
    out["pool"] = [[c for c in cs if not (_art_keys(c) & taken)] for cs in out["pool"]]
    pool_total = sum(len(cs) for cs in out["pool"])
    pool = []
    for cs in out["pool"]:
        if pool_concepts is not None and pool_concepts < pool_total:
            cs = cs[:max(2, round(len(cs) * pool_concepts / pool_total))]
        pool += cs
    out["pool"] = pool
    return {k: sorted(v, key=lambda c: c.id) for k, v in out.items()}


def _art_keys(concept) -> frozenset:
    """sha256 of the RGBA pixels of every rendition of a concept (cached per file)."""
    return frozenset(_pixel_hash(r.path) for r in concept.renditions)


@lru_cache(maxsize=None)
def _pixel_hash(path: str) -> str:
    from PIL import Image

    with Image.open(path) as im:
        return hashlib.sha256(im.convert("RGBA").tobytes()).hexdigest()


def _pick_rendition(rng: random.Random, concept):
    base = [r for r in concept.renditions if r.base]
    skins = [r for r in concept.renditions if not r.base]
    return rng.choice(skins) if skins and rng.random() < 0.4 else rng.choice(base)


def _spec(index, seed, defect, r, c, **kw) -> Spec:
    return Spec(index=index, seed=seed, defect=defect, item_id=r.item_id, path=r.path, label=r.label,
                tags=tuple(r.tags), source=r.source, group=c.group, subgroup=c.subgroup, **kw)


def _foreign(rng, r, c, translations):
    """(locale, label, tags) of a real CLDR translation that differs from the English label."""
    for hexcode in (r.hexcode, c.renditions[0].hexcode):
        tr = translations.get(hexcode) or {}
        locs = [loc for loc in sorted(tr) if tr[loc][0].strip().lower() != r.label.lower()]
        if locs:
            loc = rng.choice(locs)
            return loc, tr[loc][0], tuple(tr[loc][1])
    return None


def _other(rng, c, pool):
    """The caption context of another concept: other subgroup, neither label inside the other."""
    for _ in range(1000):
        o = rng.choice(pool)
        a, b = o.label.lower(), c.label.lower()
        if o.subgroup != c.subgroup and a not in b and b not in a:
            r = _pick_rendition(rng, o)
            from .compose import STYLE_OF

            return {"label": r.label, "tags": tuple(r.tags), "group": o.group, "subgroup": o.subgroup,
                    "style": STYLE_OF[r.source],
                    "item_id": r.item_id}
    raise RuntimeError(f"no concept to swap a caption with for {c.id}")


def plan_samples(splits: dict, translations: dict, counts: dict, seed: int) -> list[Spec]:
    """One Spec per pool sample, in plan order (originals first, then duplicates)."""
    rng = random.Random(f"datacurate-plan/{seed}")
    kinds = [d for d, n in counts.items() if d not in DUPLICATES and d != "eval_overlap" for _ in range(n)]
    rng.shuffle(kinds)
    pool = splits["pool"]
    order: list = []
    specs: list[Spec] = []
    for i, d in enumerate(kinds):
        if not order:                              # every concept once per round, in random order
            order = list(pool)
            rng.shuffle(order)
        c = order.pop()
        r = _pick_rendition(rng, c)
        kw = {}
        if d == "foreign_language":
            f = _foreign(rng, r, c, translations)
            while f is None:                       # no translation differs: take another concept
                c = rng.choice(pool)
                r = _pick_rendition(rng, c)
                f = _foreign(rng, r, c, translations)
            kw["foreign"] = f
        elif d == "swapped_caption":
            kw["other"] = _other(rng, c, pool)
        specs.append(_spec(i, seed, d, r, c, **kw))
    evals = [(c, r) for c in splits["eval"] for r in c.renditions if r.base]
    for _ in range(counts.get("eval_overlap", 0)):
        c, r = evals[rng.randrange(len(evals))]
        specs.append(_spec(len(specs), seed, "eval_overlap", r, c))
    clean = [s.index for s in specs if s.defect == "none"]
    n_dup = sum(counts.get(d, 0) for d in DUPLICATES)
    originals = rng.sample(clean, n_dup)
    dups = [d for d in DUPLICATES for _ in range(counts.get(d, 0))]
    for d, o in zip(dups, originals):
        src = specs[o]
        s = Spec(index=len(specs), seed=seed, defect=d, item_id=src.item_id, path=src.path, label=src.label,
                 tags=src.tags, source=src.source, group=src.group, subgroup=src.subgroup, dup_of=o)
        specs.append(s)
    return specs
