"""verify-compress: exact compression of ReLU networks by certified neuron stability.

Two sides. The TRUSTED kernel accepts evidence, in exact arithmetic, and imports nothing of the
producer; `check` runs only the kernel and the core. The UNTRUSTED producer finds evidence as
fast as it can; nothing it says is believed until the kernel (or an exact evaluation) says so.

Core (read first):
    onnx_import -> ir             ONNX file to the network IR (affine layers + ReLU), exactly
    domain, subdomains            input domain (union of boxes); bisection trees of proof boxes
    status, config, errors        Neuron/Phase/Status, the frozen run configuration, one
                                  error hierarchy; exact (rational arrays), files (atomic writes)

Kernel (trusted, `verifier/kernel/`):
    kernel.scaled                 exact arithmetic in bulk (integer arrays over a rational scale)
    kernel.bounds                 certified bounds from dual multipliers, computed exactly
    kernel.stability              which claims the evidence proves (bounds, case splits, cover)

Producer (untrusted), in pipeline order:
    bounds, propagation           float bounds, CROWN's multipliers and their optimisation
    witnesses                     inputs showing neurons active/inactive (checked exactly)
    lp, branching                 triangle LP multipliers (GLOP); case splits and bisection
    search                        the single CP-SAT stability search (the only CP-SAT import)
    budget, workers               the one owner of time shares; the one process pool
    stability                     the stages above wired into one status per neuron

After the statuses:
    compress                      remove / fold / merge certified stable neurons, exactly
    equivalence, smt              compressed == original on the domain; Z3 (the only z3
                                  import) or cvc5 on the obligations
    certificate, check, report    the JSON certificate (format 5), its checker, the HTML report
    pipeline                      the main job: every stage, atomic output directory

Also: `summary` (for `inspect`), `training` (optional, torch), `onnx_export`.
"""

__version__ = "0.1.0"
