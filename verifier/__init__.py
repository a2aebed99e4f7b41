"""verify-compress: exact compression of ReLU networks by certified neuron stability.

Pipeline, one module per stage (read them in this order):

    onnx_import  -> ir            ONNX file to the network IR (affine layers + ReLU)
    domain                        input domain: a union of boxes (CLI, VNN-LIB, bounds file)
    bounds                        sound-in-spirit float pre-activation bounds (hints)
    witnesses                     inputs showing neurons active/inactive, checked exactly
    search                        the single CP-SAT stability search (the only CP-SAT import)
    relaxation, lp, certify, smt  exact Farkas proofs of stability, checked by Z3
    compress                      remove / fold certified stable neurons, exactly
    equivalence                   proof that compressed == original on the domain
    certificate, check, report    the JSON certificate, its checker and the HTML report
    pipeline                      wires the stages together for the CLI
"""

__version__ = "0.1.0"
