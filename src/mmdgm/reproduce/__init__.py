"""`mmdgm reproduce`: one registered experiment per published table or figure we reproduce.

Every module of this package that defines experiments registers them on import.
"""

from mmdgm.reproduce import captions, cmmd, contrastive, estimators, meme, mmali, mmvae  # noqa: F401  (register their experiments)
from mmdgm.reproduce.experiment import EXPERIMENTS, SCALES, Column, Experiment, Row, Scale, register
from mmdgm.reproduce.runner import reproduce

__all__ = ["EXPERIMENTS", "SCALES", "Column", "Experiment", "Row", "Scale", "register", "reproduce"]
