"""The pixel check behind phash_dedup: crops and re-encodings align, other compositions do not."""
import io

import numpy as np
from PIL import Image, ImageDraw

from filters.image_align import Thumb, alignment_score


def _scene(seed: int, size=(160, 140), object_at=(40, 30)):
    """Shapes on a textured background; the same seed and object_at give the same picture."""
    rng = np.random.default_rng(seed)
    bg = (rng.random((size[1] // 8, size[0] // 8, 3)) * 255).astype(np.uint8)
    im = Image.fromarray(bg).resize(size, Image.BICUBIC)
    d = ImageDraw.Draw(im)
    x, y = object_at
    d.ellipse([x, y, x + 60, y + 60], fill=(250, 200, 30), outline=(90, 50, 0), width=3)
    d.rectangle([x + 18, y + 20, x + 26, y + 32], fill=(40, 30, 20))
    d.rectangle([x + 36, y + 20, x + 44, y + 32], fill=(40, 30, 20))
    return im


def _jpeg(im, q=75) -> bytes:
    b = io.BytesIO()
    im.save(b, format="JPEG", quality=q)
    return b.getvalue()


def test_a_cropped_resized_reencoded_copy_aligns():
    a = _scene(0)
    w, h = a.size
    copy = a.crop((int(w * 0.05), 0, w - int(w * 0.02), h - int(h * 0.06)))   # uneven crop: pHash moves
    copy = copy.resize((int(copy.width * 0.7), int(copy.height * 0.7)), Image.BICUBIC)
    score = alignment_score(Thumb(_jpeg(a, 90)), Thumb(_jpeg(copy, 70)))
    assert score >= 0.9    # phash_dedup's default min_alignment
    # symmetric: which picture is given first does not matter
    assert abs(alignment_score(Thumb(_jpeg(copy, 70)), Thumb(_jpeg(a, 90))) - score) < 1e-6


def test_another_composition_of_the_same_object_does_not_align():
    a = _scene(0, object_at=(40, 30))
    moved = _scene(0, object_at=(85, 60))      # same background and object, object elsewhere
    other = _scene(1, object_at=(40, 30))      # same object and place, other background
    assert alignment_score(Thumb(a), Thumb(moved)) < 0.9
    assert alignment_score(Thumb(a), Thumb(other)) < 0.9


def test_thumbnails_are_small_and_keep_the_original_size():
    t = Thumb(_jpeg(_scene(2, size=(300, 200))))
    assert (t.width, t.height) == (300, 200)
    assert max(t.pixels.shape[:2]) == 96 and t.pixels.dtype == np.uint8
    assert abs(t.scale - 96 / 300) < 1e-9


def test_aligned_answers_as_the_score_does_at_every_threshold():
    """`aligned` stops at the first scale that reaches the threshold: the same yes/no as the full score."""
    from filters.image_align import aligned

    a = _scene(0)
    w, h = a.size
    crop = a.crop((int(w * 0.05), 0, w - int(w * 0.02), h - int(h * 0.06)))
    pics = [Thumb(_jpeg(p, q)) for p, q in ((a, 90), (crop, 70), (_scene(0, object_at=(85, 60)), 80),
                                            (_scene(1), 80), (a.resize((40, 36)), 60))]
    for x in pics:
        for y in pics:
            score = alignment_score(x, y)
            for t in (-1.0, 0.0, 0.5, 0.8, 0.9, 0.95, score, np.nextafter(score, 2.0)):
                assert aligned(x, y, t) == (score >= t), (score, t)
