"""The MMVAE paper's MNIST-SVHN tables (Shi et al., NeurIPS 2019, §4.2), on MNIST paired
with the synthetic street-digit stand-in: SVHN cannot be had offline, so the street
modality is the project's procedural `synthetic-street-digits`, and nothing here is an
SVHN number. Rows train `mmvae-mnist-synthstreet` and `mvae-mnist-synthstreet`."""

from __future__ import annotations

from mmdgm.reproduce.experiment import Column, Experiment, Row, Scale, register

DATASET = "mnist-synthstreet: real MNIST + SYNTHETIC street digits (stand-in for SVHN, not SVHN)"
ROWS = (Row("MMVAE", "mmvae-mnist-synthstreet"), Row("MVAE", "mvae-mnist-synthstreet"))
M, S = "mnist", "synth_street"
LIKELIHOODS = {"joint_log_likelihood": {"n": 200}, "conditional_log_likelihoods": {"n": 200}}
SCALES = {
    "smoke": Scale(
        ("data.options.n_train=10000", "data.options.n_test=1000", "data.options.dm=1", "train.epochs=1",
         "model.options.K=2", "train.eval_batches=1"),
        {"latent_accuracy": {"n_train": 300}, "joint_coherence": {"n": 500},
         "joint_log_likelihood": {"n": 20, "K": 10}, "conditional_log_likelihoods": {"n": 20, "K": 10}},
        "10,000 street digits, 1 epoch (~80 steps), K=2 (checks the pipeline, not the science)",
    ),
    "cpu": Scale(
        ("data.options.dm=1", "train.epochs=5", "model.options.K=2"),
        LIKELIHOODS,
        "1:1 pairing (~59k pairs), 5 epochs (2,300 steps of 128), K=2; likelihoods K=1000 on 200 test pairs",
    ),
    "paper": Scale((), {}, "the paper's schedule: dm=20 (1.1M pairs), 30 epochs, K=30; all test pairs"),
}


def table(number: int, title: str, columns: tuple[Column, ...], published: dict, notes: str) -> Experiment:
    """One of the paper's MNIST-SVHN tables: same rows, dataset and scales, its own columns."""
    return register(Experiment(
        name=f"mmvae-table{number}", title=f"MMVAE Table {number}: {title}",
        reference=f"Shi et al. 2019, Table {number} (§4.2)", dataset=DATASET, rows=ROWS,
        columns=columns, published=published, scales=SCALES, notes=notes,
    ))


table(
    1,
    "latent digit accuracy (%) of a linear probe",
    (
        Column("MNIST encoder", "latent_accuracy", M, 100),
        Column("street encoder", "latent_accuracy", S, 100),
        Column("both", "latent_accuracy", "joint", 100),
    ),
    {"MMVAE": {"MNIST encoder": 91.3, "street encoder": 68.0},
     "MVAE": {"MNIST encoder": 95.7, "street encoder": 9.1}},
    "Paper columns 'MVAE (both)' report 94.9 (MNIST labels) and 90.1 (SVHN labels) for the "
    "joint posterior; our pairs share one label, so 'both' is one number. The paper's "
    "single-VAE baseline (85.3 / 20.7) has no row here.",
)

table(
    2,
    "coherence (%) of joint and cross generation",
    (
        Column("joint", "joint_coherence", "joint_coherence", 100),
        Column("MNIST->street", "cross_coherence", f"{M}->{S}", 100),
        Column("street->MNIST", "cross_coherence", f"{S}->{M}", 100),
    ),
    {"MMVAE": {"joint": 42.1, "MNIST->street": 86.4, "street->MNIST": 69.1},
     "MVAE": {"joint": 12.7, "MNIST->street": 9.5, "street->MNIST": 9.3}},
    "Coherence is judged by classifiers trained on the run's own data (street classifier on "
    "the stand-in), so the street columns measure the stand-in, not SVHN.",
)

table(
    3,
    "log-likelihoods (nats), proposal in the condition",
    (
        Column("log p(m,n)", "joint_log_likelihood", f"log p({M},{S})"),
        Column("MNIST, q(both)", "conditional_log_likelihoods", f"log p({M}|{M},{S})"),
        Column("MNIST, q(MNIST)", "conditional_log_likelihoods", f"log p({M}|{M})"),
        Column("MNIST, q(street)", "conditional_log_likelihoods", f"log p({M}|{S})"),
        Column("street, q(both)", "conditional_log_likelihoods", f"log p({S}|{M},{S})"),
        Column("street, q(street)", "conditional_log_likelihoods", f"log p({S}|{S})"),
        Column("street, q(MNIST)", "conditional_log_likelihoods", f"log p({S}|{M})"),
    ),
    {
        "MMVAE": {"MNIST, q(both)": 868.76, "MNIST, q(MNIST)": 868.37, "MNIST, q(street)": 628.31,
                  "street, q(both)": 3441.01, "street, q(street)": 3441.01, "street, q(MNIST)": 2337.56},
        "MVAE": {"MNIST, q(both)": -176.68, "MNIST, q(MNIST)": -107.46, "MNIST, q(street)": -778.20,
                 "street, q(both)": 3395.12, "street, q(street)": 3536.86, "street, q(MNIST)": -12747.50},
    },
    "Paper street columns are SVHN numbers and not comparable with the stand-in's. The "
    "paper's log p(x_m, x_n) column is illegible in our copy of the paper, so it is left "
    "blank. 'x, q(S)' names the proposal q(z | x_S) of an IWAE estimate of log p(x) (the "
    "paper's notation; docs/evaluation-likelihood.md).",
)
