"""Reading, preprocessing, splitting and sampling data; the registry of named data sets."""

from distillrec.data.build import PrepConfig, build_blocks, build_dataset
from distillrec.data.dataset import SPLITS, Dataset
from distillrec.data.io import FORMATS, read_interactions
from distillrec.data.registry import REGISTRY, get_spec, list_datasets, load_dataset, load_file
from distillrec.data.sampling import sample_candidates, sample_negatives
from distillrec.data.synthetic import make_synthetic, synthetic_interactions

__all__ = [
    "FORMATS",
    "REGISTRY",
    "SPLITS",
    "Dataset",
    "PrepConfig",
    "build_blocks",
    "build_dataset",
    "get_spec",
    "list_datasets",
    "load_dataset",
    "load_file",
    "make_synthetic",
    "read_interactions",
    "sample_candidates",
    "sample_negatives",
    "synthetic_interactions",
]
