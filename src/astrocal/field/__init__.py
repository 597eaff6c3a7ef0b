"""The distortion field and its polynomial bases, orderings, reverse and derived maps."""
from .basis import MAX_DEGREE, n_terms, terms
from .core import DistortionField, design_matrix
from .inverse import Inverse, NotOneToOneError, check_one_to_one, invert, solve
from .maps import LocalGeometry, affine_part, local_geometry, nonlinear_part
from .orderings import ORDERINGS

__all__ = [
    "MAX_DEGREE", "ORDERINGS", "DistortionField", "Inverse", "LocalGeometry",
    "NotOneToOneError", "affine_part", "check_one_to_one", "design_matrix", "invert",
    "local_geometry", "n_terms", "nonlinear_part", "solve", "terms",
]
