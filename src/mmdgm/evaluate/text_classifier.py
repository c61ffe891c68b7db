"""An exact, parameter-free classifier of the digit-word text modality (MNIST-SVHN-Text).

Text is classified by reading it (`mmdgm.data.text.read_digits`): the most likely symbol
at each position gives a string, and its class is the digit whose English word the string
contains; a string containing no digit word, or words of two different digits, gets the
extra "no class" output (index 10), which never equals a digit label. Sutter et al.
train a CNN for this modality; reading is exact on data (every text of the construction
is read correctly) and cannot be fooled by a generation that merely resembles a word.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmdgm.data.text import ALPHABET, read_digits

NO_CLASS = 10


class DigitWordReader(nn.Module):
    """Scores (B, 11): 1 at the digit read from each string, 0 elsewhere; column `NO_CLASS`
    (10) is "no class". `classes` (at most 10: the digits a dataset's labels use) is
    accepted for the classifier-store interface."""

    def __init__(self, shape: tuple[int, ...], classes: int = 10) -> None:
        super().__init__()
        if len(shape) != 2 or shape[1] != len(ALPHABET):
            raise ValueError(f"the digit-word reader needs (L, {len(ALPHABET)}) one-hot strings, got shape {shape}")
        if not 1 <= classes <= NO_CLASS:
            raise ValueError(f"the digit-word reader reads the 10 digit words; {classes} classes cannot be digits")
        self.shape = tuple(shape)

    def forward(self, x: Tensor) -> Tensor:
        """Scores of one-hot or probability strings (B, L, V)."""
        digit = read_digits(x)
        digit = torch.where(digit < 0, torch.full_like(digit, NO_CLASS), digit)
        return nn.functional.one_hot(digit, NO_CLASS + 1).to(x.dtype)
