"""`arrays`: a researcher's own paired data from an `.npz` file or a folder of `.npy` files.

Every array but the labels is a modality whose first dimension indexes rows (paired by
position): images as (N, C, H, W) (uint8 0-255 or floats), feature vectors as (N, F). The
labels array (default key "labels") holds one integer class per row; without it every
row has class 0 (training works; coherence and latent accuracy need labels). A seeded
`test_fraction` of the rows is the test split, unless `test_path` names a file (or folder)
of the same keys holding the test rows; a seeded `val_fraction` of the other rows is held
out of training as the validation split ("val", for choosing settings; default 0: none).
`observed_fraction` / `unpaired_scheme` apply to the training split as for the built-in
datasets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmdgm.data.base import MultimodalDataset
from mmdgm.data.errors import DataFileError
from mmdgm.data.mnist import GENERATED_SPLITS, check_split
from mmdgm.data.partial import observe_fraction
from mmdgm.data.registry import DATASETS
from mmdgm.seeds import derived_seed


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an `.npz` file or of every `.npy` file in a folder (key = file stem)."""
    if not path.exists():
        raise FileNotFoundError(f"arrays: {path} does not exist")
    try:
        if path.is_dir():
            files = sorted(path.glob("*.npy"))
            if not files:
                raise DataFileError(f"arrays: folder {path} holds no .npy files")
            return {f.stem: np.load(f, allow_pickle=False) for f in files}
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except DataFileError:
        raise
    except Exception as e:  # noqa: BLE001 - numpy raises many types for a bad file
        raise DataFileError(f"arrays: cannot read {path} ({type(e).__name__}: {e})") from e


def checked(arrays: dict[str, np.ndarray], modalities: list[str] | None, labels: str, where: Path
            ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Modality tensors and labels after every check (module docstring), named errors."""
    names = modalities or [k for k in arrays if k != labels]
    missing = [k for k in names if k not in arrays]
    if missing:
        raise DataFileError(f"arrays: {where} lacks modalities {missing}; it holds {sorted(arrays)}")
    if len(names) < 2:
        raise DataFileError(f"arrays: {where} gives {len(names)} modality {names}; a multimodal model needs two or more")
    lengths = {k: (arrays[k].shape[0] if arrays[k].ndim else 0) for k in names}
    if labels in arrays:
        lengths[labels] = arrays[labels].shape[0] if arrays[labels].ndim else 0
    if len(set(lengths.values())) != 1:
        raise DataFileError(f"arrays: {where}: row counts differ {lengths}; rows are paired by position")
    n = next(iter(lengths.values()))
    if n == 0:
        raise DataFileError(f"arrays: {where} holds no rows")
    sources = {}
    for k in names:
        a = arrays[k]
        if a.ndim not in (2, 4):
            raise DataFileError(f"arrays: modality {k!r} has shape {a.shape}; use (N, features) or (N, C, H, W)")
        if a.dtype == np.uint8:
            sources[k] = torch.from_numpy(a.copy())
        elif a.dtype.kind in "fb" or (a.dtype.kind in "iu"):
            t = torch.from_numpy(a.astype(np.float32))
            if not torch.isfinite(t).all():
                bad = int((~torch.isfinite(t)).flatten(1).any(1).sum())
                raise DataFileError(f"arrays: modality {k!r} has NaN or inf in {bad} rows")
            sources[k] = t
        else:
            raise DataFileError(f"arrays: modality {k!r} has dtype {a.dtype}; use uint8, integer, bool or float")
    if labels in arrays:
        y = arrays[labels]
        if y.ndim != 1 or y.dtype.kind not in "iub" or (len(y) and int(y.min()) < 0):
            raise DataFileError(f"arrays: labels {labels!r} must be non-negative integers of shape (N,), "
                                f"got dtype {y.dtype}, shape {y.shape}")
        y = torch.from_numpy(y.astype(np.int64))
    else:
        y = torch.zeros(n, dtype=torch.long)
    return sources, y


def split_rows(n: int, split: str, test_fraction: float | None, val_fraction: float, seed: int) -> torch.Tensor | None:
    """The rows of `split` among the `n` rows of a file (None: all, in order). One seeded
    permutation: its first `test_fraction` (None: the test rows are another file's) is the
    test split, the next `val_fraction` of the remaining rows the validation split, the rest
    the training split."""
    if test_fraction is None and val_fraction == 0:
        return None
    order = torch.randperm(n, generator=torch.Generator().manual_seed(derived_seed(seed, "arrays-split")))
    n_test = 0 if test_fraction is None else max(1, round(test_fraction * n))
    n_val = max(1, round(val_fraction * (n - n_test))) if val_fraction > 0 else 0
    if n - n_test - n_val < 1:
        raise ValueError(f"arrays: {n} rows leave no training rows after {n_test} test and {n_val} validation rows")
    return {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}[split]


@DATASETS.register("arrays")
def build_arrays(split: str, root: Path, path: str = "", test_path: str | None = None, modalities: list[str] | None = None,
                 labels: str = "labels", test_fraction: float = 0.2, val_fraction: float = 0.0, seed: int = 0,
                 observed_fraction: float = 1.0, unpaired_scheme: str = "alternate") -> MultimodalDataset:
    """The `split` of the arrays at `path` (relative paths: against the data root)."""
    check_split(split, GENERATED_SPLITS)
    if not path:
        raise ValueError("arrays: set data.options.path to an .npz file or a folder of .npy files")
    if test_path is None and not 0 < test_fraction < 1:
        raise ValueError(f"arrays: test_fraction must be in (0, 1), got {test_fraction}")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"arrays: val_fraction must be in [0, 1), got {val_fraction}")
    if split == "val" and val_fraction == 0:
        raise ValueError("arrays: no 'val' split; set data.options.val_fraction (e.g. 0.1) to hold out "
                         "that share of the training rows")
    where = Path(path) if Path(path).is_absolute() else Path(root) / path
    if test_path is not None and split == "test":
        where = Path(test_path) if Path(test_path).is_absolute() else Path(root) / test_path
    sources, y = checked(read_arrays(where), modalities, labels, where)
    in_file = test_path is None or split != "test"
    rows = split_rows(len(y), split, None if test_path else test_fraction, val_fraction, seed) if in_file else None
    if rows is not None:
        sources, y = {k: v[rows] for k, v in sources.items()}, y[rows]
    dataset = MultimodalDataset(sources, y, name="arrays")
    if split == "train" and observed_fraction < 1.0:
        dataset = observe_fraction(dataset, observed_fraction, unpaired_scheme, seed)
    return dataset
