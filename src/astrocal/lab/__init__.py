"""The lab data path: raw pinhole-mask frames to identified source tables.

- :mod:`.mask`: pinhole-mask tables (hole ids, positions in mm, diameters);
- :mod:`.headers`: FITS headers of raw lab frames;
- :mod:`.reduce`: background, flat field, bad pixels, cosmic rays;
- :mod:`.detect`: detection of the spots (first guesses);
- :mod:`.psf`, :mod:`.centroid`, :mod:`.epsf`: PSF models, PSF-fitting centroids with
  their Cramér-Rao-limited covariance, the effective PSF built from the frames;
- :mod:`.identify`: spots identified with the holes of the mask;
- :mod:`.measure`: the measure stage (``astrocal measure``);
- :mod:`.detector`: the detector model of the lab simulator.

Pixel positions are 0-based (the centre of the first pixel is 0.0).
"""
