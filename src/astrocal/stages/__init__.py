"""The stages of the data flow, one module per command: each holds the orchestration of
its stage (what a command does with a campaign), as plain functions the command line
(:mod:`astrocal.cli`) and notebooks call alike.

- :mod:`.measure`: ``astrocal measure`` (a campaign's lab, sky and LMS frames to source
  tables, the checks across a dataset's frames, the campaign's summary);
- :mod:`.demo`, :mod:`.demo_lms`: ``astrocal demo`` (the whole chain on simulated METIS
  data) and ``astrocal demo --lms`` (the LMS chain);
- :mod:`.fit_inputs`, :mod:`.fit`: ``astrocal fit`` (a campaign's measured tables to
  points, the joint fit per filter, its result set and products).

The library (the model, the measurement of frames, the products) never imports a stage
or the command line.
"""
