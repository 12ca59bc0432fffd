"""The emoji taxonomy's words: how a group or subgroup key is written in the pool's captions.

The pool builder writes captions with these titles and the offline eval suite uses them as
class names, so both import them from here: a class name the training captions never say
cannot be matched zero-shot.
"""
from __future__ import annotations


def group_title(group: str) -> str:
    """emojibase group key -> words (smileys-emotion -> smileys & emotion), as the web titles it."""
    return " & ".join(p for p in str(group).split("-") if p)


def subgroup_title(subgroup: str) -> str:
    """emojibase subgroup key -> words (animal-mammal -> animal mammal), as emoji sites' breadcrumbs show it."""
    return " ".join(p for p in str(subgroup).split("-") if p)
