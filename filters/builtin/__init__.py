"""Built-in filters, one module per family; importing this package registers them all."""
from . import basic, clip, decontam, dedup, image_based, text  # noqa: F401
