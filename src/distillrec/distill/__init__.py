"""distill room: knowledge distillation methods and their shared pieces.

Shared: ``losses`` (relaxed Plackett-Luce / ListMLE kernel, soft-label BCE), ``knowledge`` (cached teacher
top-N lists and representations), ``sampling`` (tensor samplers), ``gumbel`` (Gumbel-softmax and annealing),
``experts`` (DE's expert mixture), ``base`` (the ``Distiller`` contract and the method registry).
Methods, one module each: RD, CD, DE, RRD, DE-RRD, IR-RRD, DCD.
"""

from distillrec.distill import cd, dcd, de, derrd, irrrd, rd, rrd  # noqa: F401  (registers the methods)
from distillrec.distill.base import Distiller, MethodConfig, get_method, list_methods, register_method
from distillrec.distill.knowledge import KnowledgeSpec, TeacherKnowledge, load_or_compute_knowledge

__all__ = [
    "Distiller",
    "KnowledgeSpec",
    "MethodConfig",
    "TeacherKnowledge",
    "get_method",
    "list_methods",
    "load_or_compute_knowledge",
    "register_method",
]
from distillrec.distill import ensemble, hetcomp, trajectory  # noqa: F401  (HetComp: registers "hetcomp")
