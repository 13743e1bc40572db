"""What the search needs to know about a generator, without the generator itself.

Pure Python so that both sides share it: export/ builds it from a torch module, engine/ reads it
back from an artefact manifest.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GeneratorSpec:
    """Shape contract of a generator as PULSE searches it.

    name:         registry name ("dcgan", "stylegan1").
    resolution:   output side in pixels (square), e.g. 64 or 1024.
    latent_dim:   size D of one latent vector (100 for dcgan, 512 for stylegan1).
    num_ws:       latent rows the synthesis consumes (W+ rows: 18 at 1024 px; 1 for a
                  single-vector latent such as dcgan, for which GEOCROSS is zero).
    noise_shapes: one (C, H, W) per noise input, in layer order; () when there is none.
    has_mapping:  True when a mapping network exists, so PULSE maps its search variable through
                  the Gaussian fit: w = LeakyReLU_0.2(v * std + mean).
    value_range:  (lo, hi) of the raw output; PULSE uses (G - lo) / (hi - lo), unclamped.
    channels:     output channels (3).
    """

    name: str
    resolution: int
    latent_dim: int
    num_ws: int
    noise_shapes: tuple[tuple[int, int, int], ...] = ()
    has_mapping: bool = False
    value_range: tuple[float, float] = (-1.0, 1.0)
    channels: int = 3

    @property
    def num_noise(self) -> int:
        return len(self.noise_shapes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["noise_shapes"] = [list(s) for s in self.noise_shapes]
        d["value_range"] = list(self.value_range)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorSpec":
        d = dict(d)
        d["noise_shapes"] = tuple(tuple(int(v) for v in s) for s in d.get("noise_shapes", ()))
        d["value_range"] = tuple(float(v) for v in d.get("value_range", (-1.0, 1.0)))
        return cls(**d)
