"""Witnesses of instability: domain points at which a neuron is exactly active or inactive.

Stage: ONNX -> IR -> domain and bounds -> **witnesses** -> stability search -> certification ...

A witness is a float64 point inside one box of the domain; its exact value is that vector read
as exact rationals. It shows a neuron ACTIVE if the EXACT pre-activation there is > 0 and
INACTIVE if it is < 0 (exactly 0 shows neither). A neuron shown in both phases is unstable, and
its two witnesses go into the certificate. Float evaluation only chooses which points to check:
`WitnessTable.offer` evaluates every promising point exactly (`Network.evaluate_exact`) and
records only exactly confirmed phases, so nothing in this module can call a neuron unstable
on the strength of a float.

`find_witnesses` gathers evidence cheapest first and stops as soon as every candidate neuron
is shown in both phases (or at the deadline): user data inside the domain, uniform samples,
box corners picked by the signs of each neuron's symbolic linear bounds (on the first layer
these are the exact maximizer and minimizer of g over the box), then vectorised sign-gradient
ascent/descent on each undecided neuron's pre-activation, projected onto the box, from several
starts. Other stages (LP optimal points, CP-SAT solutions) offer their points to the same table.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection, Sequence

import numpy as np
import numpy.typing as npt

from .bounds import symbolic_linear_bounds
from .config import Config
from .domain import Box, Domain
from .errors import DomainError
from .ir import Network
from .status import Neuron, Phase

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
Progress = Callable[[str, int, int], None]

_UNIT_ROUNDOFF = 2.0**-53
_CHUNK = 4096
"""Points per float batch (bounds memory on wide inputs)."""
_GRADIENT_STARTS = 4
"""Starts of the sign-gradient search per undecided (neuron, phase): the symbolic corner, the box
center, then uniform random points."""
_LARGEST_STEP = 0.5
_SMALLEST_STEP = 0.002
"""Sign-gradient step sizes, as fractions of the box width, decaying geometrically."""


@dataclasses.dataclass(frozen=True, eq=False)
class Witness:
    """A point of box `box` of the domain, exactly checked to show some neuron phases."""

    point: FloatArray
    box: int
    source: str
    """How it was found: "data", "random", "corner", "gradient", "lp" or "search"."""


class WitnessTable:
    """For each hidden neuron and phase, the first exactly checked witness that shows it.

    Internally phases are columns of one flat vector: ACTIVE of hidden neuron k at k, INACTIVE
    at k + (number of hidden neurons), hidden neurons in `Network.hidden_neurons()` order.
    """

    def __init__(self, network: Network, domain: Domain) -> None:
        domain.check_dimension(network.input_size)
        self._network = network
        self._domain = domain
        self._hidden = network.hidden_neurons()
        self._offsets: dict[int, int] = {}
        for position, neuron in enumerate(self._hidden):
            self._offsets.setdefault(neuron.layer, position)
        self._relu_layers = sorted(self._offsets)
        count = len(self._hidden)
        self._hidden_count = count
        self._witness_of = np.full(2 * count, -1, dtype=np.int64)
        self._witnesses: list[Witness] = []
        self._abs_weights = [np.abs(layer.float_weights) for layer in network.layers]
        self._exact_evaluations = 0

    @property
    def network(self) -> Network:
        return self._network

    @property
    def domain(self) -> Domain:
        return self._domain

    @property
    def exact_evaluations(self) -> int:
        """How many points have been evaluated exactly so far (a cost figure)."""
        return self._exact_evaluations

    def _column(self, neuron: Neuron, phase: Phase) -> int:
        offset = self._offsets.get(neuron.layer)
        if offset is None or not 0 <= neuron.index < self._network.layers[neuron.layer].outputs:
            raise ValueError(f"{neuron} is not a hidden neuron of {self._network.name}")
        return offset + neuron.index + (0 if phase is Phase.ACTIVE else self._hidden_count)

    @property
    def _seen(self) -> BoolArray:
        return np.asarray(self._witness_of >= 0)

    def seen(self, neuron: Neuron) -> set[Phase]:
        return {phase for phase in Phase if self._witness_of[self._column(neuron, phase)] >= 0}

    def witness_for(self, neuron: Neuron, phase: Phase) -> Witness | None:
        index = int(self._witness_of[self._column(neuron, phase)])
        return self._witnesses[index] if index >= 0 else None

    def unstable(self) -> set[Neuron]:
        """Hidden neurons shown in both phases."""
        seen = self._seen
        both = seen[: self._hidden_count] & seen[self._hidden_count :]
        return {self._hidden[k] for k in np.flatnonzero(both)}

    def witnesses(self) -> list[Witness]:
        """Distinct witnesses that show at least one phase, in the order they were recorded."""
        return list(self._witnesses)

    def unseen_phases(self, neurons: Collection[Neuron]) -> dict[Neuron, set[Phase]]:
        """For each given neuron with a phase not yet shown, the phases not yet shown."""
        unseen = {neuron: set(Phase) - self.seen(neuron) for neuron in neurons}
        return {neuron: phases for neuron, phases in unseen.items() if phases}

    def offer(self, points: npt.ArrayLike, box: int, source: str) -> int:
        """Check points of box `box` exactly where floats say they may show unseen phases.

        Points are evaluated exactly greedily, the one that (by float value, with a rounding
        margin) would show the most unseen phases first; after each exact evaluation the counts
        are updated. A phase whose float value is within the margin of 0 is tried exactly once
        per call. Returns the number of newly seen (neuron, phase) pairs. Points outside the box
        are a caller bug (ValueError).
        """
        batch = self._validated(points, box)
        if not self._relu_layers:
            return 0
        before = int(np.count_nonzero(self._seen))
        for start in range(0, batch.shape[0], _CHUNK):
            self._offer_chunk(batch[start : start + _CHUNK], box, source)
        return int(np.count_nonzero(self._seen)) - before

    def _validated(self, points: npt.ArrayLike, box: int) -> FloatArray:
        if not 0 <= box < len(self._domain.boxes):
            raise ValueError(
                f"box {box} is not a box of the domain ({len(self._domain.boxes)} boxes)"
            )
        batch = np.asarray(points, dtype=np.float64)
        if batch.ndim == 1:
            batch = batch[None, :]
        if batch.ndim != 2 or batch.shape[1] != self._network.input_size:
            raise ValueError(
                f"points of shape {batch.shape} are not rows of {self._network.input_size} inputs"
            )
        bounds = self._domain.boxes[box]
        outside = np.flatnonzero(~np.all((batch >= bounds.lower) & (batch <= bounds.upper), axis=1))
        if outside.size:
            raise ValueError(f"point {int(outside[0])} lies outside box {box}")
        return batch

    def _float_signs(self, batch: FloatArray) -> tuple[BoolArray, BoolArray]:
        """(surely, possibly) shown phases per point by float evaluation, as (k, 2H) masks.

        The margin is a rounding-error estimate of the float forward pass: the propagated input
        error |W| e plus gamma_n (|W||h| + |b|) per layer, doubled.
        """
        values = batch
        error = np.zeros_like(batch)
        surely: dict[int, tuple[BoolArray, BoolArray]] = {}
        possibly: dict[int, tuple[BoolArray, BoolArray]] = {}
        for index in range(self._relu_layers[-1] + 1):
            layer = self._network.layers[index]
            count = layer.inputs + 4
            gamma = 2.0 * count * _UNIT_ROUNDOFF / (1.0 - count * _UNIT_ROUNDOFF)
            g = values @ layer.float_weights.T + layer.float_bias
            error = (error + gamma * np.abs(values)) @ self._abs_weights[index].T + gamma * np.abs(
                layer.float_bias
            )
            if layer.relu:
                margin = 2.0 * error + 1e-12 * np.abs(g)
                surely[index] = (g > margin, g < -margin)
                possibly[index] = (g >= -margin, g <= margin)
                values = np.maximum(g, 0.0)
            else:
                values = g
        return self._flat(surely), self._flat(possibly)

    def _flat(self, per_layer: dict[int, tuple[BoolArray, BoolArray]]) -> BoolArray:
        """Per-layer (active, inactive) masks as one (k, 2H) mask in column order."""
        active = [per_layer[layer][0] for layer in self._relu_layers]
        inactive = [per_layer[layer][1] for layer in self._relu_layers]
        return np.concatenate(active + inactive, axis=1)

    def _offer_chunk(self, batch: FloatArray, box: int, source: str) -> None:
        surely, possibly = self._float_signs(batch)
        candidates = possibly & ~self._seen
        while True:
            counts = candidates.sum(axis=1)
            best = int(np.argmax(counts))
            if counts[best] == 0:
                return
            new = self._exact_phases(batch[best]) & ~self._seen
            if new.any():
                self._record(batch[best], box, source, new)
            # A near-zero phase that did not confirm is tried once per call, not chased through
            # the whole batch; the evaluated point is done.
            tried = np.flatnonzero(candidates[best] & ~surely[best] & ~new)
            candidates[:, tried] &= surely[:, tried]
            candidates[:, new] = False
            candidates[best] = False

    def _exact_phases(self, point: FloatArray) -> BoolArray:
        """Exactly shown phases at a point, as a (2H,) mask."""
        self._exact_evaluations += 1
        exact = self._network.evaluate_exact(point)
        signs = np.concatenate(
            [exact.pre_activations[layer].signs() for layer in self._relu_layers]
        )
        return np.concatenate([signs > 0, signs < 0])

    def _record(self, point: FloatArray, box: int, source: str, new: BoolArray) -> None:
        stored = np.array(point, dtype=np.float64)
        stored.setflags(write=False)
        self._witnesses.append(Witness(stored, box, source))
        self._witness_of[new] = len(self._witnesses) - 1


@dataclasses.dataclass(frozen=True)
class StageSummary:
    """What one stage of `find_witnesses` achieved."""

    name: str
    seconds: float
    new_phases: int
    """(neuron, phase) pairs newly shown by this stage."""
    undecided: int
    """Candidates not yet shown in both phases after the stage."""


@dataclasses.dataclass(frozen=True)
class WitnessSearchReport:
    stages: tuple[StageSummary, ...]
    data_used: int
    """User data rows inside the domain."""
    data_skipped: int
    """User data rows outside every box (they prove nothing about the domain)."""


@dataclasses.dataclass
class _Search:
    """The state shared by the stages of one `find_witnesses` run."""

    network: Network
    domain: Domain
    table: WitnessTable
    candidates: list[Neuron]
    deadline: float | None
    progress: Progress | None
    stages: list[StageSummary] = dataclasses.field(default_factory=list)

    def undecided(self) -> list[Neuron]:
        return [neuron for neuron in self.candidates if len(self.table.seen(neuron)) < 2]

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def finished(self) -> bool:
        return self.out_of_time() or not self.undecided()

    def open_rows(self) -> list[tuple[Neuron, Phase]]:
        unseen = self.table.unseen_phases(self.candidates)
        return [
            (neuron, phase)
            for neuron, phases in unseen.items()
            for phase in Phase
            if phase in phases
        ]

    def run_stage(self, name: str, stage: Callable[[], None]) -> None:
        if self.finished():
            return
        started = time.monotonic()
        before = _seen_count(self.table, self.candidates)
        stage()
        undecided = len(self.undecided())
        self.stages.append(
            StageSummary(
                name,
                time.monotonic() - started,
                _seen_count(self.table, self.candidates) - before,
                undecided,
            )
        )
        if self.progress is not None:
            self.progress(name, len(self.candidates) - undecided, len(self.candidates))


def _seen_count(table: WitnessTable, neurons: Collection[Neuron]) -> int:
    return sum(len(table.seen(neuron)) for neuron in neurons)


def find_witnesses(
    network: Network,
    domain: Domain,
    table: WitnessTable,
    candidates: Collection[Neuron],
    config: Config,
    rng: np.random.Generator,
    data: FloatArray | None = None,
    deadline: float | None = None,
    progress: Progress | None = None,
) -> WitnessSearchReport:
    """Show as many candidate neurons as possible in both phases, cheapest evidence first.

    Stages: user `data` rows inside the domain, `config.samples` uniform samples, symbolic
    corners, sign-gradient search (`config.gradient_steps` steps per start). Stops early when
    every candidate is shown in both phases or when `time.monotonic()` passes `deadline`.
    `progress(stage, decided, total)` is called after each stage. All findings go into `table`.
    """
    domain.check_dimension(network.input_size)
    search = _Search(network, domain, table, sorted(set(candidates)), deadline, progress)
    for neuron in search.candidates:
        table.seen(neuron)  # rejects neurons that are not hidden
    inside, skipped = _data_by_box(domain, data, network.input_size)
    search.run_stage("data", lambda: _offer_by_box(table, inside, "data"))
    search.run_stage("random", lambda: _offer_samples(search, config.samples, rng))
    search.run_stage("corner", lambda: _offer_corners(search))
    search.run_stage("gradient", lambda: _gradient_search(search, config.gradient_steps, rng))
    used = sum(len(points) for points in inside.values())
    return WitnessSearchReport(tuple(search.stages), used, skipped)


def _data_by_box(
    domain: Domain, data: FloatArray | None, input_size: int
) -> tuple[dict[int, FloatArray], int]:
    """User data rows grouped by the first box containing them, and how many lie outside all."""
    if data is None:
        return {}, 0
    rows = np.asarray(data, dtype=np.float64)
    rows = rows.reshape(rows.shape[0], -1) if rows.ndim > 1 else rows[None, :]
    if rows.shape[1] != input_size:
        raise DomainError(
            f"data rows have {rows.shape[1]} values but the network expects {input_size}"
        )
    finite = np.all(np.isfinite(rows), axis=1)
    unassigned = finite.copy()
    grouped: dict[int, FloatArray] = {}
    for index, box in enumerate(domain.boxes):
        inside = unassigned & np.all((rows >= box.lower) & (rows <= box.upper), axis=1)
        if inside.any():
            grouped[index] = rows[inside]
        unassigned &= ~inside
    return grouped, int(np.count_nonzero(unassigned) + np.count_nonzero(~finite))


def _offer_by_box(table: WitnessTable, points: dict[int, FloatArray], source: str) -> None:
    for box, rows in points.items():
        table.offer(rows, box, source)


def _offer_samples(search: _Search, samples: int, rng: np.random.Generator) -> None:
    per_box = np.array_split(np.arange(samples), len(search.domain.boxes))
    for index, (box, part) in enumerate(zip(search.domain.boxes, per_box, strict=True)):
        for start in range(0, len(part), _CHUNK):
            if search.finished():
                return
            count = min(_CHUNK, len(part) - start)
            # Clipping keeps rounding in `uniform` from stepping outside the box.
            points = np.clip(box.sample(count, rng), box.lower, box.upper)
            search.table.offer(points, index, "random")


def _corner(box: Box, coefficients: FloatArray, maximize: bool) -> FloatArray:
    """The box corner maximizing (or minimizing) each row's linear function."""
    toward_upper = coefficients > 0 if maximize else coefficients < 0
    return np.where(toward_upper, box.upper, box.lower)


def corner_points(network: Network, box: Box, rows: Sequence[tuple[Neuron, Phase]]) -> FloatArray:
    """Per row, the corner extremizing the neuron's symbolic linear bound in the row's direction.

    For a first-layer neuron the linear bounds are g itself, so the corner is an exact
    maximizer (ACTIVE) or minimizer (INACTIVE) of g over the box.
    """
    _, linear = symbolic_linear_bounds(network, box)
    corners = np.empty((len(rows), box.size))
    for position, (neuron, phase) in enumerate(rows):
        bounds = linear[neuron.layer]
        if phase is Phase.ACTIVE:
            corners[position] = _corner(box, bounds.upper_coefficients[neuron.index], True)
        else:
            corners[position] = _corner(box, bounds.lower_coefficients[neuron.index], False)
    return corners


def _offer_corners(search: _Search) -> None:
    for index, box in enumerate(search.domain.boxes):
        rows = search.open_rows()
        if search.finished() or not rows:
            return
        search.table.offer(corner_points(search.network, box, rows), index, "corner")


def _gradient_search(search: _Search, steps: int, rng: np.random.Generator) -> None:
    """Sign-gradient ascent (ACTIVE) / descent (INACTIVE) on each open (neuron, phase).

    Rows of layer 0 are skipped: their corner is an exact extremum of g over the box, so if it
    did not show the phase nothing in the box does. Starts are the symbolic corner, the box
    center, then uniform random points.
    """
    for start in range(_GRADIENT_STARTS):
        for index, box in enumerate(search.domain.boxes):
            rows = [row for row in search.open_rows() if row[0].layer != 0]
            if search.finished() or not rows:
                return
            if start == 0:
                points = corner_points(search.network, box, rows)
            elif start == 1:
                points = np.tile(box.center(), (len(rows), 1))
            else:
                points = np.clip(box.sample(len(rows), rng), box.lower, box.upper)
            _ascend(search, index, box, rows, points, steps)


def _ascend(
    search: _Search,
    box_index: int,
    box: Box,
    rows: Sequence[tuple[Neuron, Phase]],
    points: FloatArray,
    steps: int,
) -> None:
    """Projected sign-gradient steps on all rows at once; offers points that reach their phase."""
    network, table = search.network, search.table
    layers = np.array([neuron.layer for neuron, _ in rows], dtype=np.int64)
    indices = np.array([neuron.index for neuron, _ in rows], dtype=np.int64)
    directions = np.array([1.0 if phase is Phase.ACTIVE else -1.0 for _, phase in rows])
    open_rows = np.ones(len(rows), dtype=bool)
    width = box.upper - box.lower
    ratio = (_SMALLEST_STEP / _LARGEST_STEP) ** (1.0 / max(steps - 1, 1))
    for step in range(steps + 1):
        if search.out_of_time():
            return
        live = np.flatnonzero(open_rows)
        pre_activations = _forward(network, points[live], int(layers[live].max()))
        objective = directions[live] * _row_values(pre_activations, layers[live], indices[live])
        reached = live[objective > 0.0]
        if reached.size and table.offer(points[reached], box_index, "gradient"):
            for row in live:
                neuron, phase = rows[int(row)]
                if phase in table.seen(neuron):
                    open_rows[row] = False
            if not open_rows.any():
                return
        if step == steps:
            return
        live_mask = open_rows[live]
        live = live[live_mask]
        gradients = _row_gradients(
            network,
            [values[live_mask] for values in pre_activations],
            layers[live],
            indices[live],
            directions[live],
        )
        step_size = _LARGEST_STEP * ratio**step * width
        points[live] = np.clip(points[live] + step_size * np.sign(gradients), box.lower, box.upper)


def _forward(network: Network, points: FloatArray, last_layer: int) -> list[FloatArray]:
    """Float pre-activations of layers 0..last_layer for a batch."""
    values = points
    pre_activations = []
    for layer in network.layers[: last_layer + 1]:
        g = values @ layer.float_weights.T + layer.float_bias
        pre_activations.append(g)
        values = np.maximum(g, 0.0) if layer.relu else g
    return pre_activations


def _row_values(
    pre_activations: Sequence[FloatArray], layers: IntArray, indices: IntArray
) -> FloatArray:
    """g_{layers[r], indices[r]} at row r's point."""
    values = np.empty(len(layers))
    for layer in np.unique(layers):
        rows = np.flatnonzero(layers == layer)
        values[rows] = pre_activations[int(layer)][rows, indices[rows]]
    return values


def _row_gradients(
    network: Network,
    pre_activations: Sequence[FloatArray],
    layers: IntArray,
    indices: IntArray,
    directions: FloatArray,
) -> FloatArray:
    """Gradient of directions[r] * g_{layers[r], indices[r]} w.r.t. row r's input (backprop)."""
    gradients = np.zeros((len(layers), network.input_size))
    for layer in np.unique(layers):
        rows = np.flatnonzero(layers == layer)
        upstream = directions[rows, None] * network.layers[int(layer)].float_weights[indices[rows]]
        for earlier in range(int(layer) - 1, -1, -1):
            if network.layers[earlier].relu:
                upstream = upstream * (pre_activations[earlier][rows] > 0.0)
            upstream = upstream @ network.layers[earlier].float_weights
        gradients[rows] = upstream
    return gradients
