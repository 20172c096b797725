"""Reading, preprocessing, splitting and sampling data; the registry of named data sets."""

from distillrec.data.dataset import SPLITS, Dataset

__all__ = ["SPLITS", "Dataset"]
