"""The lab data path: raw pinhole-mask frames to identified source tables.

- :mod:`.mask`: pinhole-mask tables (hole ids, positions in mm, diameters);
- :mod:`.identify`: spots identified with the holes of the mask;
- :mod:`.measure`: one lab frame to its identified source table (the campaign's stage,
  ``astrocal measure``, is :mod:`astrocal.stages.measure`);
- :mod:`.checks`: the checks across a dataset's frames (same content, saturation,
  commanded offsets against the measured shifts).

The frames' headers, reduction, detection, PSF models, centroids and effective PSF are
shared with the sky data path: :mod:`astrocal.image` (their old paths here,
``astrocal.lab.reduce`` and so on, still work for one release, with a
``DeprecationWarning``; so does ``astrocal.lab.detector``, the simulators' detector model,
now :mod:`astrocal.sim.detector`). Pixel positions are 0-based (the centre of the first
pixel is 0.0).
"""
