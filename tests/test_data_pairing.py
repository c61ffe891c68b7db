import torch

from mmdgm.data.pairing import cached_pair_by_class, pair_by_class, pairs_per_class

MNIST_TRAIN = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
SVHN_TRAIN = [4948, 13861, 10585, 8497, 7458, 6882, 5727, 5595, 5045, 4659]
MNIST_TEST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
SVHN_TEST = [1744, 5099, 4149, 2882, 2523, 2384, 1977, 2019, 1660, 1595]


def test_paper_pair_counts():
    assert sum(pairs_per_class(MNIST_TRAIN, SVHN_TRAIN, dm=20)) == 1_121_360
    assert sum(pairs_per_class(MNIST_TEST, SVHN_TEST, dm=20)) == 200_000


def test_paper_counts_through_pairing():
    labels_a = torch.repeat_interleave(torch.arange(10), torch.tensor(MNIST_TEST))
    labels_b = torch.repeat_interleave(torch.arange(10), torch.tensor(SVHN_TEST))
    _, _, labels = pair_by_class(labels_a, labels_b, dm=20)
    assert len(labels) == 200_000


def _labels(n, seed):
    return torch.randint(10, (n,), generator=torch.Generator().manual_seed(seed))


def test_pairs_match_and_counts():
    a, b = _labels(300, 1), _labels(200, 2)
    ia, ib, labels = pair_by_class(a, b, dm=3, max_per_class=15)
    assert torch.equal(a[ia], labels) and torch.equal(b[ib], labels)
    for c in range(10):
        n_c = min(int((a == c).sum()), int((b == c).sum()), 15)
        assert int((labels == c).sum()) == 3 * n_c
        rows = torch.nonzero(a == c).flatten()[:n_c]
        assert torch.equal(
            torch.bincount(ia[labels == c], minlength=300)[rows], torch.full((n_c,), 3)
        )


def test_seeded():
    a, b = _labels(200, 1), _labels(200, 2)
    first = pair_by_class(a, b, dm=2, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(first, pair_by_class(a, b, dm=2, seed=5)))
    assert not torch.equal(first[0], pair_by_class(a, b, dm=2, seed=6)[0])


def test_cache(tmp_path):
    a, b = _labels(200, 1), _labels(200, 2)
    first = cached_pair_by_class(tmp_path, "x", a, b, dm=2)
    (path,) = tmp_path.iterdir()
    again = cached_pair_by_class(tmp_path, "x", a, b, dm=2)
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    path.write_bytes(b"garbage")
    repaired = cached_pair_by_class(tmp_path, "x", a, b, dm=2)
    assert all(torch.equal(x, y) for x, y in zip(first, repaired))
    cached_pair_by_class(tmp_path, "x", a, b, dm=3)
    assert len(list(tmp_path.iterdir())) == 2
