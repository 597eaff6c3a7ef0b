"""Frames to positions: what the lab and the sky data paths share for their images.

- :mod:`.headers`: FITS headers of raw frames (the instrument's keyword map, the generic
  FITS set, a campaign's own keywords) and the exposure metadata read from them;
- :mod:`.reduce`: background, flat field, bad pixels, saturation, cosmic rays, and the
  reduced frame's file (SCI, DQ, BKGVAR);
- :mod:`.detect`: detection of the spots or stars (first guesses);
- :mod:`.psf`: PSF models (the pixel-integrated diffraction PSF, an AO star PSF, a
  pixelated PSF);
- :mod:`.centroid`: PSF-fitting centroids of many sources at once, with their
  Cramér-Rao-limited covariance;
- :mod:`.epsf`: the effective PSF built from the frames themselves;
- :mod:`.frame`: one frame's measurement (the centroid fit with the stamp checks and
  cosmic-ray rounds, the frame's metadata) as the lab and the sky stages both run it.

What is lab-only (the pinhole mask, identification of the spots with its holes, the
``astrocal measure`` stage of lab datasets) lives in :mod:`astrocal.lab`; what is
sky-only (catalogues, sites, astrometry, matching, star lists) in :mod:`astrocal.sky`.
The flag bits and columns of the tables these produce are :mod:`astrocal.sources`.

Pixel positions are 0-based (the centre of the first pixel is 0.0, ``x`` along numpy
axis 1).
"""
