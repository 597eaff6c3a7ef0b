"""The joint Bayesian distortion model and its inference (``astrocal fit``).

- :mod:`.data`: the identified points (lab holes and sky stars) as plain arrays;
- :mod:`.flexure`: the telescope's flexure field of the sky data;
- :mod:`.priors`: the prior settings (:class:`~.priors.Priors`) and the patterns they
  refer to (the mask's net affine patterns, the hole errors' gauge, the field widths' law);
- :mod:`.joint`: the joint model (:class:`~.joint.JointModel`): its points, parameters,
  priors and hyperparameters, and the exact marginal likelihood over the linear
  parameters;
- :mod:`.linear`: the linear algebra of that likelihood (normal equations, elimination of
  the per-source blocks, gauge conditioning, the Gaussian conditional), which reads the
  model through its public interface;
- :mod:`.expansion`: the likelihood's sums from the noise weights' fixed components (its
  fast path);
- :mod:`.inference`: :func:`~.inference.fit_joint`, its settings and its result
  (:class:`~.inference.Fit`), running the steps of :mod:`.outliers` (preliminary field,
  outliers), :mod:`.laplace` (MAP, Laplace evidence), :mod:`.selection` (the evidence
  scan, the choice of degree and residual), :mod:`.refinement` (the residual basis),
  :mod:`.sampling` (emcee over the hyperparameters, :mod:`.proposal`, :mod:`.moves`,
  :mod:`.chainstore`) and the exact draws of the linear parameters;
  :mod:`.identifiability` names what the data leave unconstrained;
- :mod:`.footprint`: the data footprint, where the map is measured rather than
  extrapolated;
- :mod:`.quality`: the fit's quality flags (convergence, degree at the top of its range)
  that every product and the report state first;
- :mod:`.result`: saving and loading a fit.

``astrocal fit`` itself (a campaign's tables to points, the fit per filter, its result
set) is the stage :mod:`astrocal.stages.fit`.

The equations, gauges and assumptions are in ``docs/model.md``.
"""
