"""The global stage: what a backbone that sees 50 px cannot learn (exposure, airlight, white point).

Low light, haze and colour casts are properties of the whole image: an exposure curve, an airlight
that grows with depth, a white point. FFDNet's LoRAs only see a pixel's neighbourhood, so they learn
the colours of the scenes they trained on instead. Each kind may therefore carry, beside its LoRA, a
*global adapter*: a small network that looks at a thumbnail of the whole image and predicts

- a monotone tone curve per channel (``KNOTS`` values on an even grid of input levels) and a 3×3 colour
  matrix, then
- a coarse ``GRID`` × ``GRID`` field of per-channel gain and offset, bilinearly interpolated, for what
  varies across the image (vignetting, uneven light);
- for haze (an adapter built with ``dehaze=True``), first the scattering model undone: I = J t + A (1 - t),
  with the airlight ``A`` and the strength ``omega`` predicted from the thumbnail and the transmission
  ``t = 1 - omega * dark channel`` of the image itself, refined by a guided filter, so it follows depth
  edges that an 8×8 field cannot (He, Sun and Tang's dark channel prior, with its strength learned).
- for low light (an adapter built with ``anchor=True``), first an exposure read from the highlights: the
  thumbnail's brightest percent lifted to ``ANCHOR_LEVEL``, so a naturally dark scene is not brightened to the
  mean of the training photos and the curves work where the image's levels lie.

The stage is the identity when no kind with a global adapter is active. It composes like the LoRAs:
parameters = identity + sum_i s_i (parameters_i - identity), the paper's x_out = f0(x) + sum_i s_i f_i(x)
with f0 the identity. It runs once per image, on the whole image, before tiling, so the result does not
depend on the tile size. Written by hand: it is a few convolutions and a lookup, smaller than any
library's tone-mapping model (HDRNet, CURL and Zero-DCE are its relatives).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from kornia.filters import box_blur
from torch import nn

THUMBNAIL = 64
"""Side of the square thumbnail the adapter looks at: the whole image, squeezed."""
KNOTS = 16
GRID = 8
MAX_LOG_GAIN = 3.0
ROW_BAND = 256
"""Rows transformed at a time, so a 12-megapixel photo needs no full-size coefficient maps."""
QUANTILES = torch.linspace(0.02, 0.98, 13)
DEHAZE_SIDE = 256
"""Longest side at which the transmission is estimated; its coefficients are then applied at full size."""
MIN_TRANSMISSION = 0.3
"""The least transmission an unsure dehazing divides by. He's 0.1 lets a pale interior, whose white walls the dark
channel prior reads as airlight, be stretched tenfold when the router gives it haze; 0.3 keeps that to about
three times (docs/engine.md, *The transmission floor*)."""
SURE_TRANSMISSION = 0.2
"""The floor of a dehazing the router is sure of: dense haze needs a lower floor than 0.3, and the router's false
haze reads on pale photos come with weights below ``SURE_WEIGHT``. He's 0.1 gained as much on the choosing sets
and stretches twice as far (docs/engine.md, *A lower floor for a sure read of dense haze*)."""
SURE_WEIGHT = (0.9, 1.0)
"""Dehazing weights over which the floor falls from ``MIN_TRANSMISSION`` to ``SURE_TRANSMISSION``."""
DENSE_SEVERITY = (0.5, 0.7)
"""Haze severities read by the router's encoder over which a sure read's floor comes down: mild haze keeps the
high floor (the adapter's omega is near 0.9 whatever the haze, and on mild haze the floor is what keeps bright
walls and windows from being stretched)."""
SEVERITY_OMEGA = (0.75, 0.95)
"""The omega of a dehazing whose haze severity the router's encoder read, linear from severity 0 to 1, in place of
the adapter head's own: the head's omega hardly follows a photo's best one (it does worse than a fixed 0.85 on the
choosing sets), and the severity read follows it a little (docs/engine.md, *Omega from the haze severity read*).
Manual weights carry no reading and keep the head's omega."""
MAX_OMEGA = 0.95
"""The dark channel prior's usual cap: some haze is kept, so distant objects still look distant. An adapter file
may carry its own (``omega_cap``): one taught the best omega per photo needs more room for dense haze."""
ANCHOR_LEVEL = 0.9
"""Exposure anchor: the level the brightest percent of a photo's thumbnail (its largest channel) is lifted to,
about the median of the training photos'. A photo's highlights say its exposure far better than its mean (across
the training photos the log of the one varies a quarter as much as the log of the other)."""
MAX_ANCHOR_GAIN = 32.0
"""At most five stops: a darker thumbnail is mostly noise."""
_SOFTPLUS_ONE = math.log(math.e - 1.0)  # softplus(_SOFTPLUS_ONE) == 1: a zero output is the identity curve


@dataclass(frozen=True)
class GlobalParams:
    """One image's global transform: ``curve`` [B,3,KNOTS], ``log_gain`` and ``offset`` [B,3,GRID,GRID], ``mix``."""

    curve: torch.Tensor
    log_gain: torch.Tensor
    offset: torch.Tensor
    mix: torch.Tensor
    """[B,3,3] colour matrix after the curves: saturation and cross-channel casts that per-channel curves miss."""
    omega: torch.Tensor | None = None
    """[B,1] share of the dark channel read as haze; None where no adapter dehazes."""
    airlight: torch.Tensor | None = None
    """[B,3] the colour of the haze, in 0..1."""
    dehaze_weight: torch.Tensor | None = None
    """[B,1] how much of the dehazed image replaces the input (the composition's weight; 0: none)."""
    exposure: torch.Tensor | None = None
    """[B,1] log of the gain applied before the curves (an adapter with an exposure anchor); None: none."""
    sureness: torch.Tensor | None = None
    """[B,1] the router's weight for the haze, which sets the transmission floor (``transmission_floor``); None:
    ``dehaze_weight``. A per-region restore runs the adapter at weight 1 and blends by its map."""
    severity: torch.Tensor | None = None
    """[B,1] the haze severity the router's encoder reads (0 mild .. 1 dense), which also sets the floor; None: not
    read (manual weights, an encoder without a severity head), the floor follows the weight alone."""

    @staticmethod
    def identity(batch: int = 1, device: torch.device | str = "cpu") -> GlobalParams:
        curve = torch.linspace(0.0, 1.0, KNOTS, device=device).expand(batch, 3, KNOTS).clone()
        zeros = torch.zeros(batch, 3, GRID, GRID, device=device)
        return GlobalParams(curve, zeros, zeros.clone(), torch.eye(3, device=device).expand(batch, 3, 3).clone())

    def dehazes(self) -> bool:
        return self.omega is not None and bool((self.omega * self.dehaze_weight).any())

    def is_identity(self) -> bool:
        ident = GlobalParams.identity(self.curve.shape[0], self.curve.device)
        return bool(torch.equal(self.curve, ident.curve) and torch.equal(self.mix, ident.mix)
                    and not self.log_gain.any() and not self.offset.any() and not self.dehazes()
                    and (self.exposure is None or not self.exposure.any()))

    @staticmethod
    def blend(parts: Iterable[tuple[float, GlobalParams]], batch: int = 1) -> GlobalParams:
        """identity + sum_i w_i (p_i - identity): the composition rule of the LoRAs, in parameter space (the
        dehazing part: in the output, see below)."""
        out = GlobalParams.identity(batch)
        curve, log_gain, offset, mix = out.curve, out.log_gain, out.offset, out.mix
        omega = airlight = dehaze_weight = exposure = None
        for weight, params in parts:
            curve = curve + weight * (params.curve - out.curve)
            log_gain = log_gain + weight * params.log_gain
            offset = offset + weight * params.offset
            mix = mix + weight * (params.mix - out.mix)
            if params.exposure is not None:  # a gain composes in log space, like the field's
                exposure = weight * params.exposure + (0.0 if exposure is None else exposure)
            if params.omega is not None:
                # the dehazed image enters by weight, x + w (dehaze(x) - x): the LoRAs' rule, linear in the
                # output. Scaling omega instead removes far less than a w-th of the haze (t is 1 - omega d).
                share = weight * params.dehaze_weight
                dehaze_weight = share if dehaze_weight is None else dehaze_weight + share
                omega = share * params.omega if omega is None else omega + share * params.omega
                airlight = share * params.airlight if airlight is None else airlight + share * params.airlight
        if omega is not None:  # several adapters that dehaze: their omega and airlight, averaged by weight
            omega = omega / dehaze_weight.clamp_min(1e-8)
            airlight = airlight / dehaze_weight.clamp_min(1e-8)
        return GlobalParams(curve, log_gain, offset, mix, omega, airlight, dehaze_weight, exposure)


def thumbnail(image: torch.Tensor) -> torch.Tensor:
    """The whole image [B,3,H,W] as [B,3,THUMBNAIL,THUMBNAIL], by area averaging (noise averages out)."""
    return F.adaptive_avg_pool2d(image.float(), THUMBNAIL)


def highlight_level(thumb: torch.Tensor) -> torch.Tensor:
    """[B,1]: the 99th percentile of each thumbnail's largest channel, the level the exposure anchor lifts."""
    return torch.quantile(thumb.amax(dim=1).flatten(1).float(), 0.99, dim=-1, keepdim=True)


def anchor_gain(level: torch.Tensor, anchor: float | torch.Tensor = ANCHOR_LEVEL) -> torch.Tensor:
    """The gain that lifts a highlight ``level`` to ``anchor``: never below 1 (no darkening), at most
    MAX_ANCHOR_GAIN."""
    return (anchor / level.clamp_min(1e-4)).clamp(1.0, MAX_ANCHOR_GAIN)


def underexposure_stops(image: torch.Tensor) -> torch.Tensor:
    """[B]: how many stops the exposure anchor would lift ``image`` [B,3,H,W] (0: its highlights are at or above
    ANCHOR_LEVEL). Under-exposure darkens the highlights with the rest; a scene that is dark by nature mostly
    keeps some bright ones."""
    return torch.log2(anchor_gain(highlight_level(thumbnail(image)))).flatten()


def dark_channel(image: torch.Tensor, patch: int) -> torch.Tensor:
    """[B,1,H,W]: each pixel's smallest channel, then the smallest over a ``patch``-sized square (odd)."""
    darkest = image.amin(dim=1, keepdim=True)
    return -F.max_pool2d(-F.pad(darkest, [patch // 2] * 4, mode="replicate"), patch, stride=1)


def haze_cues(thumb: torch.Tensor, dark: torch.Tensor) -> torch.Tensor:
    """[B, 2 x QUANTILES]: quantiles of the thumbnail's dark channel ``dark`` and of its saturation. Haze lifts
    the one and washes out the other, whatever the scene's colours; a clear photo's dark channel is near zero."""
    dark = dark.flatten(1)
    saturation = ((thumb.amax(dim=1) - thumb.amin(dim=1)) / thumb.amax(dim=1).clamp_min(1e-3)).flatten(1)
    levels = QUANTILES.to(thumb.device)
    return torch.cat((torch.quantile(dark, levels, dim=-1).T, torch.quantile(saturation, levels, dim=-1).T), dim=1)


def estimated_airlight(thumb: torch.Tensor, dark: torch.Tensor) -> torch.Tensor:
    """[B,3]: the mean colour of the thumbnail's haziest 2 % (the largest of its dark channel ``dark``), the
    prior's airlight."""
    dark = dark.flatten(1)
    count = max(1, dark.shape[1] // 50)
    index = dark.topk(count, dim=1).indices
    return torch.gather(thumb.flatten(2), 2, index[:, None].expand(-1, 3, -1)).mean(dim=-1)


class GlobalAdapter(nn.Module):
    """Thumbnail -> GlobalParams. About 70k parameters; its last layers start at zero (the identity).

    ``dehaze=True`` adds the haze cues to the head's input and a head for ``omega`` and the airlight (which
    starts at the plain dark channel prior, not the identity: training begins from a dehazer); ``anchor=True``
    the exposure anchor; ``omega_cap`` replaces MAX_OMEGA. A file's keys say which it is (``dehaze_head.*``,
    ``anchor_level``, ``omega_cap``)."""

    def __init__(self, width: int = 32, dehaze: bool = False, anchor: bool = False,
                 omega_cap: float | None = None) -> None:
        super().__init__()
        w = width
        self.dehaze = dehaze
        self.anchor = anchor
        if anchor:  # a buffer, so a file says what it is (``anchor_level``)
            self.register_buffer("anchor_level", torch.tensor(ANCHOR_LEVEL))
        if omega_cap is not None:  # likewise; files without it keep MAX_OMEGA
            self.register_buffer("omega_cap", torch.tensor(float(omega_cap)))
        cues = 2 * QUANTILES.numel() if dehaze else 0
        cues += 1 if anchor else 0
        self.trunk = nn.Sequential(
            nn.Conv2d(6, w // 2, 3, stride=2, padding=1), nn.ReLU(inplace=True),  # 32
            nn.Conv2d(w // 2, w, 3, stride=2, padding=1), nn.ReLU(inplace=True),  # 16
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(inplace=True),  # 8
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.global_head = nn.Sequential(nn.Linear(4 * w + 3 * QUANTILES.numel() + cues, 2 * w),
                                         nn.ReLU(inplace=True), nn.Linear(2 * w, 3 * KNOTS + 9))
        self.local_head = nn.Conv2d(6 * w, 6, 1)
        for last in (self.global_head[-1], self.local_head):
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        if dehaze:  # omega starts at half its cap, the airlight at the prior's estimate
            self.dehaze_head = nn.Linear(2 * w, 4)
            nn.init.zeros_(self.dehaze_head.weight)
            nn.init.zeros_(self.dehaze_head.bias)

    @property
    def omega_limit(self) -> float | torch.Tensor:
        """The largest omega this adapter predicts: its own ``omega_cap`` if its file has one, else MAX_OMEGA."""
        return self.omega_cap if hasattr(self, "omega_cap") else MAX_OMEGA

    def forward(self, thumb: torch.Tensor) -> GlobalParams:
        exposure = None
        if self.anchor:  # lift the highlights to the anchor first: the curves then work where the image lies
            exposure = torch.log(anchor_gain(highlight_level(thumb), self.anchor_level))
            thumb = (thumb * exposure.exp()[..., None, None]).clamp(0, 1)
        # log-intensity beside the pixels: exposure is multiplicative, so the trunk sees it linearly
        features = self.trunk(torch.cat((thumb, torch.log(thumb.clamp_min(1e-3))), dim=1))
        pooled = torch.cat((features.mean(dim=(2, 3)), features.amax(dim=(2, 3))), dim=1)
        # each channel's histogram (as quantiles) beside the features: histogram equalisation's input, whatever
        # tone curve darkened the photo
        levels = torch.quantile(thumb.flatten(2), QUANTILES.to(thumb.device), dim=-1).permute(1, 0, 2).flatten(1)
        dark = dark_channel(thumb, 3) if self.dehaze else None
        inputs = torch.cat((pooled, levels, haze_cues(thumb, dark)) if self.dehaze else (pooled, levels), dim=1)
        if exposure is not None:  # the head sees how far the anchor lifted the photo, so it can take some back
            inputs = torch.cat((inputs, exposure), dim=1)
        hidden = self.global_head[1](self.global_head[0](inputs))
        head = self.global_head[2](hidden)
        raw, mix = head[:, : 3 * KNOTS].view(-1, 3, KNOTS), head[:, 3 * KNOTS:].view(-1, 3, 3)
        start = 0.25 * torch.tanh(raw[..., :1])
        steps = F.softplus(raw[..., 1:] + _SOFTPLUS_ONE) / (KNOTS - 1)
        curve = torch.cat((start, start + torch.cumsum(steps, dim=-1)), dim=-1)
        local = self.local_head(torch.cat((features, pooled[..., None, None].expand(-1, -1, GRID, GRID)), dim=1))
        mix = torch.eye(3, device=mix.device) + 0.5 * torch.tanh(mix)
        omega = airlight = weight = None
        if self.dehaze:
            raw_haze = self.dehaze_head(hidden)
            omega = self.omega_limit * torch.sigmoid(raw_haze[:, :1])
            correction = torch.exp(0.25 * torch.tanh(raw_haze[:, 1:]))
            airlight = (estimated_airlight(thumb, dark) * correction).clamp(0.05, 1.0)
            weight = torch.ones_like(omega)
        return GlobalParams(curve, local[:, :3].clamp(-MAX_LOG_GAIN, MAX_LOG_GAIN), local[:, 3:], mix, omega, airlight,
                            weight, exposure)


def apply_curve(image: torch.Tensor, curve: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear per-channel curve: ``image`` [B,3,H,W] in 0..1, ``curve`` [B,3,KNOTS]."""
    b, c, h, w = image.shape
    position = image.clamp(0, 1).reshape(b, c, h * w) * (KNOTS - 1)
    lower = position.floor().clamp(max=KNOTS - 2)
    frac = position - lower
    index = lower.long()
    low = torch.gather(curve, 2, index)
    high = torch.gather(curve, 2, index + 1)
    return (low + frac * (high - low)).view(b, c, h, w)


def _sample_rows(maps: torch.Tensor, rows: slice, height: int, width: int) -> torch.Tensor:
    """Coarse ``maps`` [B,C,h,w] spread over a ``height`` x ``width`` image, bilinearly, at the pixels of ``rows``."""
    ys = (torch.arange(rows.start, rows.stop, dtype=torch.float32) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width * 2 - 1
    grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], dim=-1)
    grid = grid.to(maps.device)[None].expand(maps.shape[0], -1, -1, -1)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _field(params: GlobalParams, rows: slice, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gain and offset at the pixels of ``rows``, bilinear between the grid cells' centres."""
    sampled = _sample_rows(torch.cat((params.log_gain, params.offset), dim=1), rows, height, width)
    return sampled[:, :3].exp(), sampled[:, 3:]


def _odd(value: float) -> int:
    return max(3, int(round(value)) // 2 * 2 + 1)


def dehazing_omega(params: GlobalParams) -> torch.Tensor:
    """[B,1] the omega a dehazing uses: from the haze severity the router read (``SEVERITY_OMEGA``), else the
    adapter's own."""
    if params.severity is None:
        return params.omega
    low, high = SEVERITY_OMEGA
    return (low + (high - low) * ramp(params.severity, (0.0, 1.0))).to(params.omega.dtype)


def transmission_coefficients(image: torch.Tensor, params: GlobalParams) -> torch.Tensor:
    """[B,2,h,w]: the linear coefficients (a, b) of a guided filter, so that t = a * grey(image) + b at any
    pixel, estimated on the image shrunk to ``DEHAZE_SIDE``. He's fast guided filter, written by hand
    because kornia's ``guided_blur`` returns the filtered map, not the coefficients to apply at full size."""
    height, width = image.shape[-2:]
    scale = min(1.0, DEHAZE_SIDE / max(height, width))
    small = F.interpolate(image.float(), scale_factor=scale, mode="area") if scale < 1 else image.float()
    side = max(small.shape[-2:])
    hazy = small / params.airlight[..., None, None].clamp_min(0.05)
    raw = 1.0 - dehazing_omega(params)[..., None, None] * dark_channel(hazy, _odd(side / 40))
    grey = small.mean(dim=1, keepdim=True)
    window = _odd(side / 8)
    mean_grey, mean_raw = box_blur(grey, window), box_blur(raw, window)
    covariance = box_blur(grey * raw, window) - mean_grey * mean_raw
    variance = box_blur(grey * grey, window) - mean_grey * mean_grey
    a = covariance / (variance + 1e-3)
    b = mean_raw - a * mean_grey
    return torch.cat((box_blur(a, window), box_blur(b, window)), dim=1)


def ramp(value: torch.Tensor, ends: Sequence[float]) -> torch.Tensor:
    """0 up to ``ends[0]``, 1 from ``ends[1]``, linear between: how far a reading is into a rule's range."""
    low, high = ends
    return ((value.float() - low) / (high - low)).clamp(0.0, 1.0)


def transmission_floor(weight: torch.Tensor, severity: torch.Tensor | None = None) -> torch.Tensor:
    """The least transmission a dehazing of weight ``weight`` [B,1] divides by: ``MIN_TRANSMISSION`` up to the
    first of ``SURE_WEIGHT``, ``SURE_TRANSMISSION`` from the second, linear between; with the haze ``severity``
    read [B,1], only as far down as a ramp over ``DENSE_SEVERITY`` allows (mild haze keeps the high floor)."""
    share = ramp(weight, SURE_WEIGHT) * (1.0 if severity is None else ramp(severity, DENSE_SEVERITY))
    return MIN_TRANSMISSION - (MIN_TRANSMISSION - SURE_TRANSMISSION) * share


def _dehaze(band: torch.Tensor, params: GlobalParams, coefficients: torch.Tensor, rows: slice, height: int,
            width: int) -> torch.Tensor:
    ab = _sample_rows(coefficients, rows, height, width)
    weight = params.dehaze_weight if params.sureness is None else params.sureness
    floor = transmission_floor(weight, params.severity)[..., None, None]
    transmission = torch.maximum(ab[:, :1] * band.mean(dim=1, keepdim=True) + ab[:, 1:], floor).clamp(max=1.0)
    airlight = params.airlight[..., None, None]
    dehazed = (band - airlight) / transmission + airlight
    return band + params.dehaze_weight[..., None, None] * (dehazed - band)


def coefficients_at_omega(unit: torch.Tensor, omega: torch.Tensor) -> torch.Tensor:
    """The guided filter's coefficients at ``omega`` [B,1] from ``unit``, those at omega 1 (same airlight): the
    filter is linear in the raw transmission 1 - omega d, and a constant passes through it, so a search over
    omega filters once."""
    omega = omega[..., None, None]
    return torch.cat((omega * unit[:, :1], 1.0 - omega + omega * unit[:, 1:]), dim=1)


def apply_global(image: torch.Tensor, params: GlobalParams, clamp: bool = True,
                 coefficients: torch.Tensor | None = None) -> torch.Tensor:
    """The global transform on the whole image [B,3,H,W], a band of rows at a time; ``coefficients``: the
    transmission's, when already known (``coefficients_at_omega``)."""
    height, width = image.shape[-2:]
    if coefficients is None and params.dehazes():
        coefficients = transmission_coefficients(image, params)
    if torch.is_grad_enabled() and params.curve.requires_grad:  # training: small images, one band keeps the graph
        return _transform(image, params, slice(0, height), clamp, coefficients)
    out = torch.empty_like(image, dtype=torch.float32)
    for top in range(0, height, ROW_BAND):
        rows = slice(top, min(top + ROW_BAND, height))
        out[..., rows, :] = _transform(image, params, rows, clamp, coefficients)
    return out


def _transform(image: torch.Tensor, params: GlobalParams, rows: slice, clamp: bool,
               coefficients: torch.Tensor | None) -> torch.Tensor:
    height, width = image.shape[-2:]
    band = image[..., rows, :].float()
    if coefficients is not None:  # the scattering model first: the haze lies over the scene's own colours
        band = _dehaze(band, params, coefficients, rows, height, width).clamp(0, 1)
    if params.exposure is not None:
        band = band * params.exposure.exp()[..., None, None]
    gain, offset = _field(params, rows, height, width)
    toned = torch.einsum("bij,bjhw->bihw", params.mix, apply_curve(band, params.curve))
    band = gain * toned + offset
    return band.clamp(0, 1) if clamp else band


def run_adapters(images: torch.Tensor, weighted: Sequence[tuple[float, GlobalAdapter]],
                 haze_severity: float | None = None) -> torch.Tensor:
    """``images`` [B,3,H,W] through the weighted adapters' blended transform, each image with its own thumbnail;
    the images themselves when there is none. The one path of the sampler, the trainers and validation.
    ``haze_severity``: the router's reading, for the transmission floor (``transmission_floor``)."""
    if not weighted:
        return images
    thumb = thumbnail(images)
    params = GlobalParams.blend([(weight, adapter(thumb)) for weight, adapter in weighted], images.shape[0])
    if haze_severity is not None and params.omega is not None:
        params = replace(params, severity=torch.full_like(params.omega, float(haze_severity)))
    return apply_global(images, params)
