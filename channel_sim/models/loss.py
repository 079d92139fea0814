"""Loss models: independent erasure and Gilbert-Elliott two-state Markov loss, per symbol or per burst."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, model_validator

from channel_sim.models.base import ChannelBurst, ChannelModel, ModelConfig, erase

LossUnit = Literal["symbol", "burst"]

_GOOD, _BAD = 0, 1

_UNIT_DESCRIPTION = (
    "what is lost: 'symbol' erases single symbols (set to NaN+NaNj; byte payloads pass unchanged), "
    "'burst' drops whole bursts (symbol and byte payloads alike)"
)


class ErasureConfig(ModelConfig):
    """Independent loss: each symbol (or each burst) is lost with probability p."""

    kind: Literal["erasure"] = "erasure"
    p: float = Field(ge=0.0, le=1.0, description="probability that a symbol (or burst) is lost, in [0, 1]")
    unit: LossUnit = Field("symbol", description=_UNIT_DESCRIPTION)

    def build(self) -> ErasureModel:
        return ErasureModel(self)


class ErasureModel(ChannelModel):
    """Erases symbols or drops bursts independently; stateless."""

    def __init__(self, config: ErasureConfig) -> None:
        self.config = config

    def apply(self, burst: ChannelBurst, rng: np.random.Generator) -> ChannelBurst:
        if self.config.unit == "burst":
            return burst.replace(dropped=burst.dropped or bool(rng.random() < self.config.p))
        if burst.symbols is None or burst.dropped:
            return burst
        symbols = np.asarray(burst.symbols, dtype=np.complex64).reshape(-1)
        return erase(burst, symbols, rng.random(symbols.size) < self.config.p)

    def describe(self) -> str:
        return self.config.describe()


class GilbertElliottConfig(ModelConfig):
    """Two-state Markov (Gilbert-Elliott) loss: losses come in runs while the channel is in its bad state.

    At each step (a symbol, or a burst) the step is lost with probability `loss_good` or `loss_bad` according
    to the current state, then the state moves good -> bad with probability `p_good_to_bad` and bad -> good
    with `p_bad_to_good`. The state persists across bursts of a stream. The first state is drawn from the
    stationary distribution pi_bad = p_good_to_bad / (p_good_to_bad + p_bad_to_good) (good when both are 0),
    so the long-run loss rate pi_bad * loss_bad + (1 - pi_bad) * loss_good holds from the first burst.
    The defaults loss_good = 0, loss_bad = 1 give the classic Gilbert channel, mean loss run 1/p_bad_to_good.
    """

    kind: Literal["gilbert_elliott"] = "gilbert_elliott"
    p_good_to_bad: float = Field(
        ge=0.0, le=1.0, description="per-step probability of moving from the good to the bad state"
    )
    p_bad_to_good: float = Field(
        ge=0.0, le=1.0, description="per-step probability of moving from the bad to the good state"
    )
    loss_good: float = Field(0.0, ge=0.0, le=1.0, description="loss probability in the good state")
    loss_bad: float = Field(1.0, ge=0.0, le=1.0, description="loss probability in the bad state")
    unit: LossUnit = Field("symbol", description=_UNIT_DESCRIPTION)

    @model_validator(mode="after")
    def _bad_is_worse(self) -> GilbertElliottConfig:
        if self.loss_bad < self.loss_good:
            raise ValueError(f"loss_bad ({self.loss_bad}) must be at least loss_good ({self.loss_good})")
        return self

    @property
    def pi_bad(self) -> float:
        """Stationary probability of the bad state."""
        total = self.p_good_to_bad + self.p_bad_to_good
        return self.p_good_to_bad / total if total > 0 else 0.0

    @property
    def loss_rate(self) -> float:
        """Long-run fraction of steps lost."""
        return self.pi_bad * self.loss_bad + (1.0 - self.pi_bad) * self.loss_good

    def build(self) -> GilbertElliottModel:
        return GilbertElliottModel(self)


class GilbertElliottModel(ChannelModel):
    """Gilbert-Elliott loss with its Markov state kept across the bursts of one stream."""

    def __init__(self, config: GilbertElliottConfig) -> None:
        self.config = config
        self._leave = (config.p_good_to_bad, config.p_bad_to_good)
        self._loss = np.array([config.loss_good, config.loss_bad])
        self.state: int | None = None  # the state of the next step; None until the first one

    def apply(self, burst: ChannelBurst, rng: np.random.Generator) -> ChannelBurst:
        if self.config.unit == "burst":
            state = self._start(rng)
            lost = bool(rng.random() < self._loss[state])
            if rng.random() < self._leave[state]:
                state = 1 - state
            self.state = state
            return burst.replace(dropped=burst.dropped or lost)
        if burst.symbols is None or burst.dropped:
            return burst
        symbols = np.asarray(burst.symbols, dtype=np.complex64).reshape(-1)
        states = self._advance(symbols.size, rng)
        return erase(burst, symbols, rng.random(symbols.size) < self._loss[states])

    def _start(self, rng: np.random.Generator) -> int:
        """The current state, drawn from the stationary distribution on first use."""
        if self.state is None:
            self.state = _BAD if rng.random() < self.config.pi_bad else _GOOD
        return self.state

    def _advance(self, steps: int, rng: np.random.Generator) -> NDArray[np.intp]:
        """The states of the next `steps` steps; leaves `self.state` at the step after them."""
        # The time spent in a state is geometric, hence memoryless: the chain is simulated one run (sojourn)
        # at a time, and the run in progress at the end of a burst simply continues into the next one.
        need = steps + 1
        pieces: list[NDArray[np.intp]] = []
        filled, state = 0, self._start(rng)
        while filled < need:
            runs = self._runs(state, need - filled, rng)
            # Each batch holds an even number of runs, so the next batch starts in `state` again.
            pieces.append(runs)
            filled += runs.size
        states = np.concatenate(pieces)
        self.state = int(states[steps])
        return states[:steps]

    def _runs(self, state: int, need: int, rng: np.random.Generator) -> NDArray[np.intp]:
        """Alternating runs starting in `state`, batched to cover about `need` steps in one go."""
        p_this, p_other = self._leave[state], self._leave[1 - state]
        if p_this == 0:
            return np.full(need, state, dtype=np.intp)
        cycle = 1.0 / p_this + (1.0 / p_other if p_other > 0 else need)
        pairs = min(need, int(need / cycle) + 16)
        lengths = np.empty(2 * pairs, dtype=np.int64)
        lengths[0::2] = rng.geometric(p_this, pairs)
        lengths[1::2] = rng.geometric(p_other, pairs) if p_other > 0 else need
        np.minimum(lengths, need, out=lengths)  # steps past `need` are not asked for
        labels = np.tile(np.array([state, 1 - state], dtype=np.intp), pairs)
        # Runs that start past `need` are not needed (and would only cost memory); keep an even count so
        # that the caller's next batch starts in `state` again.
        used = int(np.searchsorted(np.cumsum(lengths), need)) + 1
        used = min(used + used % 2, lengths.size)
        return np.repeat(labels[:used], lengths[:used])

    def describe(self) -> str:
        return self.config.describe()
