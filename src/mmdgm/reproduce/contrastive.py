"""The tables and figures of "Relating by contrasting" (Shi et al., ICLR 2021, §4.3-4.5) on
MNIST paired with the synthetic street-digit stand-in: SVHN cannot be had offline, so the
street columns measure the project's procedural `synthetic-street-digits`, not SVHN.

- `contrastive-table1`: Table 1, MMVAE, MVAE, JMVAE and their cI-/cC- variants on 100 % and
  20 % of the data (`unimodal_fraction`: n % of each unimodal set, then paired, §4.4).
- `contrastive-figure6`: Figure 6, MMVAE, cI-MMVAE and cC-MMVAE against the share of data.
- `contrastive-figure8`: Figure 8, label propagation (`mmdgm label-propagation`) from S_r of
  10, 20 and 50 % of the related pairs: the models before (trained on S_r only) and after
  propagation (S_r plus the pairs the PMI threshold accepted), and 8f's relatedness
  precision / recall / F1 of the model's PMI and of the siamese baseline.
- `contrastive-gamma`: Figures 11 and 13 (appendix E), cI-MMVAE against gamma, with MMVAE
  (gamma = inf) beside it: latent accuracy, coherence and the joint log-likelihood.
- `contrastive-likelihoods`, `contrastive-diversity`: appendix G's Tables 5-7 and Figure 17
  on Table 1's 100 % runs (evaluation only).
"""

from __future__ import annotations

import dataclasses

from mmdgm.reproduce.experiment import EXPERIMENTS, Column, Experiment, Row, Scale, register

DATASET = "mnist-synthstreet: real MNIST + SYNTHETIC street digits (stand-in for SVHN, not SVHN)"
M, S = "mnist", "synth_street"
MODELS = ("mmvae", "mvae", "jmvae")
LABEL = {"mmvae": "MMVAE", "mvae": "MVAE", "jmvae": "JMVAE"}
VARIANTS = (("", ""), ("ci-", "cI-"), ("cc-", "cC-"))
COHERENCE = {"latent_accuracy": {"n_train": 2000}, "joint_coherence": {"n": 2000}}
BY_MODEL = {"mmvae": ("model.options.K=2",), "contrastive": ("model.contrastive.K=2",)}


def scales(cpu_epochs: int, note: str) -> dict[str, Scale]:
    return {
        "smoke": Scale(("data.options.n_train=2000", "data.options.n_test=500", "data.options.dm=1", "train.epochs=1",
                        "train.eval_batches=1"),
                       {"latent_accuracy": {"n_train": 300}, "joint_coherence": {"n": 300},
                        "label_propagation": {"K": 5, "score_rows": 300, "siamese_epochs": 1}},
                       "2,000 street digits, 1 epoch, K=2 (checks the pipeline, not the science)", BY_MODEL),
        "cpu": Scale(("data.options.n_train=20000", "data.options.dm=1", f"train.epochs={cpu_epochs}"),
                     {**COHERENCE, "label_propagation": {"K": 30, "score_rows": 5000}},
                     note, BY_MODEL),
        "paper": Scale((), {"label_propagation": {"K": 1000}},
                       "the paper's schedule: dm=20, the configs' epochs, K=30, N=5, gamma=2"),
    }


def coherence_columns() -> tuple[Column, ...]:
    return (
        Column("latent acc. M", "latent_accuracy", M, 100),
        Column("latent acc. S", "latent_accuracy", S, 100),
        Column("joint coherence", "joint_coherence", "joint_coherence", 100),
        Column("S->M", "cross_coherence", f"{S}->{M}", 100),
        Column("M->S", "cross_coherence", f"{M}->{S}", 100),
    )


TABLE1 = {
    "100%": {
        "MMVAE": (92.48, 79.03, 42.32, 70.77, 85.50, None, None),
        "cI-MMVAE": (93.97, 81.87, 43.94, 79.66, 92.67, None, None),
        "cC-MMVAE": (93.10, 80.88, 45.46, 79.34, 92.35, None, None),
        "MVAE": (91.65, 64.12, 9.42, 10.98, 21.88, 64.60, 52.91),
        "cI-MVAE": (96.97, 75.94, 15.23, 10.85, 27.70, 85.07, 75.67),
        "cC-MVAE": (97.42, 81.07, 8.85, 12.83, 30.03, 75.25, 69.42),
        "JMVAE": (84.45, 57.98, 42.18, 49.63, 54.98, 85.77, 68.15),
        "cI-JMVAE": (84.58, 64.42, 48.95, 58.16, 70.61, 93.45, 84.00),
        "cC-JMVAE": (83.67, 66.64, 47.27, 59.73, 69.49, 91.21, 84.07),
    },
    "20%": {
        "MMVAE": (88.54, 68.90, 37.71, 59.52, 76.33, None, None),
        "cI-MMVAE": (91.64, 73.02, 42.74, 69.51, 86.75, None, None),
        "cC-MMVAE": (92.10, 71.29, 40.77, 68.43, 86.24, None, None),
        "MVAE": (90.29, 33.44, 10.88, 8.72, 12.12, 42.10, 44.95),
        "cI-MVAE": (93.72, 56.74, 12.79, 14.18, 20.23, 75.36, 64.81),
        "cC-MVAE": (92.74, 52.99, 17.95, 14.70, 24.90, 56.86, 54.28),
        "JMVAE": (77.53, 52.55, 26.37, 42.58, 41.44, 85.07, 51.95),
        "cI-JMVAE": (77.57, 57.91, 32.58, 51.85, 47.92, 92.54, 67.01),
        "cC-JMVAE": (81.11, 57.85, 34.00, 50.73, 56.89, 88.36, 68.49),
    },
}
TABLE1_COLUMNS = coherence_columns() + (
    Column("joint->M", "synergy_coherence", M, 100),
    Column("joint->S", "synergy_coherence", S, 100),
)
FRACTION = {"100%": (), "20%": ("data.options.unimodal_fraction=0.2",)}
# where MMVAE's street encoder has begun to learn (docs/results/step-curve.md)
LONG = Scale(("data.options.dm=1", "train.epochs=11"), COHERENCE,
             "58,862 pairs 1:1 with MNIST, 11 epochs (5,060 steps of 128 at 100 %), MMVAE and the contrastive term "
             "at K=2, N=5, gamma=2: the budget at which MMVAE's street encoder starts to learn digit identity "
             "(street latent accuracy 0.157 at 2,300 steps, 0.345 at 4,600; docs/results/step-curve.md); about 11x "
             "the cpu scale's steps, so run it on a few rows (--rows)", BY_MODEL)

register(Experiment(
    name="contrastive-table1",
    title="Relating by contrasting, Table 1: latent accuracy and coherence (%), 100 % and 20 % of data",
    reference="Shi et al. 2021, Table 1 (§4.3, §4.4)",
    dataset=DATASET,
    rows=tuple(
        Row(f"{tag}{LABEL[m]} ({share})", f"{prefix}{m}-mnist-synthstreet", FRACTION[share])
        for share in FRACTION for m in MODELS for prefix, tag in VARIANTS
    ),
    columns=TABLE1_COLUMNS,
    published={f"{label} ({share})": dict(zip([c.label for c in TABLE1_COLUMNS], values))
               for share, rows in TABLE1.items() for label, values in rows.items()},
    scales={**scales(3, "20,000 street digits 1:1 with MNIST, 3 epochs (471 steps of 128), MMVAE and the "
                        "contrastive term at K=2 (paper: 30), N=5, gamma=2"), "cpu-long": LONG},
    notes="Paper columns S are SVHN; ours are the synthetic stand-in. The paper gives no synergy "
          "coherence for MMVAE ('exactly the same as the coherence of any single-way generation').",
))

FIG6_SHARES = (10, 20, 50, 100)
register(Experiment(
    name="contrastive-figure6",
    title="Relating by contrasting, Figure 6: MMVAE, cI-MMVAE, cC-MMVAE against the share of data (%)",
    reference="Shi et al. 2021, Figure 6 (§4.4)",
    dataset=DATASET,
    rows=tuple(
        Row(f"{tag}MMVAE ({n}%)", f"{prefix}mmvae-mnist-synthstreet",
            () if n == 100 else (f"data.options.unimodal_fraction={n / 100}",), f"{tag}MMVAE", float(n))
        for prefix, tag in VARIANTS for n in FIG6_SHARES
    ),
    columns=coherence_columns(),
    published={},
    scales=scales(3, "20,000 street digits 1:1 with MNIST, 3 epochs over the share used, K=2, N=5, gamma=2"),
    notes="Figure 6 gives curves without numbers, so no paper values are typed in; its finding: the "
          "contrastive curves lie above MMVAE's and reach MMVAE's 100 % level at 10-20 % of the data.",
))

FIG8_SHARES = (10, 20, 50)


def stage_columns(stage: str) -> tuple[Column, ...]:
    return (
        Column(f"latent acc. M ({stage})", f"propagation/runs/{stage}/latent_accuracy", M, 100),
        Column(f"latent acc. S ({stage})", f"propagation/runs/{stage}/latent_accuracy", S, 100),
        Column(f"S->M ({stage})", f"propagation/runs/{stage}/cross_coherence", f"{S}->{M}", 100),
        Column(f"M->S ({stage})", f"propagation/runs/{stage}/cross_coherence", f"{M}->{S}", 100),
        Column(f"joint coh. ({stage})", f"propagation/runs/{stage}/joint_coherence", "joint_coherence", 100),
    )


register(Experiment(
    name="contrastive-figure8",
    title="Relating by contrasting, Figure 8: label propagation from S_r of n % of the related pairs",
    reference="Shi et al. 2021, Figure 8 (§4.5)",
    dataset=DATASET,
    rows=tuple(
        Row(f"{tag}MMVAE (S_r {n}%)", f"{prefix}mmvae-mnist-synthstreet", (), f"{tag}MMVAE", float(n), n / 100)
        for prefix, tag in VARIANTS for n in FIG8_SHARES
    ),
    columns=stage_columns("pretrain") + stage_columns("propagated") + (
        Column("PMI AUC", "propagation/relatedness", "pmi/F_m/auc"),
        Column("PMI precision", "propagation/relatedness", "pmi/F_m/precision"),
        Column("PMI recall", "propagation/relatedness", "pmi/F_m/recall"),
        Column("PMI F1", "propagation/relatedness", "pmi/F_m/f1"),
        Column("siamese AUC", "propagation/relatedness", "siamese/F_m/auc"),
        Column("siamese precision", "propagation/relatedness", "siamese/F_m/precision"),
        Column("siamese recall", "propagation/relatedness", "siamese/F_m/recall"),
        Column("siamese F1", "propagation/relatedness", "siamese/F_m/f1"),
    ),
    published={},
    scales=scales(3, "20,000 street digits 1:1 with MNIST, 3 epochs, K=2, N=5, gamma=2; F_m: 5,000 "
                     "tuples scored, half of them re-paired; PMI with K=30"),
    notes="Figure 8 gives curves and bars without numbers, so no paper values are typed in; its "
          "findings: propagation helps cI-MMVAE most when S_r is small (at 10 % it is competitive "
          "with MMVAE on all related pairs), hurts MMVAE and cC-MMVAE, and cI-MMVAE's PMI has the "
          "highest F1 of the four predictors (siamese close). Choices of ours: F_m is 5,000 of the remaining "
          "related pairs with half of them re-paired (the paper's F_m is the rest of a random matching), so "
          "accepting every tuple scores F1 = 0.667; 'unrelated' means re-paired, and about a tenth of re-paired "
          "tuples share a digit by chance; the propagated model is trained from scratch on S_r plus the "
          "accepted tuples; both models' latent-accuracy probes are fitted on 10,000 rows of the full data "
          "with their true labels (`fit_pairs=all`). The paper's reference line, MMVAE on all of F_r, is "
          "contrastive-table1's MMVAE (100 %) row at this scale (its probe fitted on 2,000 rows). Joint coherence (panel e) is over 10,000 joint "
          "generations (Table 1's: 2,000).",
))

GAMMAS = (1.0, 1.1, 1.5, 2.0, 5.0, 10.0)
LIKELIHOOD = {"smoke": {"n": 20, "K": 10}, "cpu": {"n": 200}, "paper": {}}


def with_likelihood(scales: dict[str, Scale]) -> dict[str, Scale]:
    """`scales` with the joint log-likelihood's options (Figure 13) added to each."""
    return {name: dataclasses.replace(s, metric_options={**s.metric_options, "joint_log_likelihood": LIKELIHOOD.get(name, {})})
            for name, s in scales.items()}


DIVERSITY_COLUMNS = (
    Column("entropy M", "generation_diversity", f"entropy/{M}", 100),
    Column("entropy S", "generation_diversity", f"entropy/{S}", 100),
)
GAMMA_COLUMNS = coherence_columns() + (Column("log p(M,S)", "joint_log_likelihood", f"log p({M},{S})"),) + DIVERSITY_COLUMNS
register(Experiment(
    name="contrastive-gamma",
    title="Relating by contrasting, Figures 11 and 13: cI-MMVAE against gamma, the weight of term 1",
    reference="Shi et al. 2021, Figures 11 and 13 (appendix E)",
    dataset=DATASET,
    rows=tuple(
        Row(f"cI-MMVAE (gamma={g:g})", "ci-mmvae-mnist-synthstreet",
            () if g == 2.0 else (f"model.contrastive.gamma={g}",), "cI-MMVAE", g)
        for g in GAMMAS
    ) + (Row("MMVAE (gamma=inf)", "mmvae-mnist-synthstreet", (), "MMVAE"),),
    columns=GAMMA_COLUMNS,
    published={},
    scales=with_likelihood(scales(3, "20,000 street digits 1:1 with MNIST, 3 epochs (471 steps of 128), K=2, N=5; "
                                     "joint log-likelihood K=1000 on 200 test pairs")),
    notes="Figures 11 and 13 give curves without numbers, so no paper values are typed in; their findings: "
          "gamma = 1 (the contrastive loss alone, eq. 3) gives very low coherence and latent accuracy, 1.1 the "
          "highest, and larger gamma decreases most metrics towards MMVAE's (gamma = inf, the MMVAE row) while the "
          "joint log-likelihood rises steeply from 1 to 1.1 and then slowly. The gamma = 2 and MMVAE rows are "
          "contrastive-table1's 100 % runs. training.png plots term 1 (`objective`, the model's own bound), term 2 "
          "(`contrastive_term`) and eq. 3's L_C (`contrastive_loss` = term 2 - term 1, whatever gamma trained the "
          "run) against the step, Figures 9-10's curves; the gamma = 2 runs (Table 1's) were trained before "
          "`contrastive_loss` was logged and have no line in that panel. The grid 1, 1.1, 1.5, 2, 5, 10 is ours: "
          "the paper names 1, 1.1, 2 and inf. Entropy M / S: the class diversity of 10,000 joint generations "
          "(as contrastive-diversity, 100 = every class equally often), beside joint coherence because a model "
          "that generates one class in both modalities scores a high joint coherence.",
    x_label="gamma",
    training_curves=("objective", "contrastive_term", "contrastive_loss"),
))

LIKELIHOOD_COLUMNS = (
    Column("log p(M,S)", "joint_log_likelihood", f"log p({M},{S})"),
    Column("M, q(M,S)", "conditional_log_likelihoods", f"log p({M}|{M},{S})"),
    Column("M, q(M)", "conditional_log_likelihoods", f"log p({M}|{M})"),
    Column("M, q(S)", "conditional_log_likelihoods", f"log p({M}|{S})"),
    Column("S, q(M,S)", "conditional_log_likelihoods", f"log p({S}|{M},{S})"),
    Column("S, q(S)", "conditional_log_likelihoods", f"log p({S}|{S})"),
    Column("S, q(M)", "conditional_log_likelihoods", f"log p({S}|{M})"),
)
# appendix G.1, Tables 5-7, per model: (log p(m,n), then the three other columns for m = MNIST),
# (the three for m = SVHN); the last of each three is on the other modality's scale (module notes)
APPENDIX_G = {
    "MMVAE": ((-1879.00, -388.59, -388.59, -1618.53), (-1472.44, -1472.45, -431.66)),
    "cI-MMVAE": ((-1904.15, -385.18, -385.18, -1620.77), (-1491.55, -1491.56, -444.28)),
    "cC-MMVAE": ((-1924.20, -391.88, -391.84, -1619.34), (-1490.56, -1494.75, -428.29)),
    "MVAE": ((-404.43, -404.43, -388.27, -1847.85), (-1518.00, -1488.21, -440.32)),
    "cI-MVAE": ((-406.85, -406.22, -388.26, -1876.95), (-1529.32, -1498.73, -443.04)),
    "cC-MVAE": ((-405.24, -432.96, -388.26, -1889.35), (-1520.23, -1499.47, -441.01)),
    "JMVAE": ((-515.44, -497.95, None, None), (-1515.73, None, None)),
    "cI-JMVAE": ((-518.56, -511.28, None, None), (-1529.44, None, None)),
    "cC-JMVAE": ((-534.26, -510.90, None, None), (-1614.78, None, None)),
}
# Table 1's 100 % rows under the model name alone: appendix G evaluates these runs
TABLE1_FULL = tuple(dataclasses.replace(r, label=r.label.removesuffix(" (100%)"))
                    for r in EXPERIMENTS.get("contrastive-table1").rows if r.label.endswith("(100%)"))


def likelihood_scales() -> dict[str, Scale]:
    """Table 1's scales with the log-likelihoods' options (K=1000 at cpu, on 200 test pairs)."""
    options = {"smoke": {"n": 20, "K": 10}, "cpu": {"n": 200}}
    return {name: dataclasses.replace(s, metric_options={**s.metric_options, **{
                m: options.get(name, {}) for m in ("joint_log_likelihood", "conditional_log_likelihoods")}})
            for name, s in EXPERIMENTS.get("contrastive-table1").scales.items()}


register(Experiment(
    name="contrastive-likelihoods",
    title="Relating by contrasting, Tables 5-7: log-likelihoods (nats) of the base and contrastive models",
    reference="Shi et al. 2021, Tables 5-7 (appendix G.1)",
    dataset=DATASET,
    rows=TABLE1_FULL,
    columns=LIKELIHOOD_COLUMNS,
    published={label: dict(zip(("log p(M,S)", "M, q(M,S)", "M, q(M)", "S, q(M)", "S, q(M,S)", "S, q(S)", "M, q(S)"),
                               (*m, *s)))
               for label, (m, s) in APPENDIX_G.items()},
    scales=likelihood_scales(),
    notes="The runs are contrastive-table1's 100 % runs (evaluation only). 'x, q(S)': an IWAE estimate of "
          "log p(x) with proposal q(z | x_S), K=1000 (the paper's notation log p(x | x_S); "
          "docs/evaluation-likelihood.md). Paper S columns are SVHN, not comparable with the stand-in; the paper "
          "gives JMVAE only its joint and joint-proposal columns. The paper's last column, headed log p(x_m | x_n), "
          "holds values on the other modality's scale (m = MNIST: -1618.53, beside MNIST's -388.59 and SVHN's "
          "-1472.44; m = SVHN: -431.66), and read literally it would put SVHN's likelihood under the MNIST "
          "proposal 1,000 nats above its own-proposal bound, so we read it as the other modality under m's "
          "proposal: S, q(M) and M, q(S). Its finding: the contrastive models' "
          "likelihoods are close to their base models' (generation quality is not sacrificed).",
))

register(Experiment(
    name="contrastive-diversity",
    title="Relating by contrasting, Figure 17: class diversity of joint generations (normalised entropy, %)",
    reference="Shi et al. 2021, Figure 17 (appendix G.2)",
    dataset=DATASET,
    rows=TABLE1_FULL,
    columns=DIVERSITY_COLUMNS,
    published={},
    scales=EXPERIMENTS.get("contrastive-table1").scales,
    notes="The runs are contrastive-table1's 100 % runs (evaluation only): 10,000 prior draws per run, classified "
          "by the coherence classifiers; 100 = every class equally often (each run's generation_diversity.png "
          "has the histograms). Figure 17 gives histograms without numbers; its finding: the contrastive models "
          "generate every class, and for MMVAE and MVAE more uniformly than the base models. figures.png: each "
          "row's first run's histograms.",
    run_figures=("generation_diversity.png",),
))
