"""The batch mode (`verify-compress batch JOBS`): many networks and domains, one index.

Stage: around the main job. A jobs file (`jobs`) lists the jobs; a backend (`backends`: this
machine's processes, or a Dask cluster) runs them; each job (`execute`) is the main job
(`verifier.pipeline.run`) in a process of its own under a hard time limit, followed by its
deployment figures (`verifier.deployment`) and the kernel check of its certificate
(`verifier.check`); the index (`index`) summarises them in `OUT/index.json` and
`OUT/index.html`; `runner` wires these together.
"""

from ..batch.backends import Backend, BackendKind, DaskBackend, LocalBackend, make_backend
from ..batch.execute import (
    CheckOutcome,
    CheckVerdict,
    JobLimits,
    JobResult,
    JobSettings,
    JobStatus,
    run_job,
)
from ..batch.index import index_document, render_index, write_index
from ..batch.jobs import DomainKind, DomainSource, JobsFileError, JobSpec, load_jobs
from ..batch.runner import run_batch

__all__ = [
    "Backend",
    "BackendKind",
    "CheckOutcome",
    "CheckVerdict",
    "DaskBackend",
    "DomainKind",
    "DomainSource",
    "JobLimits",
    "JobResult",
    "JobSettings",
    "JobSpec",
    "JobStatus",
    "JobsFileError",
    "LocalBackend",
    "index_document",
    "load_jobs",
    "make_backend",
    "render_index",
    "run_batch",
    "run_job",
    "write_index",
]
