"""A model's shape and the images it reads: the paper's size ladder, patches and tokens."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import PositiveInt, model_validator

from astropt.config.fields import StrictModel

#: The paper's size ladder (Smith et al. 2024, "AstroPT"): label -> (n_layer, n_head, n_embd).
PRESETS: dict[str, tuple[int, int, int]] = {
    "1M": (4, 8, 128),
    "5M": (6, 8, 256),
    "12M": (6, 8, 384),
    "21M": (6, 8, 512),
    "89M": (12, 12, 768),
    "309M": (24, 16, 1024),
    "830M": (16, 8, 2048),
    "2.1B": (26, 32, 2560),
}


class ImageConfig(StrictModel):
    """The images a model reads and how they are cut into tokens."""

    image_size: PositiveInt = 64
    """pixels on a side (square images)"""
    patch_size: PositiveInt = 16
    """pixels on a side of a patch (a token)"""
    n_chan: PositiveInt = 3
    """bands per image (g, r, z: 3)"""

    @model_validator(mode="after")
    def _check(self) -> ImageConfig:
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size ({self.image_size}) must be a multiple of patch_size "
                f"({self.patch_size})"
            )
        if self.grid < 2:
            raise ValueError(
                f"image_size {self.image_size} with patch_size {self.patch_size} gives one patch; "
                "next-patch prediction needs at least 2"
            )
        return self

    @property
    def grid(self) -> int:
        """Patches along one side of the image."""
        return self.image_size // self.patch_size

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return self.n_chan, self.image_size, self.image_size

    @property
    def patch_dim(self) -> int:
        return self.patch_size * self.patch_size * self.n_chan

    @property
    def tokens_per_image(self) -> int:
        """Positions the model reads: all patches but the last, each predicting its successor."""
        return self.grid * self.grid - 1


def _nest_image(data: Any) -> Any:
    """Weights exported before the image settings were nested still load."""
    if isinstance(data, dict) and "image" not in data:
        flat = {k: data[k] for k in ("image_size", "patch_size", "n_chan") if k in data}
        if flat:
            data = {k: v for k, v in data.items() if k not in flat} | {"image": flat}
    return data


class ModelConfig(StrictModel):
    """Shape of one astroPT model. `patch_bias` and `gelu` exist to load upstream astroPT's
    released weights exactly (its patch encoder/decoder have biases, its GELU is tanh)."""

    n_layer: PositiveInt
    n_head: PositiveInt
    n_embd: PositiveInt
    image: ImageConfig = ImageConfig()
    bias: bool = False
    patch_bias: bool = False
    gelu: Literal["exact", "tanh"] = "exact"
    preset: str | None = None

    _nested = model_validator(mode="before")(_nest_image)

    @model_validator(mode="after")
    def _check_heads(self) -> ModelConfig:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return self

    @classmethod
    def from_preset(cls, name: str, **overrides: object) -> ModelConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}")
        n_layer, n_head, n_embd = PRESETS[name]
        fields = {"n_layer": n_layer, "n_head": n_head, "n_embd": n_embd, "preset": name}
        return cls(**(fields | overrides))

    @property
    def name(self) -> str:
        return self.preset or f"L{self.n_layer}-H{self.n_head}-D{self.n_embd}"
