"""Named training recipes: each seed paper's protocol as (head, loss, stage switch).

A recipe fixes what differs between methods: the classifier head, the loss and
its hyper-parameters, the second-stage switch (DRW, GA, IB) and the batch size
and decay factors of the schedule. Everything else (ResNet-32 or the small CNN,
SGD momentum 0.9, coupled weight decay 2e-4, lr 0.1 with the warm-up and step
decays of ``applications.protocol.PAPER_PROTOCOL``, rescaled to the run length)
is shared and lives in ``applications.train``; the stage switches start at the
protocol's epochs. Loss hyper-parameters come from
``applications.hyperparameters.HYPERPARAMETERS`` and can be overridden with
``--loss-arg key=value``.

Defaults the papers do not fix (documented assumptions): the largest-margins
family (LM-Softmax, NormFace, CosFace, ArcFace) uses scale 5 and margin 0.1 on
10-class data (the s=5 reference values of the paper's CIFAR-10 setting),
zero-centroid weight 1.0; LM-Softmax weights samples by class-balanced
weights (beta 0.9999) from the first epoch (see ``_lm_softmax``); IB trains
with plain cross-entropy on the logits before its switch (0-based epoch 100 of
200), as the authors' code does.
"""

from dataclasses import dataclass, field

import keras

from keras_margins import losses as km_losses
from keras_margins.callbacks import DeferredReweighting, GradientAdjustment, StageSwitch
from keras_margins.priors import class_balanced_weights
from keras_margins.regularizers import ZeroCentroid

from applications.hyperparameters import HYPERPARAMETERS, hyperparameters
from applications.protocol import PAPER_PROTOCOL

__all__ = ["Recipe", "RECIPES", "PAPER_CIFAR10_LT", "get_recipe", "TwoStageLoss",
           "LossStageSwitch", "LogitsAccuracy", "MixedLabelCrossentropy", "MixedLabelAccuracy",
           "recipes_table"]


@keras.saving.register_keras_serializable(package="applications")
class TwoStageLoss(keras.losses.Loss):
    """``first`` before the switch, ``second`` after (e.g. CE, then IB).

    ``first_columns``: the first loss sees ``y_pred[:, :first_columns]`` (the
    logits, without the feature-norm column the IB loss reads). The stage is
    switched by ``LossStageSwitch``, which rebuilds the compiled step.
    """

    def __init__(self, first, second, first_columns=None, second_stage=False,
                 name="two_stage_loss", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.first = keras.losses.get(first) if isinstance(first, dict) else first
        self.second = keras.losses.get(second) if isinstance(second, dict) else second
        self.first_columns = None if first_columns is None else int(first_columns)
        self.second_stage = bool(second_stage)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if self.second_stage:
            return self.second(y_true, y_pred, sample_weight=sample_weight)
        if self.first_columns is not None:
            y_pred = y_pred[:, :self.first_columns]
        return self.first(y_true, y_pred, sample_weight=sample_weight)

    def call(self, y_true, y_pred):  # pragma: no cover - __call__ is overridden
        raise NotImplementedError

    def get_config(self):
        return {"first": keras.losses.serialize(self.first),
                "second": keras.losses.serialize(self.second),
                "first_columns": self.first_columns, "second_stage": self.second_stage,
                "name": self.name, "reduction": self.reduction}


class LossStageSwitch(StageSwitch):
    """Switches every ``TwoStageLoss`` of the model to its second loss at
    0-based ``start_epoch`` (rebuilding the compiled step, resumable)."""

    requirement = "a TwoStageLoss"

    def accepts(self, loss):
        return isinstance(loss, TwoStageLoss)

    def set_stage(self, loss, second_stage):
        if loss.second_stage == second_stage:
            return False
        loss.second_stage = second_stage
        return True


@keras.saving.register_keras_serializable(package="applications")
class LogitsAccuracy(keras.metrics.SparseCategoricalAccuracy):
    """Sparse accuracy on the first ``num_classes`` columns of ``y_pred``
    (the IB head appends the feature norm as a last column)."""

    def __init__(self, num_classes, name="accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = int(num_classes)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, y_pred[:, :self.num_classes], sample_weight)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def _as_distribution(y_true, num_classes):
    """(B, C) label distributions from sparse (B,) / (B, 1) ids or (B, C) soft labels."""
    if len(y_true.shape) == 2 and y_true.shape[-1] == num_classes and num_classes != 1:
        return keras.ops.cast(y_true, "float32")
    ids = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,))
    return keras.ops.one_hot(ids, num_classes)


@keras.saving.register_keras_serializable(package="applications")
class MixedLabelCrossentropy(keras.losses.Loss):
    """Cross-entropy from logits for soft (B, C) labels (MixUp batches) and sparse
    ids alike (the test set): ``-sum_j q_j log softmax(x)_j``."""

    def __init__(self, name="mixed_label_crossentropy", reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        y_pred = keras.ops.cast(y_pred, "float32")
        target = _as_distribution(y_true, y_pred.shape[-1])
        return keras.ops.categorical_crossentropy(target, y_pred, from_logits=True)


@keras.saving.register_keras_serializable(package="applications")
class MixedLabelAccuracy(keras.metrics.SparseCategoricalAccuracy):
    """Top-1 accuracy against the largest label entry (soft labels) or the id (sparse)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        if len(y_true.shape) == 2 and y_true.shape[-1] == y_pred.shape[-1] != 1:
            y_true = keras.ops.argmax(y_true, axis=-1)
        return super().update_state(y_true, y_pred, sample_weight)


@dataclass
class Recipe:
    """One method's protocol.

    ``make_loss(counts, overrides)`` returns the compiled loss;
    ``stage`` is ``None``, ``"drw"``, ``"ga"`` or ``"ib"``; ``sam_rho`` trains
    with sharpness-aware minimisation of that radius (``keras_margins.sam``);
    ``second_stage`` re-balances the classifier after training
    (``applications.decoupled``); ``weight_decay`` replaces the protocol's 2e-4
    and ``mixup_alpha`` mixes the training batches (MixUp, soft labels);
    ``cc_sam`` trains with CC-SAM's class-conditional head perturbation
    (``keras_margins.class_conditional_sam``).
    """
    name: str
    description: str
    reference: str
    head: str
    make_loss: object
    stage: str = None
    batch_size: int = 128
    decay_factors: tuple = PAPER_PROTOCOL.decay_factors
    zero_centroid: bool = False
    defaults: dict = field(default_factory=dict)
    sam_rho: float = None
    second_stage: str = None
    weight_decay: float = None
    mixup_alpha: float = None
    cc_sam: bool = False

    def build_loss(self, class_counts, overrides=None):
        kwargs = {**self.defaults, **(overrides or {})}
        return self.make_loss(list(class_counts), kwargs)

    def stage_epoch(self, epochs, smoke=False):
        """0-based epoch of the second stage, rescaled to ``epochs`` (None if none)."""
        epoch = PAPER_PROTOCOL.rescaled(epochs).stage_epoch(self.stage)
        if epoch is None:
            return None
        if smoke and epochs > 1:
            epoch = min(epoch, epochs - 1)   # smoke runs exercise both stages
        return epoch

    def callbacks(self, class_counts, epochs, smoke=False):
        start = self.stage_epoch(epochs, smoke)
        if self.stage == "drw":
            return [DeferredReweighting(list(class_counts), start_epoch=start,
                                        **hyperparameters("class-balanced"))]
        if self.stage == "ga":
            return [GradientAdjustment(start_epoch=start)]
        if self.stage == "ib":
            return [LossStageSwitch(start_epoch=start)]
        return []


def _ce(counts, kw):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True, **kw)


def _focal(counts, kw):
    return km_losses.FocalLoss(**hyperparameters("focal", **kw))


def _cb_focal(counts, kw):
    # The LDAM-DRW code's "CB Focal": focal loss (gamma 1) with class-balanced
    # weights (beta 0.9999) from the first epoch.
    kw = dict(kw)
    beta = kw.pop("beta", hyperparameters("class-balanced")["beta"])
    weights = class_balanced_weights(counts, beta).tolist()
    return km_losses.FocalLoss(**hyperparameters("focal", **{"class_weights": weights, **kw}))


def _la(counts, kw):
    return km_losses.LogitAdjustedLoss(counts, **hyperparameters("logit-adjusted", **kw))


def _ldam(counts, kw):
    return km_losses.LDAMLoss(counts, **hyperparameters("ldam", **kw))


def _elm(lam):
    def make(counts, kw):
        return km_losses.ELMLoss(counts, **hyperparameters("elm", **{"lam": lam, **kw}))
    return make


def _mm(ldam):
    def make(counts, kw):
        # CIFAR-10-LT ratio 100 pair of the paper's Table 2: beta 1.5, delta_neg 0.6;
        # scale 19 (MM) / 26 (MM-LDAM).
        if ldam:
            return km_losses.MaxMarginLoss(**hyperparameters("mm-ldam", **{
                "class_counts": counts, **kw}))
        return km_losses.MaxMarginLoss(**hyperparameters("mm", **kw))
    return make


def _kps(counts, kw):
    return km_losses.KPSLoss(counts, **hyperparameters("kps", **kw))


def _lmsce(counts, kw):
    return km_losses.LMSCELoss(**hyperparameters("lmsce", **kw))


def _lm_softmax(counts, kw):
    """LM-Softmax (s 5) with class-balanced sample weights from the first epoch.

    Per sample ``dl/dc_y = -1`` and ``dl/dc_j = q_j = softmax_{k != y}(s c)_j``,
    ``sum_{j != y} q_j = 1``: the gradient never fades for learned samples (NormFace:
    ``dl/dc_y = -s (1 - p_y) -> 0``), so prototype ``k`` gets a pull of exactly
    ``n_k`` per epoch and pushes ``sum_{i: y_i != k} q_k(x_i)`` from the other
    classes. At ratio 100 the head fixes the geometry and the rare prototypes are
    pushed off their data (Fashion-MNIST-LT, 6 epochs, unweighted: 47-50% top-1,
    0% on the rarest classes; scale 16-64 or the loss times s do not fix it).
    Zhou et al., "Learning Towards the Largest Margins" (ICLR 2022), derive
    LM-Softmax for the class-balanced case; weighting samples by
    ``w_y = (1 - beta) / (1 - beta^n_y)`` (beta 0.9999, Cui et al. 2019) in the
    weighted mean ``sum_i w_{y_i} l_i / sum_i w_{y_i}`` makes the pulls ``n_k w_k``
    equal within 1.35x (same setting: 73.3/72.3/76.6% for seeds 0-2, NormFace-ZC
    72.7/71.0/70.5%; NormFace-ZC with the same weights: 80.3%, seed 0). From the
    start, not deferred: rescaled to short runs, DRW's switch (epoch 160/200)
    lands on the final lr-1e-5 epoch.
    ``--loss-arg beta=0`` gives the unweighted loss.
    """
    kw = dict(kw)
    beta = kw.pop("beta", hyperparameters("class-balanced")["beta"])
    weights = class_balanced_weights(counts, beta).tolist() if beta else None
    return km_losses.LMSoftmaxLoss(**hyperparameters("lm-softmax", **{
        "class_weights": weights, "reduction": "mean_with_sample_weight", **kw}))


def _normface(counts, kw):
    return km_losses.NormFaceLoss(**hyperparameters("normface", **kw))


def _cosface(counts, kw):
    return km_losses.CosFaceLoss(**hyperparameters("cosface", **kw))


def _arcface(counts, kw):
    return km_losses.ArcFaceLoss(**hyperparameters("arcface", **kw))


def _ce_rsm(counts, kw):
    # R_sm = -(c_y - max_j c_j) is bounded only on cosines: on raw logits the
    # regulariser can be driven to -inf and training diverges (measured: chance
    # accuracy on Fashion-MNIST-LT). So: cosine head, CE on scaled cosines
    # (NormFace, scale 5 like the other normalised recipes) + 0.5 R_sm.
    kw = dict(kw)
    base = hyperparameters("normface", **({"scale": kw.pop("scale")} if "scale" in kw else {}))
    return km_losses.SampleMarginLoss(base_loss=km_losses.NormFaceLoss(**base),
                                     **hyperparameters("sample-margin", **kw))


def _vs(counts, kw):
    return km_losses.VSLoss(counts, **hyperparameters("vs", **kw))


def _lade(counts, kw):
    return km_losses.LADELoss(counts, **hyperparameters("lade", **kw))


def _soft_ce(counts, kw):
    # MixUp batches carry (B, C) soft labels, the test set sparse ids.
    return MixedLabelCrossentropy(**kw)


def _ib_focal(counts, kw):
    # IB-Focal: the influence-balanced loss with focal's gamma.
    ib = km_losses.InfluenceBalancedLoss(counts, **hyperparameters(
        "influence-balanced", **{"gamma": hyperparameters("focal")["gamma"], **kw}))
    first = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return TwoStageLoss(first, ib, first_columns=len(counts))


_CAO = "Cao et al., NeurIPS 2019 (LDAM-DRW)"
_KATO = "Kato & Hotta (ELM)"
_KANG = "Kang, Vu & Yoo (Maximum Margin)"
_LI = "Li, Cheung & Hu (KPS)"
_ZHOU = "Zhou et al., ICLR 2022 (largest margins)"
_RANGWANI = "Rangwani et al., NeurIPS 2022 (SAM)"
_KINI = "Kini et al., NeurIPS 2021 (VS)"
_HONG = "Hong et al., CVPR 2021 (LADE)"
_KANG2020 = "Kang et al., ICLR 2020 (decoupling)"

#: Published top-1 (%) on CIFAR-10-LT, exponential ratio 100, ResNet-32, 200 epochs,
#: per recipe: (top-1, source). The seed papers' CE baseline is 70.4 (Cao et al.);
#: the gains the tables print are against it.
PAPER_CIFAR10_LT = {
    "ce": (70.4, _CAO),
    "ldam-drw": (77.0, _CAO),
    "elm-drw-lam1.0": (78.9, _KATO),
    "mm-ldam-drw": (78.6, _KANG),
    "kps-ga": (81.2, _LI),
    "lm-softmax-zc": (73.2, _ZHOU + ", its own protocol"),
    "ldam-drw-sam": (81.9, _RANGWANI),
    "vs": (80.8, _KINI),
    "mislas": (82.1, "Zhong et al., CVPR 2021 (MiSLAS)"),
}


#: KPS's learning-rate decay factors (x0.1, then x0.01 of the base rate).
KPS_DECAY_FACTORS = (0.1, 0.01)


def _build():
    H, P = HYPERPARAMETERS, PAPER_PROTOCOL
    beta = f"beta {H['class-balanced']['beta']:g}"
    kps = dict(head="cosine", make_loss=_kps, batch_size=64, decay_factors=KPS_DECAY_FACTORS)
    recipes = [
        Recipe("ce", "cross-entropy, plain Dense head", "baseline", "dense", _ce),
        Recipe("focal", f"focal loss, gamma {H['focal']['gamma']:g} (LDAM code's form)",
               "Lin et al. 2017 / " + _CAO, "dense", _focal),
        Recipe("cb-focal", f"focal gamma {H['focal']['gamma']:g} with class-balanced weights "
               f"({beta})", "Cui et al. 2019 / " + _CAO, "dense", _cb_focal),
        Recipe("la", f"logit-adjusted cross-entropy, tau {H['logit-adjusted']['tau']:g}",
               "Menon et al. 2021", "dense", _la),
        Recipe("ldam", f"LDAM (max margin {H['ldam']['max_margin']:g}, s "
               f"{H['ldam']['scale']:g}), cosine head", _CAO, "cosine", _ldam),
        Recipe("ldam-drw", f"LDAM + deferred re-weighting (epoch {P.drw_epoch}/{P.epochs})",
               _CAO, "cosine", _ldam, stage="drw"),
    ]
    for lam in ("1.0", "0.5", "0.1"):
        recipes.append(Recipe(f"elm-lam{lam}", f"ELM, lam {lam}, cosine head", _KATO,
                              "cosine", _elm(float(lam))))
        recipes.append(Recipe(f"elm-drw-lam{lam}", f"ELM lam {lam} + DRW", _KATO, "cosine",
                              _elm(float(lam)), stage="drw"))
    recipes += [
        Recipe("mm-drw", f"Maximum margin (beta {H['mm']['beta']:g}, delta_neg "
               f"{H['mm']['delta_neg']:g}, s {H['mm']['scale']:g}) + DRW", _KANG,
               "cosine", _mm(False), stage="drw"),
        Recipe("mm-ldam-drw", f"MM-LDAM (s {H['mm-ldam']['scale']:g}) + DRW", _KANG, "cosine",
               _mm(True), stage="drw"),
        Recipe("kps", f"KPS (max margin {H['kps']['max_margin']:g}, s {H['kps']['scale']:g}, "
               f"n_base {H['kps']['n_base']}), batch 64", _LI, **kps),
        Recipe("kps-ga", f"KPS + gradient adjustment (epoch {P.ga_epoch}/{P.epochs})", _LI,
               stage="ga", **kps),
        Recipe("kps-drw", "KPS + DRW", _LI, stage="drw", **kps),
        Recipe("lmsce", f"large-margin softmax CE, lam {H['lmsce']['lam']:g}",
               "Kobayashi 2019", "dense", _lmsce),
        Recipe("lm-softmax", f"LM-Softmax (s {H['lm-softmax']['scale']:g}), class-balanced "
               f"weights ({beta}), cosine head", _ZHOU, "cosine", _lm_softmax),
        Recipe("lm-softmax-zc", "LM-Softmax + zero-centroid regulariser, class-balanced weights",
               _ZHOU, "cosine", _lm_softmax, zero_centroid=True),
        Recipe("normface", f"NormFace (s {H['normface']['scale']:g}), cosine head",
               "Wang et al. 2017 / " + _ZHOU, "cosine", _normface),
        Recipe("normface-zc", "NormFace + zero-centroid", _ZHOU, "cosine", _normface,
               zero_centroid=True),
        Recipe("cosface", f"CosFace (m {H['cosface']['margin']:g}, s "
               f"{H['cosface']['scale']:g}), cosine head", "Wang et al. 2018 / " + _ZHOU,
               "cosine", _cosface),
        Recipe("cosface-zc", "CosFace + zero-centroid", _ZHOU, "cosine", _cosface,
               zero_centroid=True),
        Recipe("arcface", f"ArcFace (m {H['arcface']['margin']:g}, s "
               f"{H['arcface']['scale']:g}), cosine head", "Deng et al. 2019 / " + _ZHOU,
               "cosine", _arcface),
        Recipe("arcface-zc", "ArcFace + zero-centroid", _ZHOU, "cosine", _arcface,
               zero_centroid=True),
        Recipe("ce-rsm", f"CE (scaled cosines) + {H['sample-margin']['weight']:g} R_sm "
               "(sample-margin regulariser)", _ZHOU, "cosine", _ce_rsm),
        Recipe("ldam-drw-sam", f"LDAM-DRW trained with SAM (rho {H['sam']['rho']:g})",
               _RANGWANI, "cosine", _ldam, stage="drw", sam_rho=H["sam"]["rho"]),
        Recipe("kps-ga-sam", f"KPS-GA trained with SAM (rho {H['sam']['rho']:g})",
               _LI + " / " + _RANGWANI, stage="ga", sam_rho=H["sam"]["rho"], **kps),
        Recipe("vs", f"vector-scaling loss (gamma {H['vs']['gamma']:g}, tau "
               f"{H['vs']['tau']:g}), plain Dense head", _KINI, "dense", _vs),
        Recipe("lade", f"LADE (alpha {H['lade']['alpha']:g}), plain Dense head", _HONG,
               "dense", _lade),
        Recipe("crt", "CE, then classifier re-training (head re-drawn, class-balanced "
               f"batches, {H['second-stage']['epochs']} epochs)", _KANG2020, "dense", _ce,
               second_stage="crt"),
        Recipe("tau-norm", f"CE, then tau-normalised head (tau {H['second-stage']['tau']:g}, "
               "no bias)", _KANG2020, "dense", _ce, second_stage="tau-norm"),
        Recipe("lws", "CE, then learnable weight scaling (class-balanced batches, "
               f"{H['second-stage']['epochs']} epochs)", _KANG2020, "dense", _ce,
               second_stage="lws"),
        Recipe("weight-balancing", f"CE with weight decay "
               f"{H['weight-balancing']['weight_decay']:g}, then the head alone with the "
               f"class-balanced loss, weight decay and MaxNorm "
               f"{H['weight-balancing']['max_norm']:g}",
               "Alshammari et al., CVPR 2022", "dense", _ce, second_stage="weight-balancing",
               weight_decay=H["weight-balancing"]["weight_decay"]),
        Recipe("mislas", f"CE with MixUp (alpha {H['mislas']['mixup_alpha']:g}), then head + "
               "BatchNorm with label-aware smoothing, class-balanced batches",
               "Zhong et al., CVPR 2021 (MiSLAS)", "dense", _soft_ce, second_stage="mislas",
               mixup_alpha=H["mislas"]["mixup_alpha"]),
        Recipe("cc-sam", f"CE with MixUp (alpha {H['cc-sam']['mixup_alpha']:g}) and CC-SAM's "
               f"class-conditional head perturbation (kappa {H['cc-sam']['weight_radius']:g}, "
               f"beta {H['cc-sam']['flat_ratio']:g}), then the head on class-conditional "
               f"adversarial features (lambda {H['cc-sam']['feature_radius']:g}), "
               "class-balanced batches", "Zhou et al., CVPR 2023 (CC-SAM)", "dense", _soft_ce,
               second_stage="cc-sam", mixup_alpha=H["cc-sam"]["mixup_alpha"], cc_sam=True),
        Recipe("ib-focal", f"CE, then IB-Focal (alpha {H['influence-balanced']['alpha']:g}, "
               f"gamma {H['focal']['gamma']:g}) from epoch {P.ib_epoch}/{P.epochs}",
               "Park et al., ICCV 2021", "dense_l1", _ib_focal, stage="ib"),
    ]
    table = {r.name: r for r in recipes}
    aliases = {"elm": "elm-lam1.0", "elm-drw": "elm-drw-lam1.0"}
    return table, aliases


RECIPES, ALIASES = _build()


def get_recipe(name):
    name = ALIASES.get(name, name)
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}; choose from {sorted(RECIPES)} "
                         f"(aliases {sorted(ALIASES)}).")
    return RECIPES[name]


def head_regularizer(recipe, weight=1.0):
    """The ZeroCentroid regulariser of ``-zc`` recipes (None otherwise)."""
    if not recipe.zero_centroid:
        return None
    return ZeroCentroid(weight)


def recipes_table():
    """The recipes as a Markdown table (for --list-recipes and the docs)."""
    lines = ["| Recipe | Method | Head | Stage switch (of 200) | Batch | Paper |",
             "|:--|:--|:--|:--|--:|:--|"]
    stage_text = {None: "–", **{stage: f"{stage.upper()} @ "
                                f"{PAPER_PROTOCOL.stage_epoch(stage)}"
                                for stage in ("drw", "ga", "ib")}}
    for recipe in RECIPES.values():
        lines.append(f"| `{recipe.name}` | {recipe.description} | {recipe.head} | "
                     f"{stage_text[recipe.stage]} | {recipe.batch_size} | {recipe.reference} |")
    return "\n".join(lines)

