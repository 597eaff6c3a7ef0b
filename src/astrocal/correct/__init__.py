"""Applying a solution: undistorted positions of star lists, resampled images.

- :mod:`.solutions`: open any solution (AstroMet with a choice of method, SIP header, SIAF
  table, fit result directory) as one :class:`~.solutions.Evaluator`;
- :mod:`.starlist`: correct positions and star lists, with combined uncertainties and
  domain flags;
- :mod:`.chunks`: star lists of any length read and written in blocks of rows;
- :mod:`.image`: resample images onto the linear grid (drizzle, flux-conserving) with the
  correction folded into their WCS;
- the command, ``astrocal correct``: :mod:`astrocal.cli.correct`.
"""
from .solutions import ASTROMET_METHODS, Evaluation, Evaluator, SolutionError, open_solution
from .starlist import Corrected, correct_positions, correct_star_list, correct_star_list_file
from .image import correct_image, resample

__all__ = ["ASTROMET_METHODS", "Corrected", "Evaluation", "Evaluator", "SolutionError",
           "correct_image", "correct_positions", "correct_star_list", "correct_star_list_file",
           "open_solution",
           "resample"]
