"""verify-compress: exact compression of ReLU networks by certified neuron stability.

Pipeline, one module per stage (read them in this order):

    onnx_import -> ir             ONNX file to the network IR (affine layers + ReLU), exactly
    domain                        input domain: a union of boxes (CLI, VNN-LIB, bounds file)
    bounds                        interval and symbolic float bounds (hints, never proofs)
    witnesses                     inputs showing neurons active/inactive, checked exactly
    search                        the single CP-SAT stability search (the only CP-SAT import)
    subdomains                    bisection of low-dimensional boxes into proof boxes
    relaxation, lp, certify       LP relaxation rows, GLOP, exact Farkas certificates, splits
    obligations                   lemma obligations, written and Z3-checked in worker processes
    smt                           obligations run by Z3 (the only z3 import) or cvc5
    stability                     the stages above wired into one status per neuron
    compress                      remove / fold / merge certified stable neurons, exactly
    equivalence                   proof that compressed == original on the domain
    certificate, check, report    the JSON certificate, its independent checker, the HTML report
    pipeline                      the main job: every stage, atomic output directory

Shared: `exact` (rational arrays), `status` (Neuron, Phase, Status), `config` (the frozen run
configuration), `errors` (one hierarchy), `files` (atomic writes), `summary` (for `inspect`),
`training` (optional, torch).
"""

__version__ = "0.1.0"
