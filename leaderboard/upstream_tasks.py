"""Upstream DataComp's 38 scored tasks and aggregate groups, as data.

Used only while ``eval.tasks`` (the project's one task registry) is not importable.
Source: https://github.com/mlfoundations/datacomp ``tasklist.yml`` (key -> name) and
``aggregate_scores.py`` (``DATASET_GROUPS``; ImageNet = 'ImageNet 1k'; Average = mean of
every task with a main metric). FairFace and UTKFace are listed upstream without a main
metric (``main_metric`` is None in eval_results.jsonl) and are not scored.
"""
from __future__ import annotations

SUITE = "datacomp38"

# task key -> dataset name (tasklist.yml order)
TASKS: dict[str, str] = {
    "vtab/caltech101": "Caltech-101",
    "cifar10": "CIFAR-10",
    "vtab/cifar100": "CIFAR-100",
    "vtab/clevr_count_all": "CLEVR Counts",
    "vtab/clevr_closest_object_distance": "CLEVR Distance",
    "country211": "Country211",
    "vtab/dtd": "Describable Textures",
    "vtab/eurosat": "EuroSAT",
    "fgvc_aircraft": "FGVC Aircraft",
    "food101": "Food-101",
    "gtsrb": "GTSRB",
    "imagenet1k": "ImageNet 1k",
    "imagenet_sketch": "ImageNet Sketch",
    "imagenetv2": "ImageNet v2",
    "imagenet-a": "ImageNet-A",
    "imagenet-o": "ImageNet-O",
    "imagenet-r": "ImageNet-R",
    "vtab/kitti_closest_vehicle_distance": "KITTI Vehicle Distance",
    "mnist": "MNIST",
    "objectnet": "ObjectNet",
    "vtab/flowers": "Oxford Flowers-102",
    "vtab/pets": "Oxford-IIIT Pet",
    "voc2007": "Pascal VOC 2007",
    "vtab/pcam": "PatchCamelyon",
    "renderedsst2": "Rendered SST2",
    "vtab/resisc45": "RESISC45",
    "cars": "Stanford Cars",
    "stl10": "STL-10",
    "sun397": "SUN397",
    "vtab/svhn": "SVHN",
    "retrieval/flickr30k": "Flickr",
    "retrieval/mscoco_2014_5k_test_image_text_retrieval": "MSCOCO",
    "misc/winogavil": "WinoGAViL",
    "wilds/iwildcam": "iWildCam",
    "wilds/camelyon17": "Camelyon17",
    "wilds/fmow": "FMoW",
    "fairness/dollar_street": "Dollar Street",
    "fairness/geode": "GeoDE",
}

# listed upstream, reported with main_metric None, never scored
UNSCORED: dict[str, str] = {"fairness/fairface": "FairFace", "fairness/utkface": "UTKFace"}

# aggregate name -> dataset names (aggregate_scores.py DATASET_GROUPS)
GROUPS: dict[str, list[str]] = {
    "ImageNet dist. shifts": ["ImageNet Sketch", "ImageNet v2", "ImageNet-A", "ImageNet-O",
                              "ImageNet-R", "ObjectNet"],
    "VTAB": ["Caltech-101", "CIFAR-100", "CLEVR Counts", "CLEVR Distance", "Describable Textures",
             "EuroSAT", "KITTI Vehicle Distance", "Oxford Flowers-102", "Oxford-IIIT Pet",
             "PatchCamelyon", "RESISC45", "SVHN", "SUN397"],
    "Retrieval": ["Flickr", "MSCOCO", "WinoGAViL"],
}

IMAGENET = "ImageNet 1k"
