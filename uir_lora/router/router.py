"""Degradation-aware router: s_o = d·B, keep the top K, s = norm_K(s_o).

With the frozen ImageNet encoder d is the standardised feature and s_o either a cosine (``train-router``)
or, with ``router.similarity: logit``, a presence logit: d = [standardised feature, 1] and B a presence
head's weights and bias (lab/router/presence.py). With the trained encoder (router/trained.py) d is its
feature with a constant 1 appended and s_o the presence logit. A presence logit's sigmoid is a
calibrated probability that the damage is there.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from kornia.geometry.transform import resize

from ..bank.manifest import NORMALISATIONS, Manifest, decode_matrix, presence_logit, read_manifest
from ..errors import TEMPERATURE_RANGE, BankError, InputError, check_int, check_range
from ..global_stage.adapter import ramp, underexposure_stops
from .encoder import DegradationEncoder
from .night_sky import night_sky_factors
from .noise_model import ARBITER_REASONS, ARBITERS
from .trained import CLEAN, make_encoder, with_constant


class Scores(NamedTuple):
    """What the router computes per image: similarities [B, N] and the unknown tests' inputs."""

    similarities: torch.Tensor
    unknown: torch.Tensor | None
    """cos(d, the "unknown" embedding) [B], or None when the bank has none."""
    residual: torch.Tensor | None
    """``subspace_residual`` [B], or None when the bank records no subspace."""


@dataclass
class RoutingResult:
    """The router's answer for one image: every similarity, and the kept, normalised weights."""

    similarities: dict[str, float]
    weights: dict[str, float]
    top_k: int
    temperature: float
    normalisation: str
    unknown_threshold: float | None = None
    unknown_similarity: float | None = None
    """cos(d, the bank's "unknown" embedding), when the bank has one."""
    unknown_margin: float | None = None
    residual: float | None = None
    """Share of the image's standardised feature outside the bank's known-kinds subspace (0..1)."""
    residual_threshold: float | None = None
    notes: list[str] = field(default_factory=list)
    confidence: float = 1.0
    """Share of the requested strength the restore should use (presence routers: follows the damage presence)."""
    presence_unknown: str | None = None
    """Presence routers: why the image looks damaged but no kind is confident, or None."""
    severities: dict[str, float] = field(default_factory=dict)
    """The trained encoder's severity reading per kind it was trained on (0 mild .. 1 strong); empty otherwise."""

    @property
    def best(self) -> tuple[str, float]:
        name = max(self.similarities, key=self.similarities.__getitem__)
        return name, self.similarities[name]

    @property
    def unknown_reason(self) -> str | None:
        """Why no LoRA fits, or None: the best similarity is too low, d is closer to the "unknown"
        embedding than to every LoRA by more than the margin, or d lies too far outside the subspace of
        the features the bank was fitted on (all three calibrated on the validation split)."""
        if self.presence_unknown is not None:
            return self.presence_unknown
        best = self.best[1]
        if self.unknown_threshold is not None and best < self.unknown_threshold:
            return f"best similarity {best:.3f} < threshold {self.unknown_threshold:.3f}"
        if (self.unknown_margin is not None and self.unknown_similarity is not None
                and self.unknown_similarity - best > self.unknown_margin):
            return (f"closer to the unknown class ({self.unknown_similarity:.3f}) than to any LoRA ({best:.3f}) "
                    f"by more than {self.unknown_margin:.3f}")
        if (self.residual_threshold is not None and self.residual is not None
                and self.residual > self.residual_threshold):
            return (f"unlike the examples the bank was fitted on (residual {self.residual:.3f} > "
                    f"{self.residual_threshold:.3f})")
        return None

    @property
    def unknown(self) -> bool:
        return self.unknown_reason is not None

    def table(self) -> str:
        """A text table of similarities and weights, sorted by weight then similarity; with the trained encoder, also
        how strong each kept kind looks (its severity, 0 mild .. 1 strong). "-": a kind left out (the severity head
        learned only from damage that is there) or one the encoder does not read."""
        severity = bool(self.severities)
        lines = [f"{'LoRA':<16}{'similarity':>11}{'weight':>9}" + (f"{'severity':>10}" if severity else "")]
        order = sorted(self.similarities, key=lambda n: (-self.weights.get(n, 0.0), -self.similarities[n]))
        for name in order:
            row = f"{name:<16}{plain(self.similarities[name], 3):>11}{plain(self.weights.get(name, 0.0), 3):>9}"
            if severity:
                read = name in self.severities and self.weights.get(name, 0.0) > 0
                row += f"{plain(self.severities[name], 2) if read else '-':>10}"
            lines.append(row)
        if self.unknown:
            lines.append(f"unknown degradation: {self.unknown_reason}; no LoRA fits well")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def plain(value: float, digits: int) -> str:
    """``value`` with ``digits`` decimals, never "-0.00": a value that rounds to zero prints as 0."""
    return f"{round(value, digits) + 0.0:.{digits}f}"  # -0.0 + 0.0 is +0.0


def unknown_mask(best: torch.Tensor, unknown_similarity: torch.Tensor | None, threshold: float | None,
                 margin: float | None, residual: torch.Tensor | None = None,
                 residual_threshold: float | None = None) -> torch.Tensor:
    """Boolean mask of the unknown tests (see RoutingResult.unknown_reason) for tensors of images/windows."""
    flagged = torch.zeros_like(best, dtype=torch.bool)
    if threshold is not None:
        flagged |= best < threshold
    if margin is not None and unknown_similarity is not None:
        flagged |= unknown_similarity - best > margin
    if residual_threshold is not None and residual is not None:
        flagged |= residual > residual_threshold
    return flagged


def outside_subspace(z: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """The part of each row of ``z`` [B, dim] orthogonal to an orthonormal ``basis`` [k, dim] (float64)."""
    z, basis = z.double(), basis.double()
    return z - (z @ basis.T) @ basis


def subspace_residual(z: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """||z - proj(z)|| / ||z|| for standardised features z [B, dim]: 0 inside the subspace, 1 orthogonal to it."""
    return (outside_subspace(z, basis).norm(dim=-1) / z.double().norm(dim=-1).clamp_min(1e-12)).float()


def normalise_top_k(similarities: torch.Tensor, top_k: int, temperature: float, normalisation: str,
                    doubt: float | None = None) -> torch.Tensor:
    """[..., N] similarities -> [..., N] weights, zero outside the top K (softmax and sum: summing to 1 inside).
    ``doubt`` (sigmoid only, ``RouterDefaults.doubt_temperature``): a kept negative s_o is divided by it first."""
    if normalisation not in NORMALISATIONS:
        raise InputError(f"normalisation must be one of {NORMALISATIONS}, got {normalisation!r}")
    k = max(1, min(int(top_k), similarities.shape[-1]))
    values, index = similarities.topk(k, dim=-1)
    if normalisation == "softmax":
        kept = torch.softmax(values / temperature, dim=-1)
    elif normalisation == "sigmoid":  # each kept kind's own presence probability: a mixture keeps both
        if doubt is not None:  # a presence below ½ weighs less than itself
            values = torch.where(values < 0, values / doubt, values)
        kept = torch.sigmoid(values / temperature)
    else:  # plain sum-normalisation; negative similarities count as zero
        positive = values.clamp_min(0)
        total = positive.sum(dim=-1, keepdim=True)
        kept = torch.where(total > 0, positive / total.clamp_min(1e-12), torch.full_like(values, 1.0 / k))
    return torch.zeros_like(similarities).scatter(-1, index, kept)


def presence_confidence(strongest: float, full: float | None, floor: float | None) -> float:
    """A presence router's restore strength for its strongest damage presence: 1 at or above ``full`` (None: always
    1), 0 at or below ``floor`` (None: 0), linear between (the bank's ``confidence_full`` and ``confidence_floor``)."""
    if full is None or strongest >= full:
        return 1.0
    low = floor or 0.0
    return max(0.0, (strongest - low) / (full - low))


def unsure_note(where: str, strongest: str, confidence: float) -> str:
    """The routing note of an unsure presence router (``where``: "" or " in any region"; ``strongest``: the
    strongest damage and its presence, as printed)."""
    outcome = (f"strength x {confidence:.2f}, the output stays close to the input" if confidence
               else "the image is returned unchanged")
    return f"unsure of any damage{where} (strongest: {strongest}): {outcome}"


def drop_weak_followers(weights: Mapping[str, float], floor: float,
                        masking: Collection[str]) -> tuple[dict[str, float], list[str]]:
    """Presence weights with every kind after the strongest left out below ``floor``, unless the strongest is one
    of ``masking`` (damage under which other damage reads weaker than it is), and a note per kind left out."""
    if not weights:
        return {}, []
    first = max(weights, key=weights.__getitem__)
    if first in masking:
        return dict(weights), []
    kept = {name: w for name, w in weights.items() if name == first or w >= floor}
    notes = [f"{name} ({w:.2f}) left out: beside {first}, a second kind needs a presence of {floor:g} or more"
             for name, w in weights.items() if name not in kept]
    return kept, notes


def merge_alternatives(similarities: torch.Tensor, groups: list[list[int]], temperature: float,
                       normalisation: str, chosen: torch.Tensor | None = None) -> torch.Tensor:
    """[..., N] similarities with each group of alternatives (indices of LoRAs that undo the same damage)
    folded into one member, whose similarity becomes the group's; the others can no longer be kept. The
    member is ``chosen`` [..., G] (a position in each group; -1 or None: the strongest head). The group's
    weight is what its members would have had together: for presence logits (sigmoid) the sum of their
    presences, below one, since two heads trained on each other's examples as negatives split one damage
    between them; for softmax the log-sum-exp; for plain sums the sum of the positive parts."""
    merged = similarities.clone()
    for number, group in enumerate(groups):
        members = similarities[..., group]
        if normalisation == "sigmoid":
            presence = torch.sigmoid(members / temperature).sum(dim=-1).clamp(max=1 - 1e-6)
            combined = torch.logit(presence) * temperature
        elif normalisation == "softmax":
            combined = torch.logsumexp(members / temperature, dim=-1) * temperature
        else:
            combined = members.clamp_min(0).sum(dim=-1)
        position = members.argmax(dim=-1)
        if chosen is not None:
            pick = chosen[..., number].to(position.device)
            position = torch.where(pick >= 0, pick, position)
        member = torch.tensor(group)[position]
        merged[..., group] = torch.finfo(merged.dtype).min  # below any similarity: never among the top K
        merged.scatter_(-1, member.unsqueeze(-1), combined.unsqueeze(-1).to(merged.dtype))
    return merged


def scaled_presence_logit(logits: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """The logit of σ(``logits``) × ``factor`` (factor in [0, 1]; 1 leaves a logit as it is, 0 puts it far below
    any kept kind's), in log space so that a confident presence keeps its precision."""
    factor = factor.float().clamp(1e-6, 1.0)
    log_presence = F.logsigmoid(logits.float()) + torch.log(factor)
    scaled = log_presence - torch.log1p(-torch.exp(log_presence).clamp(max=1.0 - 1e-7))
    return torch.where(factor >= 1.0, logits, scaled.to(logits.dtype))


def whole_view(images: torch.Tensor, side: int) -> torch.Tensor:
    """[B,3,H,W] downscaled (antialiased) to a short side of ``side`` px, the aspect kept; no larger than it was."""
    if min(images.shape[-2:]) <= side:
        return images
    return resize(images.float(), side, side="short", antialias=True).clamp(0, 1)


class Router:
    """Frozen encoder + the bank's embeddings B (one per LoRA) and feature standardisation."""

    @classmethod
    def of_folder(cls, bank_dir: Path) -> Router:
        """The router of the bank in ``bank_dir``: its manifest, and its encoder file when it has a trained one."""
        return cls(read_manifest(bank_dir), bank_dir=bank_dir)

    def __init__(self, manifest: Manifest, encoder: DegradationEncoder | None = None,
                 bank_dir: Path | None = None) -> None:
        self.manifest = manifest
        self.encoder = encoder or make_encoder(manifest.encoder, bank_dir)
        self.trained = manifest.encoder.trained
        self.logit = presence_logit(manifest.encoder, manifest.router)
        """s_o is a presence logit (its sigmoid: the probability that the damage is present), not a cosine."""
        if not manifest.loras:
            raise BankError(f"bank {manifest.name!r} has no LoRAs to route to; add some with `uir-lora bank add`")
        if manifest.encoder.dim != self.encoder.dim:
            raise BankError(f"bank {manifest.name!r} records {manifest.encoder.dim}-d router features, but the "
                            f"encoder gives {self.encoder.dim}; re-run `uir-lora train-router` for this bank")
        self.names = manifest.names
        groups = ([self.names.index(n) for n in group if n in self.names] for group in manifest.router.alternatives)
        self.alternatives = [group for group in groups if len(group) >= 2]
        self.arbiters = [ARBITERS.get(frozenset(self.names[i] for i in group)) for group in self.alternatives]
        """Per group, the measurement of the image that picks its member (``noise_model.ARBITERS``), or None."""
        self.margins = torch.tensor([entry.route_margin for entry in manifest.loras])
        spec = manifest.encoder
        self.pooled_index = [i for i, entry in enumerate(manifest.loras) if entry.embedding_of == "pooled"]
        """The LoRAs whose B is a row over the trained encoder's pooled statistics (kinds `bank add` placed)."""
        self.pooled_rows = torch.tensor([manifest.loras[i].embedding for i in self.pooled_index])
        embeddings = torch.tensor([[0.0] * spec.dim if entry.embedding_of == "pooled" else entry.embedding
                                   for entry in manifest.loras]).reshape(len(self.names), -1)
        if self.trained:  # d is used as it is
            self.mean, self.std = torch.zeros(spec.dim), torch.ones(spec.dim)
        else:
            self.mean, self.std = torch.tensor(spec.feature_mean), torch.tensor(spec.feature_std)
        # a presence logit's B is a head's rows (bias last) as they are; a cosine router's, unit vectors
        self.embeddings = embeddings if self.logit else F.normalize(embeddings, dim=-1)
        unknown = manifest.router.unknown_embedding
        self.unknown_embedding = None if unknown is None else F.normalize(torch.tensor(unknown), dim=-1)
        subspace = manifest.router.unknown_subspace
        self.subspace = None if subspace is None else decode_matrix(subspace, len(self.mean), "unknown_subspace")
        self.whole_view_index = [self.names.index(n) for n in manifest.router.whole_view_kinds if n in self.names]
        """The LoRAs whose s_o a view of the whole image must confirm (``RouterDefaults.whole_view_kinds``)."""
        self.exposure_index = [self.names.index(n) for n in manifest.router.exposure_kinds
                               if n in self.names] if self.logit else []
        """The LoRAs whose presence the photo's under-exposure must confirm (``RouterDefaults.exposure_kinds``)."""
        self.night_sky_index = [self.names.index(n) for n in manifest.router.night_sky_kinds
                                if n in self.names] if self.logit else []
        """The LoRAs that a night sky imitates (``RouterDefaults.night_sky_kinds``)."""
        self.whole_photo_index = [self.names.index(n) for n in manifest.router.whole_photo_kinds
                                  if n in self.names] if self.logit else []
        """The LoRAs that a region reads no more of than the whole photo where the photo doubts them
        (``RouterDefaults.whole_photo_kinds``, router/spatial.py)."""
        self.photo_wide_index = [self.names.index(n) for n in manifest.router.photo_wide_kinds
                                 if n in self.names] if self.logit else []
        """The LoRAs that a region reads no less of than the whole photo where the photo and most regions read them
        (``RouterDefaults.photo_wide_kinds``, router/spatial.py)."""
        rules = ((name, [self.names.index(n) for n in rule["kinds"] if n in self.names], rule["presence"])
                 for name, rule in manifest.router.doubted_beside.items())
        self.doubts = [(self.names.index(name), others, ramp) for name, others, ramp in rules
                       if name in self.names and others and self.logit]
        """(kind, the kinds whose presence puts it in doubt, the ramp) per ``RouterDefaults.doubted_beside`` rule
        whose kinds the bank has."""
        known = set(getattr(self.encoder, "kinds", ()))
        self.unseen_index = [i for i, name in enumerate(self.names) if name not in known and name != CLEAN] \
            if self.trained and CLEAN in self.names else []
        """Kinds the trained encoder was not trained on (placed by `bank add`): clean's head never saw them, so where
        one reads present, clean reads at most its absence (``feature_scores``)."""

    def similarities(self, images: torch.Tensor) -> torch.Tensor:
        """s_o = d·B: [B, N]."""
        return self.scores(images)[0]

    def scores(self, images: torch.Tensor) -> Scores:
        """s_o = d·B and the unknown tests' inputs, from the encoder's pass over the crops (and the whole view)."""
        return self._scores(images)[0]

    def scores_and_severities(self, images: torch.Tensor) -> tuple[Scores, torch.Tensor | None]:
        """``scores`` and the encoder's severity reading of the same pass (``severity_reading``)."""
        scores, raw, *_ = self._scores(images)
        return scores, self.severity_reading(raw)

    def severity_reading(self, raw: torch.Tensor) -> torch.Tensor | None:
        """[B, K]: the trained encoder's severity (0 mild .. 1 strong) of each kind it was trained on, in the order
        of ``encoder.kinds``, from its raw features; None for an encoder without a severity head."""
        severity_of = getattr(self.encoder, "severities", None)
        return None if severity_of is None else torch.stack(list(severity_of(raw).values()), dim=-1)

    def _scores(self, images: torch.Tensor) -> tuple[Scores, torch.Tensor, torch.Tensor | None, torch.Tensor | None,
                                                     torch.Tensor | None]:
        """``scores`` with what they came from: the crops' features, the whole view's, the under-exposure and how
        far the images are a night sky."""
        raw, whole = self.encoder.features(images, pooled=bool(self.pooled_index)), self.whole_view_features(images)
        stops = underexposure_stops(images) if self.exposure_index else None
        exposure = None if stops is None else self.exposure_ramp(stops)
        sky = self.night_sky(images)
        return self.feature_scores(raw, whole, exposure, sky=sky), raw, whole, stops, sky

    def night_sky(self, images: torch.Tensor) -> torch.Tensor | None:
        """[B] in [0, 1]: how far each image is a night sky (router.night_sky), or None when the bank names no kind
        that one imitates (``RouterDefaults.night_sky_kinds``)."""
        if not self.night_sky_index:
            return None
        defaults = self.manifest.router
        return night_sky_factors(images, defaults.night_sky_void, defaults.night_sky_points)

    def whole_view_features(self, images: torch.Tensor) -> torch.Tensor | None:
        """The encoder's features of the whole image downscaled to the bank's ``whole_view_side``, or None when
        no LoRA of the bank needs them or the image is no larger (the view would be the image itself)."""
        if not self.whole_view_index or min(images.shape[-2:]) <= self.manifest.router.whole_view_side:
            return None
        return self.encoder.features(whole_view(images, self.manifest.router.whole_view_side),
                                     pooled=bool(self.pooled_index))

    def exposure_factors(self, images: torch.Tensor) -> torch.Tensor | None:
        """[B] in [0, 1]: how far each image's highlights confirm under-exposure, a ramp of
        ``underexposure_stops`` between the bank's ``exposure_stops``; None when no LoRA of the bank needs it
        (for evaluation on cached features: ``feature_scores``'s ``exposure``)."""
        return self.exposure_ramp(underexposure_stops(images)) if self.exposure_index else None

    def exposure_ramp(self, stops: torch.Tensor) -> torch.Tensor:
        """[B] in [0, 1]: 0 up to the bank's ``exposure_stops[0]`` of under-exposure, 1 from ``exposure_stops[1]``."""
        return ramp(stops, self.manifest.router.exposure_stops)

    def feature_scores(self, raw: torch.Tensor, whole: torch.Tensor | None = None,
                       exposure: torch.Tensor | None = None, doubt: bool = True,
                       sky: torch.Tensor | None = None) -> Scores:
        """``scores`` of raw encoder features (cached features in evaluation need no encoder pass);
        d is the feature standardised by the bank's mean and std (the trained encoder's: as it is).
        A kind added later by `bank add` ranks by s_o minus its calibrated ``route_margin`` (0 for the others).
        ``whole``: features of the whole view (``whole_view_features``); the kinds it must confirm get the lower
        of the two s_o, so the small view can veto such a kind and never raise it. ``exposure``: the images'
        ``exposure_factors``; the exposure kinds' presence is multiplied by them (a logit of presence × factor).
        ``doubt``: apply the bank's ``doubted_beside`` rules (``doubted``). ``sky``: the images' ``night_sky``;
        the presence of the kinds a night sky imitates is multiplied by 1 minus it. Last, clean's presence is at
        most 1 minus that of each kind the encoder was not trained on (``unseen_index``): clean's head says "none
        of the kinds I learned", which a kind it never saw does not contradict."""
        scores = self._feature_scores(raw)
        confirmed = scores.similarities
        if whole is not None and self.whole_view_index:
            index = self.whole_view_index
            confirmed = confirmed.clone()
            confirmed[:, index] = torch.minimum(confirmed[:, index],
                                                self._feature_scores(whole).similarities[:, index])
        # checks of the photo itself: each scales its kinds' presence by a factor per image
        night = None if sky is None else 1.0 - sky
        for index, factor in ((self.exposure_index, exposure), (self.night_sky_index, night)):
            if factor is not None and index:
                confirmed = confirmed.clone()
                confirmed[:, index] = scaled_presence_logit(confirmed[:, index], factor[:, None])
        if doubt and self.doubts:
            confirmed = self.doubted(confirmed)
        if self.unseen_index:
            clean = self.names.index(CLEAN)
            confirmed = confirmed.clone()
            confirmed[:, clean] = torch.minimum(confirmed[:, clean], -confirmed[:, self.unseen_index].amax(dim=1))
        return scores._replace(similarities=confirmed)

    def doubted(self, similarities: torch.Tensor) -> torch.Tensor:
        """Presence logits [B, N] with each doubted kind's presence times 1 minus the ramp of the strongest presence
        among the kinds that put it in doubt (``RouterDefaults.doubted_beside``)."""
        out = similarities.clone()
        for kind, others, ends in self.doubts:
            factor = 1.0 - ramp(torch.sigmoid(similarities[:, others]).amax(dim=1), ends)
            out[:, kind] = scaled_presence_logit(similarities[:, kind], factor)
        return out

    def _feature_scores(self, raw: torch.Tensor) -> Scores:
        if self.trained:
            dim = self.manifest.encoder.dim
            sims = raw[:, :dim].float() @ self.embeddings.T - self.margins
            if self.pooled_index:
                if raw.shape[1] < dim + self.encoder.pooled_dim:
                    raise BankError(f"bank {self.manifest.name!r} places {self.names[self.pooled_index[0]]!r} on the "
                                    f"encoder's pooled statistics, and these features carry none: encode with "
                                    f"features(images, pooled=True)")
                pooled = with_constant(raw[:, dim : dim + self.encoder.pooled_dim].float()) @ self.pooled_rows.T
                sims[:, self.pooled_index] = pooled - self.margins[self.pooled_index]
            return Scores(sims, None, None)
        z = (raw - self.mean) / self.std
        if self.logit:
            return Scores(with_constant(z).float() @ self.embeddings.T - self.margins, None, None)
        unit = F.normalize(z, dim=-1)
        unknown = None if self.unknown_embedding is None else unit @ self.unknown_embedding
        residual = None if self.subspace is None else subspace_residual(z, self.subspace)
        return Scores(unit @ self.embeddings.T - self.margins, unknown, residual)

    def unknown_flags(self, scores: Scores) -> torch.Tensor:
        """The bank's unknown tests on ``scores``' output: a boolean per image."""
        defaults = self.manifest.router
        return unknown_mask(scores.similarities.max(dim=-1).values, scores.unknown, defaults.unknown_threshold,
                            defaults.unknown_margin, scores.residual, defaults.unknown_residual)

    def alternative_choice(self, images: torch.Tensor) -> torch.Tensor | None:
        """[B, G]: for each group of alternatives, the member that a measurement of the image picks (a position
        in the group; -1: the strongest head decides), or None when no group has such a measurement
        (``noise_model.ARBITERS``)."""
        if not any(self.arbiters):
            return None
        choice = torch.full((images.shape[0], len(self.alternatives)), -1, dtype=torch.long)
        for number, (group, arbiter) in enumerate(zip(self.alternatives, self.arbiters)):
            if arbiter is not None:
                members = [self.names[i] for i in group]
                picks = arbiter(images)
                choice[:, number] = torch.tensor([-1 if pick is None else members.index(pick) for pick in picks])
        return choice

    def weights(self, similarities: torch.Tensor, top_k: int, temperature: float, normalisation: str,
                chosen: torch.Tensor | None = None) -> torch.Tensor:
        """The composition weights of s_o: the bank's alternatives merged (into the ``chosen`` members, see
        ``alternative_choice``; else the strongest heads), then top-K and ``normalisation``."""
        merged = merge_alternatives(similarities, self.alternatives, temperature, normalisation, chosen)
        competing = len(self.names) - sum(len(group) - 1 for group in self.alternatives)
        return normalise_top_k(merged, min(top_k, competing), temperature, normalisation,
                               self.manifest.router.doubt_temperature)

    def route(
        self,
        images: torch.Tensor,
        top_k: int | None = None,
        temperature: float | None = None,
        normalisation: str | None = None,
    ) -> list[RoutingResult]:
        defaults = self.manifest.router
        if top_k is None:  # the bank's default may exceed a small bank's size: keep all LoRAs then
            top_k = min(defaults.top_k, len(self.names))
        top_k = check_int("top_k", top_k, 1, max(1, len(self.names)))
        temperature = check_range("temperature", defaults.temperature if temperature is None else temperature,
                                  *TEMPERATURE_RANGE)
        normalisation = normalisation or defaults.normalisation
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"router expects images [B,3,H,W], got {tuple(images.shape)}")
        (sims, unknown, residual), raw, whole, stops, sky = self._scores(images)
        chosen = self.alternative_choice(images)
        weights = self.weights(sims, top_k, temperature, normalisation, chosen)
        unknown_list = [None] * len(sims) if unknown is None else unknown.tolist()
        residual_list = [None] * len(sims) if residual is None else residual.tolist()
        results = [
            RoutingResult(
                similarities=dict(zip(self.names, row_s.tolist())),
                weights={n: w for n, w in zip(self.names, row_w.tolist()) if w > 0},
                top_k=top_k, temperature=temperature, normalisation=normalisation,
                unknown_threshold=defaults.unknown_threshold, unknown_similarity=row_u,
                unknown_margin=defaults.unknown_margin, residual=row_r,
                residual_threshold=defaults.unknown_residual,
            )
            for row_s, row_w, row_u, row_r in zip(sims, weights, unknown_list, residual_list)
        ]
        severities = self.severity_reading(raw)
        if severities is not None:
            for result, row in zip(results, severities.tolist()):
                result.severities = dict(zip(self.encoder.kinds, row))
        if chosen is not None:
            self._note_choices(results, sims, chosen)
        exposure = None if stops is None else self.exposure_ramp(stops)
        # each note compares the encoder's reading with that check alone: a kind that two checks take away gets
        # both notes, and one that a check left is never put down to it
        unchecked = self.feature_scores(raw, whole).similarities
        if stops is not None:
            full = self.manifest.router.exposure_stops[1]
            self._note_taken(results, unchecked, self.feature_scores(raw, whole, exposure).similarities,
                             self.exposure_index, lambda image: f"the highlights are only {float(stops[image]):.2f} "
                                                                f"stops under (full presence from {full:g})")
        if self.night_sky_index:
            self._note_taken(results, unchecked, self.feature_scores(raw, whole, sky=sky).similarities,
                             self.night_sky_index,
                             lambda image: "the photo is a night sky, dark and smooth with bright points of light "
                                           "(stars, not damage)")
        if self.doubts:
            self._note_doubts(results, self.feature_scores(raw, whole, exposure, doubt=False, sky=sky).similarities,
                              sims)
        if self.unseen_index:
            self._note_clean_held(results, self._feature_scores(raw).similarities, sims)
        if self.logit:
            merged = merge_alternatives(sims, self.alternatives, temperature, "sigmoid", chosen)
            for result, row in zip(results, torch.sigmoid(merged / temperature)):
                self._judge_presence(result, dict(zip(self.names, row.tolist())))
        return results

    def _note_choices(self, results: list[RoutingResult], sims: torch.Tensor, chosen: torch.Tensor) -> None:
        """Say so where a measurement of the image, not the stronger head, named a group's member."""
        for result, row, picks in zip(results, sims, chosen):
            for group, pick in zip(self.alternatives, picks.tolist()):
                strongest = self.names[group[int(row[group].argmax())]]
                if pick >= 0 and self.names[group[pick]] != strongest and self.names[group[pick]] in result.weights:
                    result.notes.append(f"{self.names[group[pick]]} rather than {strongest}: "
                                        f"{ARBITER_REASONS.get(self.names[group[pick]], 'measured on the image')}")

    def _note_taken(self, results: list[RoutingResult], read: torch.Tensor, checked: torch.Tensor,
                    indices: list[int], because: Callable[[int], str]) -> None:
        """Say so where the encoder read one of ``indices`` as present (``read``) and a check of the photo took that
        reading away (``checked``); ``because(image)`` says why."""
        for image, (result, row_read, row_checked) in enumerate(zip(results, read, checked)):
            for index in indices:
                if row_read[index] >= 0 > row_checked[index]:
                    presence = float(torch.sigmoid(row_read[index]))
                    result.notes.append(f"{self.names[index]} doubted: the encoder reads it ({presence:.2f}) but "
                                        f"{because(image)}")

    def _note_doubts(self, results: list[RoutingResult], read: torch.Tensor, doubted: torch.Tensor) -> None:
        """Say so where a kind read as present lost that reading to the kinds that put it in doubt."""
        for result, row_read, row_doubted in zip(results, read, doubted):
            for kind, others, (low, high) in self.doubts:
                if row_read[kind] >= 0 > row_doubted[kind]:
                    strongest = others[int(row_read[others].argmax())]
                    result.notes.append(
                        f"{self.names[kind]} doubted: read at {float(torch.sigmoid(row_read[kind])):.2f}, but beside "
                        f"{self.names[strongest]} at {float(torch.sigmoid(row_read[strongest])):.2f} (the bank's rule: "
                        f"kept whole below {low:g}, none from {high:g})")

    def _note_clean_held(self, results: list[RoutingResult], read: torch.Tensor, held: torch.Tensor) -> None:
        """Say so where clean's head read the image as clean and a kind the encoder never saw held it below."""
        clean = self.names.index(CLEAN)
        for result, row_read, row_held in zip(results, read, held):
            if row_read[clean] >= 0 > row_held[clean]:
                kind = max(self.unseen_index, key=lambda index: float(row_held[index]))
                result.notes.append(
                    f"clean read at {float(torch.sigmoid(row_read[clean])):.2f}, held at "
                    f"{float(torch.sigmoid(row_held[clean])):.2f} below {self.names[kind]} "
                    f"({float(torch.sigmoid(row_held[kind])):.2f}): the encoder's clean head was trained before "
                    f"{self.names[kind]} was added and cannot speak against it")

    def _judge_presence(self, result: RoutingResult, presence: dict[str, float]) -> None:
        """A presence router's own uncertainty: unknown when damage is likely but no kind is confident; when the
        strongest damage is not confident, a strength from 0 at ``confidence_floor`` to 1 at ``confidence_full``."""
        damage = {name: p for name, p in presence.items() if name != CLEAN}
        if not damage:
            return
        kind, strongest = max(damage.items(), key=lambda item: item[1])
        clean = presence.get(CLEAN, 1.0 - strongest)
        if clean < 0.5 and strongest < 0.5:
            result.presence_unknown = (f"damage is likely (clean {clean:.2f}) but no kind is confident "
                                       f"(best {kind} {strongest:.2f})")
        full = self.manifest.router.confidence_full
        if full is not None and strongest < full:
            result.confidence = presence_confidence(strongest, full, self.manifest.router.confidence_floor)
            result.notes.append(unsure_note("", f"{kind} {strongest:.2f}, clean {clean:.2f}", result.confidence))
