"""Helpers for the eval tests: task folders in clip_benchmark's layout, a stub model with known
embeddings, a hand-made held-out parquet, a random-init tiny run."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np


def png_with_index(i: int, size: int = 8) -> bytes:
    """An RGB PNG whose first pixel's red value is ``i`` (the stub model reads it back)."""
    from PIL import Image

    img = Image.new("RGB", (size, size), (i, 0, 0))
    b = io.BytesIO()
    img.save(b, format="PNG")
    return b.getvalue()


def write_wds_task(folder: Path, samples: list, spec: dict, classnames=None, templates=None, metas=None,
                   shards: int = 1) -> Path:
    """A task folder: test/{0..}.tar + nshards.txt, task.yaml, classnames/templates files."""
    import webdataset as wds
    import yaml

    folder = Path(folder)
    (folder / "test").mkdir(parents=True, exist_ok=True)
    per = -(-len(samples) // shards)
    for s in range(shards):
        with wds.TarWriter(str(folder / "test" / f"{s}.tar")) as w:
            for i in range(s * per, min(len(samples), (s + 1) * per)):
                png, target = samples[i]
                rec = {"__key__": f"k{i:05d}", "png": png}
                if isinstance(target, list):
                    rec["txt"] = "\n".join(target)
                elif target is not None:
                    rec["cls"] = int(target)
                if metas is not None:
                    rec["npy"] = np.asarray(metas[i])
                w.write(rec)
    (folder / "test" / "nshards.txt").write_text(f"{shards}\n")
    if classnames:
        (folder / "classnames.txt").write_text("\n".join(classnames) + "\n")
    if templates:
        (folder / "zeroshot_classification_templates.txt").write_text("\n".join(templates) + "\n")
    if spec is not None:
        (folder / "task.yaml").write_text(yaml.safe_dump(spec))
    return folder


class StubModel:
    """encode_image reads the sample index from the first pixel and returns a preset row;
    encode_text returns the preset row of each prompt/caption (via StubTokenizer ids)."""

    def __init__(self, image_table, text_table):
        import torch

        self.image_table = torch.as_tensor(np.asarray(image_table), dtype=torch.float32)
        self.text_table = torch.as_tensor(np.asarray(text_table), dtype=torch.float32)
        self.image_calls = 0

    def encode_image(self, x):
        self.image_calls += 1
        idx = (x[:, 0, 0, 0] * 255).round().long()
        return self.image_table[idx]

    def encode_text(self, tok):
        return self.text_table[tok]


class StubTokenizer:
    def __init__(self, vocab: dict[str, int]):
        self.vocab = vocab

    def __call__(self, texts):
        import torch

        return torch.tensor([self.vocab[t] for t in texts])


def stub_loaded(image_table, text_table, vocab, sha="0" * 64):
    from torchvision import transforms

    from eval.model import LoadedModel

    return LoadedModel(model=StubModel(image_table, text_table), preprocess=transforms.ToTensor(),
                       tokenizer=StubTokenizer(vocab), device="cpu", name="stub", checkpoint=Path("stub.pt"),
                       checkpoint_sha256=sha)


SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (240, 220, 20)}


def draw_shape(colour: str, shape: str, size: int = 48):
    """A transparent RGBA picture of a coloured shape (the embed tests' drawing)."""
    from embed_pool_maker import draw_item

    return draw_item(colour, shape, size=size, rgba=True)


def write_eval_parquet(pool: Path) -> Path:
    """POOL/holdout/eval.parquet as the builder writes it: transparent PNGs of drawn shapes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {k: [] for k in ("item_id", "image", "text", "name", "group", "subgroup", "source")}
    for colour in COLOURS:
        for shape in SHAPES:
            b = io.BytesIO()
            draw_shape(colour, shape).save(b, format="PNG")
            rows["item_id"].append(f"{colour}-{shape}")
            rows["image"].append(b.getvalue())
            rows["text"].append(f"a {colour} {shape} on a clear background")
            rows["name"].append(f"{colour} {shape}")
            rows["group"].append("round-shapes" if shape == "circle" else "angular-shapes")
            rows["subgroup"].append(f"shape-{shape}")
            rows["source"].append("google" if colour in ("red", "blue") else "twitter")
    (pool / "holdout").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows), pool / "holdout" / "eval.parquet")
    return pool / "holdout" / "eval.parquet"


def make_tiny_run(run: Path, seed: int = 0) -> Path:
    """A RUN/ as the training stage leaves it, with a random-init TinyCLIP-ViT-64 checkpoint."""
    import open_clip
    import torch

    from datacurate.clip import register_model_configs

    register_model_configs()
    torch.manual_seed(seed)
    model = open_clip.create_model("TinyCLIP-ViT-64")
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict()}, run / "checkpoints" / "epoch_latest.pt")
    (run / "info.json").write_text(json.dumps({"model": "TinyCLIP-ViT-64",
                                               "checkpoint": "checkpoints/epoch_latest.pt", "scale": "micro"}))
    return run
