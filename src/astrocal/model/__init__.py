"""The joint Bayesian distortion model and its inference (``astrocal fit``).

- :mod:`.data`: the identified points (lab holes and sky stars) as plain arrays;
- :mod:`.flexure`: the telescope's flexure field of the sky data;
- :mod:`.linear`: the collapsed linear model, exact marginal likelihood over the linear
  parameters;
- :mod:`.expansion`: the likelihood's sums from the noise weights' fixed components (its
  fast path);
- :mod:`.inference`: preliminary fit, outliers, degree by evidence, emcee over the
  hyperparameters, exact draws of the linear parameters;
- :mod:`.footprint`: the data footprint, where the map is measured rather than
  extrapolated;
- :mod:`.quality`: the fit's quality flags (convergence, degree at the top of its range)
  that every product and the report state first;
- :mod:`.result`: saving and loading a fit.

``astrocal fit`` itself (a campaign's tables to points, the fit per filter, its result
set) is the stage :mod:`astrocal.stages.fit`.

The equations, gauges and assumptions are in ``docs/model.md``.
"""
