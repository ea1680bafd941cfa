"""Synthetic multi-band galaxy cutouts, written as a shard set.

Each galaxy is a Sersic bulge plus an exponential disc seen at a random inclination and
position angle, with optional logarithmic spiral arms, a bar, star-forming clumps along the arms
and a dust lane in edge-on discs. Bulges are redder than discs, arms and clumps bluer. A
redshift-like parameter shrinks the galaxy and dims it (a simple distance modulus) and reddens
it. Faint field stars and sometimes a neighbour galaxy are added, the light is blurred by a
Moffat PSF (sampled in real space, applied by FFT, vectorised over the batch), artefacts are
added (a saturated star with diffraction spikes, a satellite trail in one band, a no-data strip
along an edge), then sky and source Poisson noise plus read noise (Gaussian approximations), and
finally a Legacy-Survey-style asinh colour stretch maps the fluxes to uint8.

Modules, in the order data flows through them:

- `params`: the random parameters of each galaxy, its colours and the metadata columns.
- `scene`: the pre-PSF light of galaxies, neighbours and field stars.
- `observe`: PSF, artefacts, noise and the uint8 stretch; one block of galaxies at a time.
- `write`: galaxy ids, iteration over blocks, train/val shard sets, PNG previews.
- `cli`: the command line.

    python -m astropt.data.synth --out data/synth --n 100000 --size 32
"""

from astropt.data.synth.cli import main
from astropt.data.synth.observe import galaxy_block, legacy_stretch, render
from astropt.data.synth.params import (
    ARTEFACTS,
    GENERATOR_VERSION,
    METADATA_FIELDS,
    MOFFAT_BETAS,
    draw_parameters,
)
from astropt.data.synth.write import generate, iter_galaxies, object_id

__all__ = [
    "ARTEFACTS",
    "GENERATOR_VERSION",
    "METADATA_FIELDS",
    "MOFFAT_BETAS",
    "draw_parameters",
    "galaxy_block",
    "generate",
    "iter_galaxies",
    "legacy_stretch",
    "main",
    "object_id",
    "render",
]
