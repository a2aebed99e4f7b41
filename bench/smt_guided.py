"""Benchmark (a design experiment): can Z3 re-prove deep bounds fast if the obligation carries
the dual multipliers?

Not part of verify-compress. Today's stability obligations (`verifier/kernel/obligations.py`)
give Z3 the triangle-relaxation LP of a proof box and the negated bound, and Z3's exact
simplex has to find the dual solution itself: seconds per bound from the third layer of
ACAS Xu on. This script compares, on one box and one neuron per layer, that query with a
guided proof of the same bound in two kinds of steps:

1. per earlier layer k, with FRESH variables g_k, h_k bound only by layer k's interval
   [l, u] and its ReLU encoding (the triangle where unstable): the separable fact
   sum_i mu_ki h_ki - nu_ki g_ki >= m_k, where m_k is the exact sum of the per-neuron minima
   (each a one-variable piecewise-linear minimum);
2. the network's rows (g_k = W_k h_(k-1) + b_k), the box, the facts of step 1 and the
   negated bound: unsat by one linear combination (the identity of the kernel's docstring,
   `verifier/kernel/bounds.py`).

Step 1 holds for any values with those local constraints, so in particular at the network's
values; step 2 then gives the bound. The multipliers are float CROWN's (any multipliers are
sound); the bound is computed exactly from them here (Fractions: a bench, not the kernel).

    python bench/smt_guided.py [--network ACAS.onnx] [--vnnlib prop_3.vnnlib] [--neuron 0]
        [--layers 1,2,3,4] [--timeout 60]
"""

from __future__ import annotations

import argparse
import time
from fractions import Fraction
from pathlib import Path

import z3

from verify_compress.domain import Box, parse_vnnlib
from verify_compress.ir import Network
from verify_compress.kernel.bounds import ExactNetwork, LayerBounds, box_bounds
from verify_compress.onnx_import import load_network

ACAS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "acasxu"


def number(value: Fraction | float) -> str:
    q = Fraction(value)
    text = f"(/ {abs(q.numerator)}.0 {q.denominator}.0)"
    return f"(- {text})" if q < 0 else text


class Experiment:
    def __init__(self, network: Network, box: Box) -> None:
        self.box = box
        self.bounds: LayerBounds = box_bounds(ExactNetwork(network), box)
        self.weights = [
            [[Fraction(float(w)) for w in row] for row in layer.weights] for layer in network.layers
        ]
        self.bias = [[Fraction(float(b)) for b in layer.bias] for layer in network.layers]

    def phase(self, k: int, i: int) -> str:
        lower, upper = self.bounds.lower[k][i], self.bounds.upper[k][i]
        return "inactive" if upper <= 0 else "active" if lower >= 0 else "unstable"

    def post(self, k: int, i: int) -> str:
        return {"inactive": "0.0", "active": f"g_{k}_{i}", "unstable": f"h_{k}_{i}"}[
            self.phase(k, i)
        ]

    def relu_facts(self, k: int, i: int) -> list[str]:
        lower, upper = Fraction(self.bounds.lower[k][i]), Fraction(self.bounds.upper[k][i])
        facts = [
            f"(assert (>= g_{k}_{i} {number(lower)}))",
            f"(assert (<= g_{k}_{i} {number(upper)}))",
        ]
        if self.phase(k, i) == "unstable":
            facts += [
                f"(declare-const h_{k}_{i} Real)",
                f"(assert (>= h_{k}_{i} 0.0))",
                f"(assert (>= h_{k}_{i} g_{k}_{i}))",
                f"(assert (<= (* {number(upper - lower)} h_{k}_{i}) "
                f"(* {number(upper)} (- g_{k}_{i} {number(lower)}))))",
            ]
        return facts

    def network_text(self, layer: int, relu: bool) -> str:
        """The box, the rows of layers 0..layer (as definitions), and, if `relu`, every earlier
        neuron's interval and ReLU encoding (today's obligation); else only h declared."""
        lines = ["(set-logic QF_LRA)"]
        for i, (lo, hi) in enumerate(zip(self.box.lower, self.box.upper, strict=True)):
            lines += [
                f"(declare-const x_{i} Real)",
                f"(assert (<= {number(lo)} x_{i}))",
                f"(assert (<= x_{i} {number(hi)}))",
            ]
        previous = [f"x_{i}" for i in range(len(self.box.lower))]
        for k in range(layer + 1):
            for i, row in enumerate(self.weights[k]):
                terms = " ".join(f"(* {number(w)} {p})" for w, p in zip(row, previous, strict=True))
                lines.append(
                    f"(define-fun g_{k}_{i} () Real (+ {terms} {number(self.bias[k][i])}))"
                )
                if k < layer and relu:
                    lines += self.relu_facts(k, i)
                elif k < layer and self.phase(k, i) == "unstable":
                    lines.append(f"(declare-const h_{k}_{i} Real)")
            if k < layer:
                previous = [self.post(k, i) for i in range(len(self.weights[k]))]
        return "\n".join(lines)

    def crown(self, layer: int, index: int, sign: int):
        """Float CROWN multipliers for sign * g_layer[index]: mu_k, nu_k per earlier layer,
        the input coefficients, and the exact lower bound they give."""
        mu = [sign * w for w in self.weights[layer][index]]
        total = sign * self.bias[layer][index]
        steps = []
        for k in range(layer - 1, -1, -1):
            lower, upper = self.bounds.lower[k], self.bounds.upper[k]
            nu = []
            for i, m in enumerate(mu):
                slope = {"inactive": 0.0, "active": 1.0}.get(self.phase(k, i))
                if slope is None:
                    slope = (
                        (1.0 if upper[i] >= -lower[i] else 0.0)
                        if m >= 0
                        else upper[i] / (upper[i] - lower[i])
                    )
                nu.append(Fraction(float(m) * slope))
            least = sum(
                _minimum(m, n, lower[i], upper[i])
                for i, (m, n) in enumerate(zip(mu, nu, strict=True))
            )
            steps.append((k, mu, nu, least))
            total += least + sum(n * b for n, b in zip(nu, self.bias[k], strict=True))
            mu = [
                sum(nu[i] * self.weights[k][i][j] for i in range(len(nu)))
                for j in range(len(self.weights[k][0]))
            ]
        total += sum(
            min(m * Fraction(lo), m * Fraction(hi))
            for m, lo, hi in zip(mu, self.box.lower, self.box.upper, strict=True)
        )
        return steps, total


def _minimum(mu: Fraction, nu: Fraction, lower: float, upper: float) -> Fraction:
    def at(g: Fraction) -> Fraction:
        return mu * max(g, Fraction(0)) - nu * g

    low, high = Fraction(lower), Fraction(upper)
    return min([at(low), at(high)] + ([Fraction(0)] if low < 0 < high else []))


def timed_check(text: str, timeout: float) -> tuple[str, float]:
    solver = z3.Solver()
    solver.set("timeout", int(timeout * 1000))
    solver.from_string(text)
    started = time.perf_counter()
    answer = solver.check()
    return str(answer), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--network", type=Path, default=ACAS / "ACASXU_run2a_1_1_batch_2000.onnx")
    parser.add_argument("--vnnlib", type=Path, default=ACAS / "prop_3.vnnlib")
    parser.add_argument("--neuron", type=int, default=0)
    parser.add_argument("--layers", default="1,2,3,4")
    parser.add_argument("--timeout", type=float, default=60.0)
    arguments = parser.parse_args()
    network = load_network(arguments.network)
    box = parse_vnnlib(arguments.vnnlib, network.input_size).boxes[0]
    experiment = Experiment(network, box)
    print("| layer | bound | today: Z3 | guided: layer facts (count) | guided: last step |")
    print("|---|---|---|---|---|")
    for layer in (int(v) for v in arguments.layers.split(",")):
        for sign, name in ((1, "lower"), (-1, "upper")):
            steps, total = experiment.crown(layer, arguments.neuron, sign)
            goal = f"(assert (< (* {sign}.0 g_{layer}_{arguments.neuron}) {number(total)}))"
            today, today_s = timed_check(
                experiment.network_text(layer, relu=True) + "\n" + goal, arguments.timeout
            )
            facts, facts_s, answers = [], 0.0, set()
            for k, mu, nu, least in steps:
                terms = " ".join(
                    f"(* {number(m)} {experiment.post(k, i)}) (* {number(-n)} g_{k}_{i})"
                    for i, (m, n) in enumerate(zip(mu, nu, strict=True))
                )
                fact = f"(>= (+ {terms}) {number(least)})"
                local = ["(set-logic QF_LRA)"]
                for i in range(len(mu)):
                    local.append(f"(declare-const g_{k}_{i} Real)")
                    local += experiment.relu_facts(k, i)
                answer, seconds = timed_check(
                    "\n".join(local) + f"\n(assert (not {fact}))", arguments.timeout
                )
                answers.add(answer)
                facts_s += seconds
                facts.append(f"(assert {fact})")
            last, last_s = timed_check(
                experiment.network_text(layer, relu=False) + "\n" + "\n".join(facts) + "\n" + goal,
                arguments.timeout,
            )
            value = float(sign * total)
            print(
                f"| {layer} ({name}, neuron {arguments.neuron}) | {value:.6g} | {today} in {today_s:.3f} | "
                f"{'/'.join(sorted(answers))} in {facts_s:.3f} ({len(steps)}) | {last} in {last_s:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
