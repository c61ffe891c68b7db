"""MMALI's tables (Chen & Zhu, AAAI 2022): Table 1 (factorised against joint
discriminator on MultiMNIST with 2, 3, 4 modalities, linear probe of the 0-degree
encoder, §4.1), and Table 2 (the MMALI row, 100 % of data) and Table 3 (content / style / both codes)
on MNIST paired with the SYNTHETIC street-digit stand-in: SVHN cannot be had offline, so
nothing in the street columns is an SVHN number.

Every run is evaluated once, at its final step, with the EMA weights; the authors report
the best test accuracy over their evaluations during training (optimistic), so the
paper's numbers are upper estimates of what a final model gives.
"""

from __future__ import annotations

from mmdgm.reproduce.experiment import Column, Experiment, Row, Scale, register

MULTIMNIST = "multimnist-2/3/4 from real MNIST: modality k = the digit rotated counter-clockwise by 90k degrees"
STREET = "mnist-synthstreet: real MNIST + SYNTHETIC street digits (stand-in for SVHN, not SVHN)"
M, S = "mnist", "synth_street"
JOINT = "model.options.discriminator=joint"
# discriminators of about a quarter of the paper's width (1024-wide heads, 256 features):
# the cpu budget, with the algorithm unchanged
SMALL_DISCRIMINATORS = ("model.options.disc_features=128", "model.options.disc_hidden=256",
                        "model.options.disc_x_hidden=256")
FINAL_EMA = ("Every run is evaluated once, at its last step, with the EMA weights of its encoders and "
             "decoders; the authors report the best test accuracy over their evaluations during training "
             "(optimistic), so their numbers are upper estimates of a final model's.")


def ema_from_half(steps: int) -> tuple[str, ...]:
    """EMA over the second half of a `steps`-step run, with a window (1 / (1 - decay)) of
    about that half: at the cpu scale's few thousand steps the paper's start (step 50,000
    of 250,000) is never reached, and its decay 0.9999 would keep the average almost at the
    weights of the start step."""
    half = steps // 2
    decay = 1 - 1 / max(half, 10)
    return (f"train.ema.start_step={half}", f"train.ema.decay={decay:.6g}")


# --- Table 1: MultiMNIST --------------------------------------------------------------

MODALITIES = (2, 3, 4)
TABLE1 = {"Joint": (85.96, 85.44, 85.27), "Factorized": (97.02, 96.94, 96.75)}
PROBE = {"posteriors": ["rot0"]}
# pairs=1: 60,000 tuples, 938 steps of 64 per epoch
CPU1_STEPS = 2 * 938


def table1_rows() -> tuple[Row, ...]:
    return tuple(Row(f"{name} (M={m})", f"mmali-multimnist-{m}", () if name == "Factorized" else (JOINT,))
                 for name in TABLE1 for m in MODALITIES)


register(Experiment(
    name="mmali-table1",
    title="MMALI Table 1: linear-probe accuracy (%) of the 0-degree encoder, factorised vs joint discriminator",
    reference="Chen & Zhu 2022, Table 1 (§4.1)", dataset=MULTIMNIST, rows=table1_rows(),
    columns=(Column("0-degree encoder", "latent_accuracy", "rot0", 100),),
    published={f"{name} (M={m})": {"0-degree encoder": v} for name, values in TABLE1.items()
               for m, v in zip(MODALITIES, values)},
    scales={
        "smoke": Scale(("data.options.n_train=2000", "data.options.n_test=500", "data.options.pairs=1",
                        "train.epochs=1", "train.eval_batches=1", "train.final_metrics=[]", *SMALL_DISCRIMINATORS,
                        *ema_from_half(32)),
                       {"latent_accuracy": {**PROBE, "n_train": 300}},
                       "2,000 digits tupled once (32 steps of 64), small discriminators "
                       "(checks the pipeline, not the science)"),
        "cpu": Scale(("data.options.pairs=1", "train.epochs=2", "train.final_metrics=[]", *SMALL_DISCRIMINATORS,
                      *ema_from_half(CPU1_STEPS)),
                     {"latent_accuracy": PROBE},
                     f"all 60,000 MNIST digits tupled once (not 30 times), 2 epochs = {CPU1_STEPS:,} steps of 64 "
                     "(the paper: 250,000 steps, far out of reach on CPUs), discriminators of a quarter of the "
                     f"paper's width (features 128, heads 256), EMA from step {CPU1_STEPS // 2} with decay "
                     f"{1 - 1 / (CPU1_STEPS // 2):.4f} (the paper: from step 50,000, 0.9999); probe on 10,000 "
                     "train codes. Estimated 105 CPU-minutes for the 18 runs, about an hour on 2 cores (timed at "
                     "0.15 / 0.25 / 0.37 s of CPU per step for the factorised M = 2 / 3 / 4 rows, 0.08 / 0.12 / "
                     "0.15 s for the joint ones)"),
        "paper": Scale((), {"latent_accuracy": PROBE},
                       "the configs: 30 tuples per digit, 9 epochs (253,125 steps of 64), EMA 0.9999 from step 50,000"),
    },
    notes=(f"{FINAL_EMA} The finding to test: the factorised discriminators give a far better 0-degree "
           "encoder than one joint discriminator (97.0 vs 86.0 % with 2 modalities). Joint rows: "
           f"`{JOINT}` (one (M+1)-way classifier of (x_1..x_M, [s_1..s_M, c]), no unimodal term, as the "
           "authors' train_mmali_multimnist_joint.py). The probe: a logistic regression on standardised "
           "codes z ~ q(z | x_rot0) (a sample, as the authors' probe) of 10,000 train tuples (300 at the smoke "
           "scale), scored on every test tuple (docs/evaluation.md); the authors train a linear layer and keep "
           "its best test epoch."),
))


# --- Tables 2 and 3: MNIST + synthetic street digits ----------------------------------

STREET_ROW = Row("MMALI (100%)", "mmali-mnist-synthstreet")
# 20 % of each unimodal set, then paired (as `contrastive-table1`'s 20 % rows)
STREET_ROW_20 = Row("MMALI (20%)", "mmali-mnist-synthstreet", ("data.options.unimodal_fraction=0.2",))
# dm=1 with 20,000 street digits: 20,000 pairs, 313 steps of 64 per epoch
CPU2_STEPS = 6 * 313
SMOKE2_METRICS = {"latent_accuracy": {"n_train": 300}, "latent_accuracy_split": {"n_train": 300},
                  "joint_coherence": {"n": 500}}
STREET_SCALES = {
    # 5,000 street digits: with 2,000 the street coherence classifier (10 epochs) stays below its 0.8 floor
    "smoke": Scale(("data.options.n_train=5000", "data.options.n_test=500", "data.options.dm=1", "train.epochs=1",
                    "train.eval_batches=1", "train.final_metrics=[]", *SMALL_DISCRIMINATORS, *ema_from_half(79)),
                   SMOKE2_METRICS,
                   "5,000 street digits paired once with MNIST (79 steps of 64), small discriminators "
                   "(checks the pipeline, not the science)"),
    "cpu": Scale(("data.options.n_train=20000", "data.options.dm=1", "train.epochs=6", "train.final_metrics=[]",
                  *SMALL_DISCRIMINATORS, *ema_from_half(CPU2_STEPS)),
                 {"joint_coherence": {"n": 10000}},
                 f"20,000 street digits paired once with MNIST (not dm 30), 6 epochs = {CPU2_STEPS:,} steps of 64 "
                 "(the paper: 250,000 steps, far out of reach on CPUs), "
                 "discriminators of a quarter of the paper's width, EMA from half the steps with a window of "
                 "that half (the paper: from step 50,000, 0.9999). Estimated 55 CPU-minutes of training for 3 "
                 "seeds, under an hour on 2 cores with the evaluation (timed at 0.6 s of CPU per step)"),
    "paper": Scale((), {}, "the config: dm 30, 9 epochs (about 250,000 steps of 64), EMA 0.9999 from step 50,000"),
}
STREET_NOTE = (f"{FINAL_EMA} Street columns are SVHN in the paper; ours measure the synthetic stand-in, "
               "and its coherence classifiers are trained on the full stand-in data of the run's data options.")

register(Experiment(
    name="mmali-table2",
    title="MMALI Table 2 (MMALI rows, 100 % and 20 % of data): latent accuracy and coherence (%)",
    reference="Chen & Zhu 2022, Table 2 (§4.2)", dataset=STREET, rows=(STREET_ROW, STREET_ROW_20),
    columns=(Column("latent MNIST", "latent_accuracy", M, 100),
             Column("latent street", "latent_accuracy", S, 100),
             Column("joint", "joint_coherence", "joint_coherence", 100),
             Column("street->MNIST", "cross_coherence", f"{S}->{M}", 100),
             Column("MNIST->street", "cross_coherence", f"{M}->{S}", 100),
             Column("synergy MNIST", "synergy_coherence", M, 100),
             Column("synergy street", "synergy_coherence", S, 100)),
    published={label: dict(zip(("latent MNIST", "latent street", "joint", "street->MNIST", "MNIST->street",
                                "synergy MNIST", "synergy street"), values))
               for label, values in (("MMALI (100%)", (96.82, 87.20, 79.31, 83.80, 95.22, 96.43, 96.69)),
                                     ("MMALI (20%)", (94.03, 80.16, 75.88, 72.83, 86.19, 84.21, 85.24)))},
    scales=STREET_SCALES,
    notes=(f"{STREET_NOTE} The table's baselines are `contrastive-table1`'s rows. The 20 % rows train on "
           "20 % of each unimodal set, then paired (`unimodal_fraction=0.2`); they are scored by the "
           "classifiers of the full data (the observation options do not key the classifiers). The paper's "
           "spreads over runs (e.g. ± 0.01 for the coherences) are not shown. Synergy: generation from the "
           "geometric mean of the two Gaussian experts (§4.2)."),
))

register(Experiment(
    name="mmali-table3",
    title="MMALI Table 3: linear-probe accuracy (%) on the content code, the style code and both",
    reference="Chen & Zhu 2022, Table 3 (§4.2)", dataset=STREET, rows=(STREET_ROW,),
    columns=tuple(Column(f"{label} {part}", "latent_accuracy_split", f"{m}/{part}", 100)
                  for m, label in ((M, "MNIST"), (S, "street")) for part in ("content", "style", "both")),
    published={"MMALI (100%)": {"MNIST content": 96.61, "MNIST style": 23.56, "MNIST both": 96.88,
                                "street content": 86.40, "street style": 21.39, "street both": 86.49}},
    scales=STREET_SCALES,
    notes=(f"{STREET_NOTE} Content = z[10:20], style = z[0:10] (the model's latent_split), both = z; "
           "one probe per code, fitted on the same codes of each single-modality encoder. The runs are "
           "`mmali-table2`'s (trained once)."),
))
