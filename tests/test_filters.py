"""Filters: each built-in on hand-made rows with known answers, recipes, errors, user filters, the CLI."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from datacurate.errors import UserError
from test_filters_helpers import row, run, uids_of, unit, write_holdout_npz, write_pool


def kept_idx(rows, got) -> list[int]:
    return [i for i, r in enumerate(rows) if r["uid"] in got]


# ----------------------------------------------------------------------------- metadata filters

BASIC_ROWS = [
    row(0),                                              # keep
    row(1, text="a red dog"),                            # 9 chars, 3 words: keep
    row(2, text="un chat noir dans la neige profonde"),  # French
    row(3, w=199),                                       # min side 199 < 200
    row(4, w=900, h=300),                                # aspect exactly 3.0: upstream keeps (<= 3.0)
    row(5, w=901, h=300),                                # aspect > 3
    row(6, text="a dog"),                                # 2 words: upstream needs > 2
    row(7, text="a b c"),                                # 3 words but 5 chars: upstream needs > 5
]


def test_basic_upstream_thresholds(tmp_path):
    pool = write_pool(tmp_path / "pool", BASIC_ROWS)
    got, rec = run(pool, "steps:\n  - {filter: basic}\n", tmp_path)
    assert kept_idx(BASIC_ROWS, got) == [0, 1, 4]
    assert rec["counts"][0]["rows_in"] == 8 and rec["counts"][0]["kept"] == 3


def test_basic_offline_size_and_language_off(tmp_path):
    pool = write_pool(tmp_path / "pool", BASIC_ROWS)
    got, _ = run(pool, "steps:\n  - {filter: basic, min_side: 48, english: false}\n", tmp_path)
    assert kept_idx(BASIC_ROWS, got) == [0, 1, 2, 3, 4]
    got, _ = run(pool, "steps:\n  - {filter: basic, lang_backend: py3langid}\n", tmp_path, "p3")
    assert kept_idx(BASIC_ROWS, got) == [0, 1, 4]


def test_caption_filter_is_upstreams(tmp_path):
    rows = [row(0, text="two dogs"), row(1, text="dogs"), row(2, text="a dog"), row(3, text="ein Hund im Schnee")]
    pool = write_pool(tmp_path / "pool", rows)
    got, _ = run(pool, "steps:\n  - {filter: caption}\n", tmp_path)
    assert kept_idx(rows, got) == [0]  # > 1 word and > 5 chars and English


def test_caption_counts_words_with_fasttexts_tokenizer():
    """Upstream's caption_filter counts len(fasttext.tokenize(text)); its basic filter len(text.split()).

    The expected counts are fastText's Dictionary::readWord read by hand: ASCII space, \\n \\r \\t \\v
    \\f and NUL separate words, every newline adds an "</s>" token, NBSP and U+001C do not separate."""
    from filters.builtin.basic import fasttext_token_count, words_and_chars

    cases = {"two dogs": 2, "dogs": 1, "": 0, "   ": 0, "a\u00a0dog": 1, "a\tdog": 2, "a\x00dog": 2,
             "a\ndog": 3, "dog\n": 2, "\n": 1, "a\x1cdog": 1, "a\r\ndog": 3, " a  b ": 2, "über straße": 2}
    assert {t: fasttext_token_count(t) for t in cases} == cases
    words, chars = words_and_chars(list(cases), "whitespace")
    assert list(words) == [len(t.split()) for t in cases] and list(chars) == [len(t) for t in cases]
    # where the two rules disagree, the caption filter follows fastText
    assert words_and_chars(["a\u00a0dog runs"], "fasttext")[0][0] == 2
    assert words_and_chars(["a\u00a0dog runs"], "whitespace")[0][0] == 3


def test_caption_filter_keeps_what_upstreams_tokenizer_keeps(tmp_path):
    rows = [row(0, text="a\u00a0dogfish"),      # 1 fastText word (NBSP joins): upstream drops
            row(1, text="dogfish\n"),           # "dogfish" + "</s>": 2 words, upstream keeps
            row(2, text="a\x00dogfish"),        # NUL separates: 2 words, upstream keeps
            row(3, text="dogfish")]             # 1 word
    pool = write_pool(tmp_path / "pool", rows)
    got, _ = run(pool, "steps:\n  - {filter: caption, english: false}\n", tmp_path)
    assert kept_idx(rows, got) == [1, 2]
    got, _ = run(pool, "steps:\n  - {filter: caption, english: false, tokenizer: whitespace}\n", tmp_path, "w")
    assert kept_idx(rows, got) == [0]


def test_thresholds_compare_in_the_columns_float32_as_upstream(tmp_path):
    """Upstream: ``df[key] >= threshold`` on the float32 column. A row scoring exactly float32(0.29) is
    kept at threshold 0.29 (in float64 it would fall below 0.29 and be dropped)."""
    scores = [0.29, 0.32, 0.2899, 0.33, 0.28, 0.3199]
    rows = [row(i, score=s) for i, s in enumerate(scores)]
    pool = write_pool(tmp_path / "pool", rows)
    col = np.asarray(scores, np.float32)
    for thr in (0.29, 0.32):
        assert np.float64(np.float32(thr)) < thr    # the tie that float64 gets wrong
        want = [i for i in range(len(scores)) if col[i] >= thr]     # upstream's comparison
        got, _ = run(pool, f"steps:\n  - {{filter: clip_score, model: fnet, threshold: {thr}}}\n", tmp_path, f"t{thr}")
        assert kept_idx(rows, got) == want and (0 in want if thr == 0.29 else 1 in want)


def test_no_filter_and_random(tmp_path):
    rows = [row(i) for i in range(40)]
    pool = write_pool(tmp_path / "pool", rows, per_shard=7)
    got, _ = run(pool, "steps:\n  - {filter: no_filter}\n", tmp_path)
    assert got == uids_of(rows, range(40))
    a, _ = run(pool, "steps:\n  - {filter: random, fraction: 0.25}\n", tmp_path, "a", seed=1)
    b, _ = run(pool, "steps:\n  - {filter: random, fraction: 0.25}\n", tmp_path, "b", seed=1)
    c, _ = run(pool, "steps:\n  - {filter: random, fraction: 0.25}\n", tmp_path, "c", seed=2)
    # upstream's top-fraction rule keeps scores >= the value at index int(n * f) of the sorted scores
    assert a == b and len(a) == int(40 * 0.25) + 1 and a != c
    d, _ = run(pool, "steps:\n  - {filter: random, fraction: 0.25, seed: 2}\n", tmp_path, "d", seed=1)
    assert d == c  # a seed in the recipe wins over --seed


def test_clip_score_threshold_and_top_fraction(tmp_path):
    scores = [0.05, 0.31, 0.29, 0.5, 0.1, 0.3, 0.2, 0.45, 0.15, 0.25]
    rows = [row(i, score=s) for i, s in enumerate(scores)]
    pool = write_pool(tmp_path / "pool", rows)
    got, rec = run(pool, "steps:\n  - {filter: clip_score, model: fnet, threshold: 0.3}\n", tmp_path)
    assert kept_idx(rows, got) == [1, 3, 5, 7]  # >= 0.3 (float32 0.3 compares equal)
    got, rec = run(pool, "steps:\n  - {filter: clip_score, model: fnet, top_fraction: 0.3}\n", tmp_path, "t")
    # n = int(10 * 0.3) = 3 -> threshold = 4th largest (0.30): upstream keeps 4 rows
    assert kept_idx(rows, got) == [1, 3, 5, 7]
    assert rec["counts"][0]["threshold"] == pytest.approx(0.3)
    got, _ = run(pool, "steps:\n  - {filter: clip_score, model: fnet, top_fraction: 0.2, keep: low}\n", tmp_path, "l")
    assert kept_idx(rows, got) == [0, 4, 8]
    got, _ = run(pool, "steps:\n  - {filter: fnet_score}\n", tmp_path, "f")
    assert kept_idx(rows, got) == [1, 3, 5, 7]


def test_laion2b(tmp_path):
    rows = [row(0, score=0.28, clip_b32_similarity_score=0.28), row(1, clip_b32_similarity_score=0.27),
            row(2, text="ein roter Fuchs im tiefen Schnee", clip_b32_similarity_score=0.9),
            row(3, clip_b32_similarity_score=0.5)]
    pool = write_pool(tmp_path / "pool", rows)
    got, _ = run(pool, "steps:\n  - {filter: laion2b}\n", tmp_path)
    assert kept_idx(rows, got) == [0, 3]


def test_text_based_vocabularies(tmp_path):
    rows = [row(0, text="a photo of two tabby cats on a sofa"), row(1, text="a photo of a red sports car"),
            row(2, text="the goldfish swims in a bowl"), row(3, text="un poisson rouge goldfish dans un bocal"),
            row(4, text="a yellow triangle on white")]
    pool = write_pool(tmp_path / "pool", rows)
    got, _ = run(pool, "steps:\n  - {filter: text_based, vocabulary: imagenet1k}\n", tmp_path)  # open_clip's names
    assert kept_idx(rows, got) == [0, 1, 2]  # tabby cat, sports car, goldfish; French dropped
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("triangle\ntabby cat\n")
    got, _ = run(pool, f"steps:\n  - {{filter: text_based, vocabulary: {vocab}}}\n", tmp_path, "v")
    assert kept_idx(rows, got) == [0, 4]


def test_uid_list_and_wrong_dtype(tmp_path):
    from datacurate.uids import write_subset

    rows = [row(i) for i in range(6)]
    pool = write_pool(tmp_path / "pool", rows)
    write_subset(tmp_path / "keep.npy", [rows[1]["uid"], rows[4]["uid"]])
    got, _ = run(pool, f"steps:\n  - {{filter: uid_list, path: {tmp_path / 'keep.npy'}}}\n", tmp_path)
    assert kept_idx(rows, got) == [1, 4]
    np.save(tmp_path / "bad.npy", np.arange(3, dtype=np.int64))
    with pytest.raises(UserError, match=r"bad\.npy: wrong dtype int64"):
        run(pool, f"steps:\n  - {{filter: uid_list, path: {tmp_path / 'bad.npy'}}}\n", tmp_path, "b")


# ----------------------------------------------------------------------------- embedding filters

E = np.eye(8, dtype=np.float32)


def test_image_based_keeps_clusters_near_target(tmp_path):
    rng = np.random.default_rng(0)
    near_a = [E[0] + 0.05 * rng.normal(size=8) for _ in range(6)]
    near_b = [E[1] + 0.05 * rng.normal(size=8) for _ in range(6)]
    rows = [row(i, emb=v) for i, v in enumerate(near_a + near_b)]
    rows[2]["text"] = "ok"  # fails upstream's caption filter: dropped although in a target cluster
    pool = write_pool(tmp_path / "pool", rows, per_shard=5)
    write_holdout_npz(pool, "eval", np.stack([E[0], E[0] + 0.02]))
    got, rec = run(pool, "steps:\n  - {filter: image_based, model: fnet, clusters: 2}\n", tmp_path)
    assert kept_idx(rows, got) == [0, 1, 3, 4, 5]
    assert rec["passes"] == 3  # rows pass + the two passes of the global step


def test_image_based_too_many_clusters_is_clear(tmp_path):
    rows = [row(i, emb=E[i % 8]) for i in range(6)]
    pool = write_pool(tmp_path / "pool", rows)
    write_holdout_npz(pool, "eval", E[:2])
    with pytest.raises(UserError, match=r"r\.yaml: steps\[0\] \(image_based\): clusters=100000 but only 6 rows"):
        run(pool, "steps:\n  - {filter: image_based, model: fnet}\n", tmp_path)


def test_exact_dedup_keeps_smallest_uid(tmp_path):
    rows = [row(i) for i in range(9)]
    for i in (1, 4, 7):
        rows[i]["sha256"] = "f" * 64
    pool = write_pool(tmp_path / "pool", rows)
    got, _ = run(pool, "steps:\n  - {filter: exact_dedup}\n", tmp_path)
    first = min((rows[i]["uid"] for i in (1, 4, 7)))
    assert got == uids_of(rows, [0, 2, 3, 5, 6, 8]) | {first}


def test_near_and_semantic_dedup(tmp_path):
    base = [E[i] for i in range(6)]
    rows = [row(i, emb=v) for i, v in enumerate(base)]
    rows += [row(6, emb=E[0] + 0.01 * E[3]), row(7, emb=E[2] + 0.02 * E[5])]  # near copies of 0 and 2
    pool = write_pool(tmp_path / "pool", rows, per_shard=3)
    got, _ = run(pool, "steps:\n  - {filter: near_dedup, model: fnet, threshold: 0.95}\n", tmp_path)
    assert len(got) == 6
    assert uids_of(rows, [1, 3, 4, 5]) <= got
    for a, b in ((0, 6), (2, 7)):
        assert len(got & uids_of(rows, [a, b])) == 1
    got2, _ = run(pool, "steps:\n  - {filter: semantic_dedup, model: fnet, clusters: 3, eps: 0.05}\n", tmp_path, "s")
    assert len(got2) == 6 and uids_of(rows, [1, 3, 4, 5]) <= got2
    for a, b in ((0, 6), (2, 7)):
        assert len(got2 & uids_of(rows, [a, b])) == 1


def test_decontaminate_embeddings(tmp_path):
    rows = [row(i, emb=E[i]) for i in range(6)]
    rows[4]["emb"] = E[6] + 0.01 * E[0]   # a copy of eval image 0 (E[6])
    pool = write_pool(tmp_path / "pool", rows)
    write_holdout_npz(pool, "eval", np.stack([E[6], E[7]]))
    got, _ = run(pool, "steps:\n  - {filter: decontaminate, model: fnet}\n", tmp_path)
    assert kept_idx(rows, got) == [0, 1, 2, 3, 5]


def _png(img) -> bytes:
    b = io.BytesIO()
    img.save(b, format="PNG")
    return b.getvalue()


def _picture(seed: int, size: int = 96):
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    im = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 255, 3)))
    d = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = rng.integers(0, size - 20, 2)
        d.rectangle([int(x0), int(y0), int(x0) + 20, int(y0) + 30], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return im


def _write_tar(pool: Path, rows, images) -> None:
    (pool / "shards").mkdir(exist_ok=True)
    with tarfile.open(pool / "shards" / "00000.tar", "w") as tf:
        for r, im in zip(rows, images):
            b = io.BytesIO()
            im.save(b, format="JPEG", quality=90)
            info = tarfile.TarInfo(f"{r['key']}.jpg")
            info.size = len(b.getvalue())
            tf.addfile(info, io.BytesIO(b.getvalue()))


def test_decontaminate_phash(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    evals = [_picture(100), _picture(101)]
    (tmp_path / "pool" / "holdout").mkdir(parents=True)
    pq.write_table(pa.table({"item_id": ["e0", "e1"], "image": [_png(e) for e in evals]}),
                   tmp_path / "pool" / "holdout" / "eval.parquet")
    images = [_picture(i) for i in range(5)]
    images[3] = evals[1].resize((150, 150))  # a resized copy of an eval image
    rows = [row(i) for i in range(5)]
    pool = write_pool(tmp_path / "pool", rows, per_shard=5)
    _write_tar(pool, rows, images)
    got, _ = run(pool, "steps:\n  - {filter: decontaminate_phash}\n", tmp_path)
    assert kept_idx(rows, got) == [0, 1, 2, 4]


def test_phash_dedup_with_and_without_embeddings(tmp_path):
    images = [_picture(i) for i in range(5)]
    images[4] = images[1].resize((130, 130)).crop((2, 2, 128, 128))  # a near copy of picture 1
    embs = [E[i] for i in range(5)]
    rows = [row(i, emb=e) for i, e in enumerate(embs)]
    pool = write_pool(tmp_path / "pool", rows, per_shard=5)
    _write_tar(pool, rows, images)
    got, _ = run(pool, "steps:\n  - {filter: phash_dedup, model: ''}\n", tmp_path)
    assert len(got) == 4 and uids_of(rows, [0, 2, 3]) <= got and len(got & uids_of(rows, [1, 4])) == 1
    # the embeddings say 1 and 4 differ (orthogonal): with the model, both stay
    got, _ = run(pool, "steps:\n  - {filter: phash_dedup, model: fnet, min_similarity: 0.9}\n", tmp_path, "m")
    assert got == uids_of(rows, range(5))


# ----------------------------------------------------------------------------- recipes

def test_intersect_union_chain_and_counts(tmp_path):
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
    rows = [row(i, score=s) for i, s in enumerate(scores)]
    for i in (1, 3, 5):
        rows[i]["text"] = "ok"  # fails basic
    pool = write_pool(tmp_path / "pool", rows)
    recipe = """
name: combo
steps:
  - intersect:
      - {filter: basic, label: captions}
      - {filter: clip_score, model: fnet, top_fraction: 0.5}
"""
    got, rec = run(pool, recipe, tmp_path)
    # top 50% of all 10 rows: n=5 -> threshold 0.4 -> rows 0..5; minus the bad captions
    assert kept_idx(rows, got) == [0, 2, 4]
    recipe_chain = "steps:\n  - {filter: basic}\n  - {filter: clip_score, model: fnet, top_fraction: 0.5}\n"
    got, rec = run(pool, recipe_chain, tmp_path, "chain")
    # the fraction applies to the 7 survivors: n=3 -> threshold = 4th best survivor (0.3)
    assert kept_idx(rows, got) == [0, 2, 4, 6]
    assert [c["kept"] for c in rec["counts"]] == [7, 4]
    recipe_union = """
steps:
  - union:
      - {filter: clip_score, model: fnet, threshold: 0.85}
      - {filter: clip_score, model: fnet, threshold: 0.08, keep: low}
"""
    got, rec = run(pool, recipe_union, tmp_path, "union")
    assert kept_idx(rows, got) == [0, 9]
    assert rec["counts"][-1]["filter"] == "union" and rec["counts"][-1]["kept"] == 2
    recipe_nested = """
steps:
  - union:
      - chain:
          - {filter: basic}
          - {filter: clip_score, model: fnet, threshold: 0.65}
      - {filter: clip_score, model: fnet, threshold: 0.08, keep: low}
"""
    got, rec = run(pool, recipe_nested, tmp_path, "nested")
    assert kept_idx(rows, got) == [0, 2, 9]
    assert [c["step"] for c in rec["counts"]] == [
        "steps[0].union[0].chain[0]", "steps[0].union[0].chain[1]", "steps[0].union[0]", "steps[0].union[1]",
        "steps[0]"]


@pytest.mark.parametrize("name", ["no_filter", "random_30", "basic", "basic_offline", "text_based",
                                  "clip_score_top30", "laion2b", "image_based", "image_based_and_clip",
                                  "dedup_clip", "decontaminate_dedup_clip", "semdedup_clip"])
def test_builtin_recipes_load(name):
    from filters.recipe import load_recipe

    r = load_recipe(name)
    assert r.steps and r.description


def _refused(tmp_path, text: str, match: str):
    from filters.recipe import load_recipe

    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(UserError, match=match):
        load_recipe(p)


def test_recipe_errors_name_file_step_and_field(tmp_path):
    _refused(tmp_path, "steps:\n  - {filter: basik}\n", r"bad\.yaml: steps\[0\]: unknown filter 'basik'; did you mean basic")
    _refused(tmp_path, "steps:\n  - {filter: no_filter}\n  - {filter: basic, min_wrds: 3}\n",
             r"bad\.yaml: steps\[1\] \(basic\): unknown field 'min_wrds'")
    _refused(tmp_path, "steps:\n  - {filter: basic, min_side: big}\n",
             r"steps\[0\] \(basic\): field 'min_side' must be int, got str 'big'")
    _refused(tmp_path, "steps:\n  - {filter: random, fraction: 1.5}\n",
             r"steps\[0\] \(random\): field 'fraction' = 1.5 is out of range \[0.0, 1.0\]")
    _refused(tmp_path, "steps:\n  - intersect:\n      - {filter: clip_score, model: fnet}\n",
             r"steps\[0\]\.intersect\[0\] \(clip_score\): .*add 'top_fraction' or 'threshold'")
    _refused(tmp_path, "steps:\n  - {filter: clip_score, model: fnet, top_fraction: 3}\n",
             r"field 'top_fraction' must be a number in \(0, 1\]")
    _refused(tmp_path, "steps:\n  - {filter: basic, top_fraction: 0.3}\n",
             r"field 'top_fraction' applies to score filters")
    _refused(tmp_path, "name: x\nstep: []\n", r"bad\.yaml: unknown top-level field")
    _refused(tmp_path, "steps:\n  - {filter: image_based, basic: true}\n", r"unknown field 'basic'")
    _refused(tmp_path, "steps:\n  - {filter: 'nosuchmodule_xyz:fn'}\n", r"cannot import module 'nosuchmodule_xyz'")


def test_missing_column_and_misaligned_embeddings(tmp_path):
    rows = [row(i, emb=E[i]) for i in range(6)]
    pool = write_pool(tmp_path / "pool", rows, per_shard=3)
    with pytest.raises(UserError, match=r"00000\.parquet: no column 'clip_b32_similarity_score'.*clip_score"):
        run(pool, "steps:\n  - {filter: clip_score, threshold: 0.3}\n", tmp_path)
    np.savez(pool / "metadata" / "00001.npz", fnet_img=np.zeros((2, 8), np.float16))
    with pytest.raises(UserError, match=r"00001\.npz: embeddings 'fnet_img' have 2 rows but 00001\.parquet has 3: "
                                        r"misaligned"):
        run(pool, "steps:\n  - {filter: near_dedup}\n", tmp_path, "m")


def test_user_filter_from_module_path(tmp_path, monkeypatch):
    mod = tmp_path / "my_filters_mod.py"
    mod.write_text('''
import numpy as np
from filters import Filter, Needs, Param, filter_function

@filter_function(columns=["text"], params=(Param("word", str, "fox"),))
def has_word(batch, word):
    """keep captions containing a word"""
    return np.array([word in t.split() for t in batch.texts()])

class LongCaption(Filter):
    """keep captions longer than n characters"""
    name = "long_caption"
    params = (Param("n", int, 10, min=0),)
    def needs(self):
        return Needs(["text"])
    def __call__(self, batch):
        return np.array([len(t) > self.n for t in batch.texts()])

def plain(batch, min_w=0):
    return batch.column("original_width") >= min_w
''')
    monkeypatch.syspath_prepend(str(tmp_path))
    rows = [row(0, text="a red fox"), row(1, text="a blue whale swimming", w=300), row(2, text="fox")]
    pool = write_pool(tmp_path / "pool", rows)
    got, _ = run(pool, "steps:\n  - {filter: 'my_filters_mod:has_word'}\n", tmp_path, "a")
    assert kept_idx(rows, got) == [0, 2]
    got, _ = run(pool, "steps:\n  - {filter: 'my_filters_mod:has_word', word: whale}\n", tmp_path, "b")
    assert kept_idx(rows, got) == [1]
    got, _ = run(pool, "steps:\n  - {filter: 'my_filters_mod:LongCaption', n: 5}\n", tmp_path, "c")
    assert kept_idx(rows, got) == [0, 1]
    got, _ = run(pool, "steps:\n  - {filter: 'my_filters_mod:plain', min_w: 290}\n", tmp_path, "d")
    assert kept_idx(rows, got) == [1]
    with pytest.raises(UserError, match=r"\(my_filters_mod:has_word\): field 'word' must be str"):
        run(pool, "steps:\n  - {filter: 'my_filters_mod:has_word', word: 3}\n", tmp_path, "e")


def test_entry_point_group_is_read(monkeypatch):
    from importlib import metadata

    from filters import registry

    class EP:
        name, value = "ep_filter", "x:y"

        def load(self):
            def keep_all(batch):
                return np.ones(len(batch), bool)
            return keep_all

    monkeypatch.setattr(metadata, "entry_points", lambda group=None: [EP()] if group == registry.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "_LOADED", False)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    assert registry.get_filter("ep_filter").name == "ep_filter"


# ----------------------------------------------------------------------------- the command line

def test_cli_list_and_run(tmp_path, capsys):
    from datacurate.cli import main
    from datacurate.uids import read_subset

    assert main(["filter", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("basic", "random", "clip_score", "image_based", "exact_dedup", "near_dedup", "semantic_dedup", "phash_dedup",
                 "decontaminate", "decontaminate_phash", "laion2b", "text_based", "fnet_score", "no_filter"):
        assert f"\n  {name}  [" in out
    assert "min_side: int (default 200" in out and "clip_score_top30" in out and "image_based_and_clip" in out

    pool = write_pool(tmp_path / "pool", BASIC_ROWS)
    out_npy = tmp_path / "sub" / "basic.npy"
    assert main(["filter", "--pool", str(pool), "--recipe", "basic", "--out", str(out_npy), "--quiet"]) == 0
    arr = read_subset(out_npy)
    assert len(arr) == 3
    rec = json.loads((tmp_path / "sub" / "basic.json").read_text())
    assert rec["kept"] == 3 and rec["pool_rows"] == 8 and len(rec["pool_fingerprint"]) == 64
    assert rec["recipe"]["name"] == "basic" and rec["counts"][0]["kept"] == 3 and rec["seconds"] >= 0
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["basic.json", "basic.npy"]
    # a bad recipe: one clear line, exit code 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - {filter: nope}\n")
    assert main(["filter", "--pool", str(pool), "--recipe", str(bad), "--out", str(tmp_path / "x.npy")]) == 2
    assert "bad.yaml: steps[0]: unknown filter 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "x.npy").exists()


def test_the_registry_loads_once_when_threads_ask_at_the_same_time():
    """`datacurate run` makes two recipes' subsets at once: both threads look filters up in a fresh
    process, and neither may find the registry half-filled."""
    import subprocess
    import sys

    code = ("import threading\n"
            "from filters.registry import get_filter\n"
            "errors = []\n"
            "def go():\n"
            "    try:\n"
            "        get_filter('no_filter')\n"
            "    except Exception as e:\n"
            "        errors.append(e)\n"
            "ts = [threading.Thread(target=go) for _ in range(8)]\n"
            "[t.start() for t in ts]\n"
            "[t.join() for t in ts]\n"
            "print(len(errors), errors[:1])\n")
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("0 "), r.stdout


def test_hash_pairs_in_blocks_are_the_brute_force_pairs():
    """phash_dedup's candidates are searched a block of rows and a chunk of pairs at a time (the whole
    base pool at once took 45 GB); the blocks must not change which pairs come out."""
    from filters.builtin.dedup import hash_pairs

    rng = np.random.default_rng(7)
    base = rng.integers(0, 2**63, 6, dtype=np.uint64)          # 6 families of hashes: many close pairs
    flips = rng.random((60, 64)) < 0.08
    bits = (np.uint64(1) << np.arange(64, dtype=np.uint64))
    hashes = base[rng.integers(0, 6, 60)] ^ (flips * bits).sum(axis=1).astype(np.uint64)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    x[::2] = x[0]                                              # half the rows share one embedding
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ham = np.array([[bin(int(a) ^ int(b)).count("1") for b in hashes] for a in hashes])
    want_h = {(i, j) for i in range(60) for j in range(i + 1, 60) if ham[i, j] <= 12}
    want_hx = {(i, j) for i, j in want_h if x[i] @ x[j] >= 0.9}
    assert 50 < len(want_hx) < len(want_h)                     # both tests bite
    for block_rows, chunk in ((4096, 1 << 18), (7, 5), (1, 1)):
        s, d = hash_pairs(hashes, None, 12, 0.9, block_rows, chunk)
        assert sorted(zip(s.tolist(), d.tolist())) == sorted(want_h)
        s, d = hash_pairs(hashes, x, 12, 0.9, block_rows, chunk)
        assert sorted(zip(s.tolist(), d.tolist())) == sorted(want_hx)
