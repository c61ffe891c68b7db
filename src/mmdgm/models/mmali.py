"""MMALI: multimodal adversarially learned inference with factorised discriminators
(Chen & Zhu, AAAI 2022).

Pure functions first (the joint logits of eq. 7/10, the non-saturating loss, masked
means), then the model.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmdgm.batch import Batch
from mmdgm.distributions import Normal
from mmdgm.distributions.product import product_of_gaussians
from mmdgm.models.base import MODELS, ModelOutput, MultimodalVAE
from mmdgm.models.mvae import require_gaussian
from mmdgm.nets.discriminators import DotProductCritic, XZDiscriminator
from mmdgm.registry import nearest

DISCRIMINATORS = ("factorized", "joint")


def joint_logits(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Logits of the joint (M+1)-way discriminator assembled from the factorised ones
    (eq. 6 with eq. 10; eq. 7 when there is no style code):

        log r_i = t + b_i + sum_j (a_j - b_j)   (i = 1..M),    log r_{M+1} = 0,

    with a_m = log q(x_m, s_m, c) / p(x_m, s_m, c), b_m = log q(x_m, s_m, c) / (q(x_m, s_m) p(c))
    (so a_m - b_m = log q(x_m, s_m) p(c) / p(x_m, s_m, c)) and t = log q(X) / prod_m q(x_m).
    a, b: (M, B); t: (B,). Returns (B, M+1); softmax of it is D*(X, S, c) of eq. 6.
    """
    shared = t + (a - b).sum(0)
    return torch.cat([(b + shared).T, torch.zeros_like(t)[:, None]], -1)


def non_saturating(logits: Tensor, label: int) -> Tensor:
    """Per-row non-saturating generator loss of a (K+1)-way discriminator for tuples of
    class `label` (Dandi et al. 2021, as in the authors' code): the mean over the other
    classes j of -log D[j]. logits (B, K+1) -> (B,)."""
    logp = torch.log_softmax(logits, -1)
    others = [j for j in range(logits.shape[-1]) if j != label]
    return -logp[:, others].mean(-1)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` (B,) over the rows where `mask` is True (0 if none); unselected rows
    get exactly zero gradient (torch.where, never a product with 0)."""
    return torch.where(mask, values, torch.zeros_like(values)).sum() / mask.sum().clamp(min=1)


def cross_entropy(logits: Tensor, label: int) -> Tensor:
    """Per-row cross-entropy of a classifier's logits (B, K) for tuples of class `label`."""
    return F.cross_entropy(logits, torch.full(logits.shape[:1], label, device=logits.device), reduction="none")


def logistic(real: Tensor, fake: Tensor, real_mask: Tensor, fake_mask: Tensor) -> Tensor:
    """Binary logistic loss of a critic: softplus(-real) on positives, softplus(fake) on negatives."""
    return masked_mean(F.softplus(-real), real_mask) + masked_mean(F.softplus(fake), fake_mask)


def geometric_mean_of_gaussians(locs: Tensor, scales: Tensor, mask: Tensor) -> Normal:
    """The normalised geometric mean of the observed Gaussian experts (M, B, D): the
    product of experts with variance multiplied by the number n of observed experts
    (precision = mean precision; the authors' `joint_posterior(average=True)`), so that
    identical experts give themselves back. Rows without any observed expert: N(0, I)."""
    anything = mask.any(0)
    safe = mask.clone()
    safe[0] |= ~anything
    q = product_of_gaussians(locs, scales, safe, prior_expert=False)
    n = safe.sum(0).to(locs.dtype)[:, None]
    loc = torch.where(anything[:, None], q.loc, torch.zeros_like(q.loc))
    scale = torch.where(anything[:, None], q.scale * n.sqrt(), torch.ones_like(q.scale))
    return Normal(loc, scale)


@MODELS.register("mmali")
class MMALI(MultimodalVAE):
    """Encoders q(z | x_m) (Gaussian, reparameterised), deterministic decoders G_m and a
    latent z = [s, c]: style s = z[latent_split["style"]] (per modality), content
    c = z[latent_split["content"]] (shared); prior N(0, I) on both (eq. 8/9).

    Factorised discriminators (§3.2; `discriminator="factorized"`), per modality m:
      D_m[0] ("pair"): (M+1)-way classifier of (x_m, z): class 0 the encoder pair
        (x_m, E_m(x_m)), class 1 the decoder pair (G_m(z), z), class 1+k the cross pair
        (x_m, [s_m, c_j]) with the content of the k-th other modality j;
        a_m = logit[0] - logit[1] estimates log q(x_m, s_m, c) / p(x_m, s_m, c).
      D_m[1] ("content"): binary, (x_m, E_m(x_m)) against (x_m', [s_m', c ~ p(c)]) with
        (x_m', s_m') a row of the batch shuffled jointly; its logit b_m estimates
        log q(x_m, s_m, c) / (q(x_m, s_m) p(c)).
      T ("dependence"): t = sum_{i<j} <f_i(x_i), f_j(x_j)> estimates log q(X) / prod q(x_m):
        real tuples against in-batch tuples with each modality from another row (`negative_rows`).
    All discriminators are spectrally normalised and trained with cross-entropy / the
    logistic loss (terms summed). The joint discriminator is never trained: its logits
    are `joint_logits(a, b, t)` (eq. 7/10).

    Generator loss (encoders + decoders), non-saturating (`non_saturating`):
      joint term, on complete rows: for each encoder distribution q_i, the tuple
        (X, [s_m from E_m(x_m), c_i from E_i(x_i)]_m) of class i, and for the decoder
        distribution (G_m([s_m, c]), [s_m, c])_m, s_m, c ~ N(0, I), of class M+1; each of
        the M+1 terms weighted 2 / (M+1) (the authors' code);
      unimodal term, weight `unimodal_weight` * 2 / (M+1), D_m[0] alone on rows where x_m
        is observed: encoder pair (class 0), decoder pair (class 1) and cross pairs with
        every other observed modality (class 1+k);
      optional reconstruction terms (mean squared errors, per row, the authors' code):
        `x_rec` ||G_m(E_m(x_m)) - x_m||^2, `s_rec` / `c_rec` ||E_m(G_m(z))_{s / c} - z_{s / c}||^2.
    `discriminator="joint"` (Table 1's ablation) replaces them all by one (M+1)-way
    classifier D(X, [s_1, ..., s_M, c]) trained on complete rows, with the same classes and
    generator loss and no unimodal term.

    Partial observation: a term counts only for the rows where all the modalities it
    reads are observed (and the decoder terms of modality m for rows where x_m is), so a
    modality missing from a whole batch gives its networks exactly zero gradient.
    Multimodal posteriors (synergy) are the geometric mean of the Gaussian experts (§4.2).
    There is no likelihood: `bound` and `log_likelihood` raise.
    """

    def __init__(
        self,
        *args,
        style_dim: int = 10,
        discriminator: str = "factorized",
        unimodal_weight: float = 0.1,
        x_rec: float = 0.0,
        s_rec: float = 0.0,
        c_rec: float = 0.0,
        discriminator_steps: int = 1,
        disc_features: int = 256,
        disc_hidden: int = 1024,
        disc_x_hidden: int = 400,
        disc_nets: dict[str, str] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        require_gaussian(self, "MMALI")
        if self.prior_theta.requires_grad:
            raise ValueError("MMALI's prior is the fixed N(0, I): set model.learn_prior: false")
        if discriminator not in DISCRIMINATORS:
            hint = nearest(discriminator, list(DISCRIMINATORS))
            raise ValueError(f"unknown discriminator {discriminator!r}{hint}; known: {DISCRIMINATORS}")
        if not 0 <= style_dim < self.latent_dim:
            raise ValueError(f"style_dim must be in [0, latent_dim) = [0, {self.latent_dim}), got {style_dim}")
        for name, value in (("unimodal_weight", unimodal_weight), ("x_rec", x_rec), ("s_rec", s_rec), ("c_rec", c_rec)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if discriminator_steps < 1:
            raise ValueError(f"discriminator_steps must be >= 1, got {discriminator_steps}")
        nets = disc_nets or {}
        unknown = [n for n in nets if n not in self.modalities]
        if unknown:
            raise ValueError(f"disc_nets names modalities {unknown} the model does not have; it has {self.names}")
        self.latent_split = {"style": slice(0, style_dim), "content": slice(style_dim, self.latent_dim)}
        self.style_dim = style_dim
        self.mode = discriminator
        self.unimodal_weight = unimodal_weight
        self.rec_weights = {"x": x_rec, "s": s_rec, "c": c_rec}
        self.discriminator_steps = discriminator_steps
        shapes = {n: m.shape for n, m in self.modalities.items()}
        kinds = {n: nets.get(n, "mlp") for n in self.names}
        size = {"features": disc_features, "hidden": disc_hidden, "x_hidden": disc_x_hidden}
        M, D = len(self.names), self.latent_dim
        if discriminator == "factorized":
            def per_modality(out: int) -> nn.ModuleDict:
                return nn.ModuleDict({n: XZDiscriminator([shapes[n]], D, out, [kinds[n]], **size) for n in self.names})

            self.discriminators = nn.ModuleDict({
                "pair": per_modality(M + 1),
                "content": per_modality(1),
                "dependence": DotProductCritic(list(shapes.values()), list(kinds.values()), disc_features, disc_x_hidden),
            })
        else:
            joint_dim = M * style_dim + (D - style_dim)
            self.discriminators = nn.ModuleDict({
                "joint": XZDiscriminator(list(shapes.values()), joint_dim, M + 1, list(kinds.values()), **size)
            })

    # --- the trainer's contract -------------------------------------------------------

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        generator = [*self.encoders.parameters(), *self.decoders.parameters()]
        return {"discriminator": list(self.discriminators.parameters()), "generator": generator}

    def schedule(self) -> list[tuple[str, int]]:
        return [("discriminator", self.discriminator_steps), ("generator", 1)]

    def training_step(self, batch: Batch, group: str) -> ModelOutput:
        if group == "discriminator":
            return self.discriminator_loss(batch)
        if group == "generator":
            return self(batch)
        raise ValueError(f"unknown parameter group {group!r}; MMALI has discriminator and generator")

    # --- pieces ---------------------------------------------------------------------

    def split(self, z: Tensor) -> tuple[Tensor, Tensor]:
        return z[..., self.latent_split["style"]], z[..., self.latent_split["content"]]

    def prior_draw(self, n: int, like: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """Per-modality styles and one shared content from N(0, I): ({m: (n, S)}, (n, C))."""
        styles = {m: torch.randn(n, self.style_dim, dtype=like.dtype, device=like.device) for m in self.names}
        content = torch.randn(n, self.latent_dim - self.style_dim, dtype=like.dtype, device=like.device)
        return styles, content

    def generated(self, batch: Batch) -> dict[str, object]:
        """Encoder draws z_m ~ q(z | x_m), prior draws and decoder outputs G_m([s_m, c])."""
        z = {m: self.posterior(m, batch.data[m]).rsample() for m in self.names}
        styles, content = self.prior_draw(batch.size, next(iter(z.values())))
        z_prior = {m: torch.cat([styles[m], content], -1) for m in self.names}
        x_gen = {m: self.decoders[m](z_prior[m]) for m in self.names}
        return {"z": z, "z_prior": z_prior, "x_gen": x_gen, "content": content}

    def pair_label(self, m: str, i: str) -> int:
        """D_m[0]'s class of a tuple whose content comes from encoder i (0 for i = m)."""
        if i == m:
            return 0
        return 2 + [n for n in self.names if n != m].index(i)

    def with_content(self, z: dict[str, Tensor], i: str) -> dict[str, Tensor]:
        """[s_m, c_i] for every modality m: the latents of encoder distribution q_i (eq. 8)."""
        c = self.split(z[i])[1]
        return {m: torch.cat([self.split(z[m])[0], c], -1) for m in self.names}

    def joint_latent(self, z: dict[str, Tensor], content: Tensor) -> Tensor:
        """[s_1, ..., s_M, c] for the joint-discriminator variant."""
        return torch.cat([*(self.split(z[m])[0] for m in self.names), content], -1)

    def factorized_scores(self, xs: dict[str, Tensor], zs: dict[str, Tensor]) -> tuple[dict, Tensor, Tensor]:
        """D_m[0] logits {m: (B, M+1)}, a (M, B), b (M, B) of one tuple (x_m, z_m)_m."""
        d = self.discriminators
        pair = {m: d["pair"][m]([xs[m]], zs[m]) for m in self.names}
        a = torch.stack([pair[m][:, 0] - pair[m][:, 1] for m in self.names])
        b = torch.stack([d["content"][m]([xs[m]], zs[m])[:, 0] for m in self.names])
        return pair, a, b

    # --- losses ---------------------------------------------------------------------

    def discriminator_loss(self, batch: Batch) -> ModelOutput:
        """Cross-entropy / logistic losses of all discriminators on detached generator outputs."""
        batch.validate(self.modalities)
        batch = batch.zero_missing()
        obs = batch.mask
        complete = torch.stack([obs[m] for m in self.names]).all(0)
        with torch.no_grad():
            g = self.generated(batch)
        x, z, z_prior, x_gen = batch.data, g["z"], g["z_prior"], g["x_gen"]
        n = batch.size
        terms: dict[str, Tensor] = {}
        if self.mode == "joint":
            logits = self.joint_variant_logits(x, g)
            terms["joint"] = sum(masked_mean(cross_entropy(l, k), complete) for k, l in enumerate(logits))
        else:
            d = self.discriminators
            for m in self.names:
                s, c = self.split(z[m])
                for i in self.names:
                    logits = d["pair"][m]([x[m]], torch.cat([s, self.split(z[i])[1]], -1))
                    terms[f"pair_{m}_{i}"] = masked_mean(cross_entropy(logits, self.pair_label(m, i)), obs[m] & obs[i])
                logits = d["pair"][m]([x_gen[m]], z_prior[m])
                terms[f"pair_{m}_p"] = masked_mean(cross_entropy(logits, 1), obs[m])
                real = d["content"][m]([x[m]], z[m])[:, 0]
                perm = torch.randperm(n, device=s.device)
                fake = d["content"][m]([x[m][perm]], torch.cat([s[perm], torch.randn_like(c)], -1))[:, 0]
                terms[f"content_{m}"] = logistic(real, fake, obs[m], obs[m][perm])
            rows = self.negative_rows(n, complete.device)
            negative_ok = torch.stack([obs[m][rows[m]] for m in self.names]).all(0) & (n > len(self.names))
            real = d["dependence"]([x[m] for m in self.names])
            fake = d["dependence"]([x[m][rows[m]] for m in self.names])
            terms["dependence"] = logistic(real, fake, complete, negative_ok)
        loss = sum(terms.values())
        metrics = {"loss": float(loss.detach())}
        for family in ("pair", "content", "dependence", "joint"):
            parts = [v for k, v in terms.items() if k.startswith(family)]
            if parts:
                metrics[family] = float(sum(parts).detach())
        return ModelOutput(loss, metrics)

    def joint_variant_logits(self, x: dict[str, Tensor], g: dict[str, object]) -> list[Tensor]:
        """The joint discriminator's logits of the M encoder tuples and the decoder tuple."""
        z, xs = g["z"], [x[m] for m in self.names]
        D = self.discriminators["joint"]
        logits = [D(xs, self.joint_latent(z, self.split(z[i])[1])) for i in self.names]
        return logits + [D([g["x_gen"][m] for m in self.names], self.joint_latent(g["z_prior"], g["content"]))]

    def negative_rows(self, n: int, device: torch.device) -> dict[str, Tensor]:
        """Rows of the critic's negative tuples: modality k of row r comes from row
        (r + o_k) mod n with o_1 = 0 and distinct random offsets o_2..o_M in 1..n-1, so no
        two modalities of a negative tuple come from the same row (a sample of the product
        of marginals). (The authors permute each modality independently, which keeps a
        real pair with probability 1/n.) With n <= M there are none (rows unusable)."""
        M = len(self.names)
        offsets = [0] + ((torch.randperm(n - 1) + 1)[: M - 1].tolist() if n > M else [0] * (M - 1))
        base = torch.arange(n, device=device)
        return {m: (base + o) % n for m, o in zip(self.names, offsets)}

    def generator_terms(self, batch: Batch, g: dict[str, object]) -> dict[str, Tensor]:
        """The adversarial terms of the generator loss (class docstring)."""
        obs, x, z, z_prior, x_gen = batch.mask, batch.data, g["z"], g["z_prior"], g["x_gen"]
        complete = torch.stack([obs[m] for m in self.names]).all(0)
        M = len(self.names)
        weight = 2.0 / (M + 1)
        if self.mode == "joint":
            logits = self.joint_variant_logits(x, g)
            joint = sum(weight * masked_mean(non_saturating(l, k), complete) for k, l in enumerate(logits))
            return {"adv_joint": joint}
        critic = self.discriminators["dependence"]
        t_real = critic([x[m] for m in self.names])
        joint = torch.zeros((), dtype=t_real.dtype, device=t_real.device)
        unimodal = torch.zeros_like(joint)
        for k, i in enumerate(self.names):
            zs = self.with_content(z, i)
            pair, a, b = self.factorized_scores(x, zs)
            joint = joint + weight * masked_mean(non_saturating(joint_logits(a, b, t_real), k), complete)
            for m in self.names:
                valid = obs[m] & obs[i]
                unimodal = unimodal + weight * masked_mean(non_saturating(pair[m], self.pair_label(m, i)), valid)
        pair, a, b = self.factorized_scores(x_gen, z_prior)
        t_gen = critic([x_gen[m] for m in self.names])
        joint = joint + weight * masked_mean(non_saturating(joint_logits(a, b, t_gen), M), complete)
        for m in self.names:
            unimodal = unimodal + weight * masked_mean(non_saturating(pair[m], 1), obs[m])
        return {"adv_joint": joint, "adv_unimodal": self.unimodal_weight * unimodal}

    def reconstruction_terms(self, batch: Batch, g: dict[str, object]) -> dict[str, Tensor]:
        """Weighted mean squared reconstruction errors of x, s and c (only those with weight > 0)."""
        terms: dict[str, Tensor] = {}
        obs = batch.mask
        for m in self.names:
            if self.rec_weights["x"] > 0:
                err = (self.decoders[m](g["z"][m]) - batch.data[m]).square().flatten(1).mean(-1)
                terms["rec_x"] = terms.get("rec_x", 0) + self.rec_weights["x"] * masked_mean(err, obs[m])
            if self.rec_weights["s"] > 0 or self.rec_weights["c"] > 0:
                back = self.posterior(m, g["x_gen"][m]).rsample()
                for part, idx in (("s", self.latent_split["style"]), ("c", self.latent_split["content"])):
                    if self.rec_weights[part] > 0:
                        err = (back[:, idx] - g["z_prior"][m][:, idx]).square().mean(-1)
                        term = self.rec_weights[part] * masked_mean(err, obs[m])
                        terms[f"rec_{part}"] = terms.get(f"rec_{part}", 0) + term
        return terms

    def forward(self, batch: Batch) -> ModelOutput:
        """The generator's loss (class docstring) and its terms as metrics."""
        batch.validate(self.modalities)
        batch = batch.zero_missing()
        g = self.generated(batch)
        terms = {**self.generator_terms(batch, g), **self.reconstruction_terms(batch, g)}
        loss = sum(terms.values())
        return ModelOutput(loss, {"loss": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()}})

    # --- inference and generation ---------------------------------------------------

    def encode(self, batch: Batch, modalities: list[str] | None = None) -> Normal:
        """q(z | x_S): the geometric mean of the observed experts of `modalities` (N(0, I) where none is)."""
        names = self.check_names(modalities)
        batch = batch.zero_missing()
        qs = [self.posterior(n, batch.data[n]) for n in names]
        locs = torch.stack([q.loc for q in qs])
        scales = torch.stack([q._scale_tensor() for q in qs])
        return geometric_mean_of_gaussians(locs, scales, torch.stack([batch.mask[n] for n in names]))

    @torch.no_grad()
    def sample(self, n: int, modalities: list[str] | None = None) -> dict[str, Tensor]:
        """Joint generation: one content c ~ N(0, I) per column, a style s_m ~ N(0, I) per modality."""
        names = self.check_names(modalities)
        styles, content = self.prior_draw(n, self.prior_loc)
        return {m: self.decoders[m](torch.cat([styles[m], content], -1)) for m in names}

    @torch.no_grad()
    def cross_generate(self, batch: Batch, source: str | list[str], target: str, mean: bool = False) -> Tensor:
        """G_target([s, c]): c from q(z | x_source) (geometric mean for several sources); s from
        the target's own encoder when it is among the observed sources, else s ~ N(0, I)
        (0 with `mean`)."""
        sources = [source] if isinstance(source, str) else list(source)
        (target,) = self.check_names([target])
        q = self.encode(batch, sources)
        c = self.split(q.mean if mean else q.sample())[1]
        s = torch.zeros(batch.size, self.style_dim, dtype=c.dtype, device=c.device)
        if not mean:
            s = torch.randn_like(s)
        if target in sources:
            qt = self.posterior(target, batch.zero_missing().data[target])
            own = self.split(qt.mean if mean else qt.sample())[0]
            s = torch.where(batch.mask[target][:, None], own, s)
        return self.decoders[target](torch.cat([s, c], -1))

    def no_likelihood(self, what: str):
        raise NotImplementedError(
            f"MMALI has no {what}: it is an adversarially trained model with deterministic decoders "
            "and defines no likelihood p(x | z); use the coherence and latent metrics instead"
        )

    def joint_proposal(self, batch: Batch):
        self.no_likelihood("importance-sampling proposal")

    def joint_log_weights(self, batch: Batch, K: int, proposal=None) -> tuple[Tensor, Tensor]:
        self.no_likelihood("importance weights")

    def bound(self, batch: Batch, K: int, estimator: str = "iwae") -> Tensor:
        self.no_likelihood(f"{estimator} bound")

    def log_likelihood(self, batch: Batch, K: int = 1000, chunk: int = 100) -> Tensor:
        self.no_likelihood("log-likelihood")


__all__ = ["MMALI", "geometric_mean_of_gaussians", "joint_logits", "masked_mean", "non_saturating"]
