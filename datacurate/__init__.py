"""datacurate: a benchmark pipeline for multimodal data curation (the DataComp design)."""
__version__ = "0.1.0"
