"""The emcee move of the hyperparameter chain: an adaptive independence proposal.

The proposal densities themselves (:class:`~astrocal.model.proposal.IndependenceProposal`,
fitted by :func:`~astrocal.model.proposal.fit_proposal` or
:func:`~astrocal.model.proposal.laplace_proposal`) live in :mod:`astrocal.model.proposal`,
which does not import emcee; this module is imported only where a chain is run.
"""
from __future__ import annotations

import emcee
import numpy as np

__all__ = ["AdaptiveIndependenceMove"]


class AdaptiveIndependenceMove(emcee.moves.MHMove):
    """emcee move: differential evolution until :attr:`proposal` is set, then a
    Metropolis-Hastings independence proposal from it for each walker, with a
    differential-evolution step instead a fraction ``de_weight`` of the time (which keeps
    the chain moving should the proposal miss part of the posterior). Every random number
    comes from emcee's ``model.random``, which the chain's backend stores: a resumed chain
    continues bit for bit."""

    def __init__(self, de_weight=0.3):
        super().__init__(self._propose_independent)
        self.de = emcee.moves.DEMove()
        self.de_weight = float(de_weight)
        self.proposal = None

    def _propose_independent(self, coords, random):
        q = self.proposal.sample(coords.shape[0], random)
        log_q = self.proposal.log_density(q)
        # a draw the proposal puts on its padded edge (beyond |z| = Z_MAX) has zero density
        # there, and so has the posterior: refused with a factor of -inf (the ratio's
        # +inf - inf would be NaN, which emcee also refuses, with a RuntimeWarning)
        factors = np.where(np.isfinite(log_q), self.proposal.log_density(coords) - log_q, -np.inf)
        return q, factors

    def propose(self, model: emcee.model.Model, state: emcee.State) -> tuple[emcee.State, np.ndarray]:
        """One step of every walker (emcee's ``Move`` interface).

        Parameters
        ----------
        model : emcee.model.Model
            emcee's model (its ``random`` is the chain's random state).
        state : emcee.State
            The walkers' current state.

        Returns
        -------
        tuple of (emcee.State, numpy.ndarray)
            The new state and which walkers accepted their proposal (bool, walkers).
        """
        if self.proposal is None or model.random.rand() < self.de_weight:
            return self.de.propose(model, state)
        return super().propose(model, state)
